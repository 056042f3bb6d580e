"""``accel compress``: run a recipe's stages, then measure the original and every stage side by side.

OUT/ holds the chain's final model (an artifact's files, or model.onnx / model.plan), report.json, report.md,
samples.png (original, then each stage, same noise), quality_vs_speed.png, compress.json (the run's state) and
stages/NN-name/ (each stage's model with its own report against its input).
"""
from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from accel.compress.chain import Stage, StageRun, check_order, run_stages
from accel.compress.recipe import Recipe
from accel.compress.stage_table import stage_rows, stages_markdown
from accel.core.errors import AccelError
from accel.core.files import atomic_file, ensure_writable_dir, write_text
from accel.core.processes import current_processes
from accel.evaluate import EvalConfig, Evaluation, evaluate_many
from accel.models.loading import load, model_path
from accel.report import Report, quality_speed_plot, sample_grid, to_json

ARTIFACT_FILES = ("config.json", "scheduler_config.json", "accel.json", "model.safetensors")
PLOT = "quality_vs_speed.png"


@dataclass
class CompressResult:
    report: Report
    final: Path          # the chain's final model inside OUT
    stages: list[StageRun]
    is_main: bool        # the process that wrote OUT (the others of an `accelerate launch` print nothing)


def compress(model: str, recipe: Recipe, stages: list[Stage], out: str | Path, eval_config: EvalConfig,
             device=None, resume: bool = False, overwrite: bool = False,
             log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> CompressResult:
    out, processes = Path(out), current_processes()
    log = log if processes.is_main else _quiet
    original = load(model, device)
    check_order(f"recipe '{recipe.name}'", original.transforms, stages)
    resume = resume and out.is_dir()  # nothing to resume: a fresh run
    processes.on_main(lambda: _prepare(out, resume, overwrite))
    runs = run_stages(model, _local_files(model), recipe, stages, out, resume, eval_config.seed, log, processes)
    log(f"measuring the original and {len(runs)} stage(s) side by side ({eval_config.n} samples each)")
    models = [original] + [load(str(run.output), device) for run in runs]
    evaluations = evaluate_many(models, eval_config, command="compress", model_name=model,
                                transform_config=recipe.to_dict(), processes=processes)
    report = _report(evaluations, runs, recipe)
    final = processes.on_main(lambda: _place_final(runs[-1].output, out))
    processes.on_main(lambda: _write(out, report, evaluations))
    return CompressResult(report, final, runs, processes.is_main)


def _quiet(line: str) -> None:
    """The log of the processes that are not the main one."""


def _prepare(out: Path, resume: bool, overwrite: bool) -> None:
    """A fresh OUT (refusing a non-empty one unless ``overwrite``), or the one ``resume`` continues."""
    if resume:
        return  # checked against the recorded run before anything is written
    ensure_writable_dir(out, overwrite)
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    out.mkdir()


def _local_files(model: str) -> Path | None:
    try:
        return model_path(model)
    except AccelError:
        return None


def _report(evaluations: list[Evaluation], runs: list[StageRun], recipe: Recipe) -> Report:
    """The final stage's report against the original, with the stage table, the plot and the samples picture."""
    report = evaluations[-1].report
    rows = stage_rows([e.report for e in evaluations], runs)
    report.add_section("recipe", recipe.to_dict())
    report.add_section("stages", rows, stages_markdown(rows, PLOT))
    return report


def _place_final(output: Path, out: Path) -> Path:
    """The last stage's model copied to OUT itself: an artifact's files, or the exported file(s)."""
    if output.is_dir():
        for name in ARTIFACT_FILES:
            _copy(output / name, out / name)
        return out
    for companion in output.parent.glob(f"{output.stem}.*"):  # model.onnx and a cached model's model.cached.onnx
        if companion.is_file():
            _copy(companion, out / companion.name)
    return out / output.name


def _copy(source: Path, target: Path) -> None:
    with atomic_file(target) as partial:
        shutil.copyfile(source, partial)


def _write(out: Path, report: Report, evaluations: list[Evaluation]) -> None:
    images = [evaluations[0].images[0]] + [e.images[1] for e in evaluations]
    write_text(out / "report.json", to_json(report.to_dict()))
    write_text(out / "report.md", report.markdown())
    with atomic_file(out / "samples.png") as partial:
        sample_grid(images).save(partial)
    points = [{"label": row["stage"], "x": row["ms_per_image"], "y": row["fid_ratio"] or 1.0}
              for row in report.sections["stages"]]
    with atomic_file(out / PLOT) as partial:
        quality_speed_plot(points, partial, "wall time per image (ms, log scale)",
                           f"accel compress --recipe {report.config['name']}: {report.model}")
