"""``accel.compress``: run a recipe's stages, then measure the original and every stage side by
side.

OUT/ holds the chain's final model (an artifact's files, or model.onnx / model.plan), report.json,
report.md, samples.png (the original, then each stage, same noise, each captioned),
quality_vs_speed.png, compress.json (the run's state) and stages/NN-name/ (each stage's model).
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from accel.artifact import write_model_files
from accel.compress.chain import ChainStage, StageRun, check_order, model_fingerprint, run_stages
from accel.compress.output import chain_report, write_outputs
from accel.compress.recipe import Recipe, StageSpec, as_recipe
from accel.core import stages
from accel.core.denoiser import Denoiser
from accel.core.errors import AccelError, ConfigError
from accel.core.files import atomic_dir, ensure_writable_dir
from accel.core.processes import current_processes
from accel.core.stages import Context, Settings, Stage
from accel.evaluate import EvalConfig, Evaluation, evaluate_many
from accel.models.loading import load
from accel.report import Report
from accel.train.runs import work_dir_for

# set once for the whole chain (accel compress's own settings), or meaningless inside a chain
CHAIN_KEYS = {
    "model",
    "out",
    "device",
    "seed",
    "json",
    "overwrite",
    "resume",
    "n",
    "batch-size",
    "latency-batch",
    "inception-weights",
    "fid-ref",
    "ablation",
    "help",
}


@dataclass
class CompressResult:
    report: Report  # the final stage against the original, with a row per stage (section "stages")
    model: Denoiser  # the chain's final model, loaded (an exported one runs in its runtime)
    final: Path | None  # its file(s) in ``out``: the folder (an artifact) or the exported file
    out: Path | None
    stages: list[StageRun]
    # the process that wrote ``out`` (the others of an `accelerate launch` print nothing)
    is_main: bool


def compress(
    model: str | Path | Denoiser,
    recipe: str | Path | dict | Recipe,
    out: str | Path | None = None,
    *,
    eval_config: EvalConfig = EvalConfig(),
    device=None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> CompressResult:
    """Run ``recipe`` (a built-in recipe's name, the model kind's variant where there is one; a
    .toml / .json file, a dict or a Recipe) on
    ``model`` (a name, a folder, a file, or a loaded model, which stays as it is), then evaluate the
    original and every stage in one run. Every stage's settings and the stages' order are checked
    before any work.

    ``out`` keeps every stage and the report (``resume`` continues a run there); without it the
    stages go to a temporary folder and only the result is kept. Under ``accelerate launch`` every
    process calls it: training stages share their work, the others run on the main process, and the
    evaluation is shared.
    """
    processes = current_processes()
    log = (log or _stderr) if processes.is_main else _quiet
    original = model if isinstance(model, Denoiser) else load(model, device)
    name = original.source if isinstance(model, Denoiser) else str(model)
    recipe = as_recipe(recipe, kind=original.kind)
    chain = plan(recipe, original, eval_config.seed, device, eval_config.batch_size, progress)
    if out is None and processes.count > 1:
        raise AccelError(
            "`out` is needed when several processes run a chain (they share its stages there)"
        )
    with _folder(out) as folder:
        resume = resume and out is not None and folder.is_dir()  # nothing to resume: a fresh run
        processes.on_main(lambda: _prepare(folder, resume, overwrite))
        runs = run_stages(
            original,
            chain,
            folder,
            name=name,
            recipe=recipe,
            resume=resume,
            seed=eval_config.seed,
            log=log,
            processes=processes,
            fingerprint=processes.on_main(lambda: model_fingerprint(original)),
        )
        models, evaluations, references = _measure(
            original, runs, folder, name, recipe, eval_config, device, log
        )
        report = chain_report(evaluations, references, runs, recipe)
        final = out and processes.on_main(lambda: write_outputs(folder, report, evaluations, runs))
    return CompressResult(report, models[-1], final, out and folder, runs, processes.is_main)


def _measure(
    original,
    runs: list[StageRun],
    folder: Path,
    name: str,
    recipe: Recipe,
    eval_config: EvalConfig,
    device,
    log,
) -> tuple[list, list[Evaluation], list[Evaluation]]:
    """The original and every stage's model, sampled side by side in one run, and, where the chain
    ends in another runtime (an exported file), the original exported to it beside them: its
    evaluations come apart (the last list)."""
    log(f"measuring the original and {len(runs)} stage(s) side by side")
    models = [original] + [load(run.output, device) for run in runs]
    references = _original_in_runtime(original, runs[-1].output, folder, device)
    evaluations = evaluate_many(
        models + references,
        eval_config,
        command="compress",
        model_name=name,
        transform_config=recipe.to_dict(),
        processes=current_processes(),
    )
    return models, evaluations[: len(runs)], evaluations[len(runs) :]


def _original_in_runtime(original, final: Path, folder: Path, device) -> list:
    """The original exported as the chain's final file is (fp32), so that its time in that runtime
    sits beside the final model's: OUT/stages/00-original.onnx (or .plan)."""
    if final.is_dir():
        return []
    stage, target = stages.get("export"), folder / "stages" / f"00-original{final.suffix}"
    settings = stage.settings(format="onnx" if final.suffix == ".onnx" else "trt")
    context = Context(out=target, overwrite=True, progress=False)
    # Only the written file crosses to the other processes: an ORT session cannot be pickled.
    current_processes().on_main(lambda: stage.run(copy.deepcopy(original), settings, context).file)
    return [load(target, device)]


