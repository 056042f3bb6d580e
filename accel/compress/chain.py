"""Run a recipe stage by stage: each stage's model under ``OUT/stages/NN-name``, resumable.

A stage's key is a hash of its input (the original model's weights for the first stage, the previous
stage's output for the others), its settings and the seed, so a stage is reused by ``resume`` only
when its recipe and its input are unchanged. ``OUT/compress.json`` records the finished stages (key,
output hash, seconds) and the one in progress; it is rewritten atomically after every change, so
killing a run loses at most the stage in progress, and a training stage resumes from its checkpoints
in ``OUT/stages/NN-name.partial``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from accel.compress.recipe import Recipe, StageSpec
from accel.core import registry
from accel.core.errors import AccelError
from accel.core.files import read_json_object, write_text
from accel.core.processes import SINGLE, Processes, alone
from accel.core.weights import conditioning_state, file_sha256, stored_state

STATE = "compress.json"
# 2: the first stage's input is fingerprinted by the model's weights, not its files
STATE_FORMAT = 2


@dataclass(frozen=True)
class ChainStage:
    """A recipe stage ready to run: ``run(source, output_path, resume)`` makes ``output_path`` from
    ``source`` (the original model, or the previous stage's output path): the stage folder itself
    (an artifact), or ``output_file`` inside it (an exported file). Under several processes only the
    main one runs it, unless it runs ``everywhere``."""

    spec: StageSpec
    run: Callable[[object, Path, bool], None]
    output_file: str | None = None
    # under several processes, run by all of them (a training stage shares its work)
    everywhere: bool = False

    def output(self, folder: Path) -> Path:
        return folder / self.output_file if self.output_file else folder


@dataclass
class StageRun:
    spec: StageSpec
    output: Path
    seconds: float  # wall time of the stage (0 when reused from an earlier run)
    reused: bool


def check_order(recipe_label: str, input_transforms: list[dict], specs: list[StageSpec]) -> None:
    """Refuse an order that cannot work (quantize before prune, distill after quantize) before any
    work."""
    done = list(input_transforms)
    for spec in specs:
        try:
            registry.check_can_follow(done, spec.name)
        except AccelError as error:
            raise AccelError(f"{recipe_label} {spec.label}: {error}")
        done.append({"name": spec.name})


def model_fingerprint(model) -> str:
    """A hash of what the model is: its config, schedule, sampler, transforms and stored weights."""
    described = {
        "config": model.config,
        "schedule": model.scheduler_config,
        "sampling": model.sampling.to_dict(),
        "transforms": model.transforms,
    }
    digest = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode())
    for name, tensor in sorted({**stored_state(model), **conditioning_state(model)}.items()):
        digest.update(
            name.encode() + tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        )
    return digest.hexdigest()


def stage_key(input_hash: str, spec: StageSpec, seed: int) -> str:
    text = json.dumps(
        {"input": input_hash, "stage": spec.name, "settings": spec.settings, "seed": seed},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


class ChainState:
    """``OUT/compress.json``: the model and recipe of the run, the finished stages, the one in
    progress."""

    def __init__(self, out: Path, data: dict):
        self.out, self.data = out, data

    @classmethod
    def start(cls, out: Path, model: str, fingerprint: str, recipe: Recipe) -> ChainState:
        state = cls(
            out,
            {
                "format": STATE_FORMAT,
                "model": model,
                "model_fingerprint": fingerprint,
                "recipe": recipe.to_dict(),
                "done": [],
                "running": None,
            },
        )
        state.save()
        return state

    @classmethod
    def resumed(cls, out: Path, model: str, fingerprint: str, recipe: Recipe) -> ChainState:
        path = out / STATE
        if not path.is_file():
            raise AccelError(
                f"`resume`: {out} is not the output of accel compress (no {STATE}); choose another "
                "`out`"
            )
        data = read_json_object(path)
        if data.get("format") != STATE_FORMAT or not isinstance(data.get("done"), list):
            raise AccelError(
                f"`resume`: {path} is damaged or from another "
                "accel version; start over with `overwrite`"
            )
        if data.get("model_fingerprint") != fingerprint:
            raise AccelError(
                f"`resume`: {out} was made from another model ({data.get('model')!r}, not "
                f"{model!r} as it is now); choose another `out`, or start over with `overwrite`"
            )
        _check_same_first_stage(data.get("recipe", {}).get("stages", []), recipe, out)
        state = cls(out, {**data, "recipe": recipe.to_dict()})
        state.save()
        return state

    def save(self) -> None:
        write_text(self.out / STATE, json.dumps(self.data, indent=2) + "\n")

    def finished(self, index: int, key: str, output: Path) -> float | None:
        """The recorded seconds of stage ``index`` if it finished with this key and its output is
        intact."""
        done = self.data["done"]
        if index >= len(done) or done[index].get("key") != key or not output.exists():
            return None
        return (
            done[index].get("seconds")
            if done[index].get("output_sha256") == output_hash(output)
            else None
        )

    def begin(self, index: int, key: str) -> bool:
        """Forget stage ``index`` and after; True if the stage was already in progress with this key
        (resume it)."""
        was_running = self.data.get("running") == {"index": index, "key": key}
        self.data["done"] = self.data["done"][:index]
        self.data["running"] = {"index": index, "key": key}
        self.save()
        return was_running

    def end(self, key: str, output: Path, seconds: float) -> None:
        self.data["done"].append(
            {"key": key, "output_sha256": output_hash(output), "seconds": round(seconds, 1)}
        )
        self.data["running"] = None
        self.save()


def _check_same_first_stage(recorded: list, recipe: Recipe, out: Path) -> None:
    """``resume`` continues the same recipe (later stages may have changed); a different first stage
    means another recipe made ``out``."""
    first = recipe.stages[0]
    before = recorded[0] if recorded and isinstance(recorded[0], dict) else {}
    if before.get("name") != first.name:
        raise AccelError(
            f"`resume`: {out} was made by another recipe (its stage 1 is "
            f"{before.get('name')!r}, this recipe's is {first.name!r}); "
            "choose another `out`, or start over with `overwrite`"
        )
    settings = {k: v for k, v in before.items() if k != "name"}
    for key in sorted(set(settings) | set(first.settings)):
        if settings.get(key) != first.settings.get(key):
            raise AccelError(
                f"`resume`: {out} was made by another recipe: {first.label} key '{key}' "
                f"was {settings.get(key)!r} there and is {first.settings.get(key)!r} "
                "here; choose another `out`, or start over with `overwrite`"
            )


def output_hash(output: Path) -> str:
    """The stage's model: an exported file, or an artifact's accel.json (which holds its weights'
    SHA-256)."""
    return file_sha256(output / "accel.json" if output.is_dir() else output)


def run_stages(
    model,
    stages: list[ChainStage],
    out: Path,
    *,
    name: str,
    fingerprint: str,
    recipe: Recipe,
    resume: bool,
    seed: int,
    log: Callable[[str], None],
    processes: Processes = SINGLE,
) -> list[StageRun]:
    """Every stage in order, the first on ``model`` (named ``name``, fingerprinted ``fingerprint``),
    reusing those a resumed run finished with the same key. Under several processes the main one
    keeps the state and runs the stages alone, except those that run ``everywhere`` (training)."""
    state = processes.on_main(lambda: _open_state(out, name, fingerprint, recipe, resume))
    runs, source, input_hash = [], model, fingerprint
    for index, stage in enumerate(stages):
        key = stage_key(input_hash, stage.spec, seed)
        folder = out / "stages" / stage.spec.folder
        output = stage.output(folder)
        reused_seconds, in_progress = processes.on_main(
            lambda: _plan(state, index, key, stage, folder, resume)
        )
        if reused_seconds is not None:
            log(f"{stage.spec.label}: unchanged, reusing {output}")
            runs.append(StageRun(stage.spec, output, reused_seconds, reused=True))
        else:
            log(f"{stage.spec.label}: {'resuming' if in_progress else 'running'} -> {output}")
            start = time.perf_counter()
            if stage.everywhere:
                stage.run(source, output, in_progress)
            processes.on_main(
                lambda: None if stage.everywhere else _alone(stage.run, source, output, in_progress)
            )
            seconds = time.perf_counter() - start
            processes.on_main(lambda: _finish(state, key, output, seconds, folder))
            runs.append(StageRun(stage.spec, output, seconds, reused=False))
        # the next stage's input: the output hash the state just verified or recorded (hashing is
        # slow for big models)
        source, input_hash = (
            str(output),
            processes.on_main(lambda: state.data["done"][index]["output_sha256"]),
        )
    return runs


def _open_state(
    out: Path, model: str, fingerprint: str, recipe: Recipe, resume: bool
) -> ChainState:
    state = (ChainState.resumed if resume else ChainState.start)(out, model, fingerprint, recipe)
    (out / "stages").mkdir(exist_ok=True)
    return state


def _plan(
    state: ChainState, index: int, key: str, stage: ChainStage, folder: Path, resume: bool
) -> tuple[float | None, bool]:
    """(seconds, False) for a stage to reuse; (None, in_progress) for one to run, its folder made
    ready: an interrupted stage of the same key keeps its checkpoints (``<folder>.partial``) to
    resume from."""
    seconds = state.finished(index, key, stage.output(folder)) if resume else None
    if seconds is not None:
        return seconds, False
    in_progress = state.begin(index, key)
    checkpoints = _checkpoints(folder)
    if folder.exists():
        shutil.rmtree(folder)
    if not in_progress and checkpoints.exists():
        shutil.rmtree(checkpoints)  # another stage's, or another run's: not ours to continue
    if stage.output_file:
        folder.mkdir(parents=True)
    return None, in_progress


def _finish(state: ChainState, key: str, output: Path, seconds: float, folder: Path) -> None:
    state.end(key, output, seconds)
    # the stage's training checkpoints, now done with
    shutil.rmtree(_checkpoints(folder), ignore_errors=True)


def _checkpoints(folder: Path) -> Path:
    return folder.with_name(folder.name + ".partial")


def _alone(run: Callable[[object, Path, bool], None], *args) -> None:
    with alone():
        run(*args)