def plan(
    recipe: Recipe, original: Denoiser, seed: int, device, batch_size: int, progress: bool
) -> list[ChainStage]:
    """Each stage's settings checked (keys, types, ranges, what must be installed) and the order
    checked, before any stage runs: a mistake in stage 4 must not cost the training of stage 1."""
    chain = []
    for spec in recipe.stages:
        stage = stages.get(spec.name)
        settings = _settings(stage, spec, seed, f"recipe '{recipe.name}' {spec.label}")
        output_file = stage.output_file(settings) if stage.output_file else None
        chain.append(
            ChainStage(
                spec,
                _runner(stage, settings, device, batch_size, progress),
                output_file,
                everywhere=stage.trains(settings),
            )
        )
    check_order(f"recipe '{recipe.name}'", original.transforms, list(recipe.stages))
    return chain


def _settings(stage: Stage, spec: StageSpec, seed: int, where: str) -> Settings:
    chained = sorted(set(spec.settings) & CHAIN_KEYS)
    if chained:
        raise AccelError(
            f"{where}: key '{chained[0]}' is not a stage setting (the chain sets "
            "it for every stage: accel compress's own setting, where it has one)"
        )
    try:
        return stage.settings(spec.settings, seed=seed)
    except ConfigError as error:
        key = stage.key_for(error.owner, error.field)
        raise AccelError(f"{where}: " + (f"key '{key}' {error.problem}" if key else str(error)))
    except AccelError as error:
        raise AccelError(f"{where}: {error}")


def _runner(stage: Stage, settings: Settings, device, batch_size: int, progress: bool):
    """The stage as the chain runs it: on a copy of the original model or on the previous stage's
    output, its checkpoints beside its folder, its model written as an artifact (or its file where
    it writes one)."""

    def run(source, output: Path, resume: bool) -> None:
        model = copy.deepcopy(source) if isinstance(source, Denoiser) else load(source, device)
        folder = output.parent if stage.output_file else output
        context = Context(
            work_dir=work_dir_for(folder),
            resume=resume,
            out=output if stage.output_file else None,
            overwrite=True,
            batch_size=batch_size,
            progress=progress,
        )
        result = stage.run(model, settings, context)
        if stage.output_file is None and current_processes().is_main:
            with atomic_dir(output, overwrite=True) as staging:
                write_model_files(result.model, staging)

    return run


@contextlib.contextmanager
def _folder(out: str | Path | None) -> Iterator[Path]:
    if out is not None:
        yield Path(out)
        return
    with tempfile.TemporaryDirectory(prefix="accel-compress-") as temporary:
        yield Path(temporary) / "run"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _quiet(line: str) -> None:
    """The log of the processes that are not the main one."""


def _prepare(out: Path, resume: bool, overwrite: bool) -> None:
    """A fresh OUT (refusing a non-empty one unless ``overwrite``), or the one ``resume``
    continues."""
    if resume:
        return  # checked against the recorded run before anything is written
    ensure_writable_dir(out, overwrite)
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    out.mkdir()
