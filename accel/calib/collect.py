"""Calibration sets: denoiser inputs (x_t, t, cond) recorded from the model's own sampler
trajectories (``accel.calibrate(model, CalibConfig(...))``). The sampler is the model's spec, so a
4-step student is calibrated on its own 4 steps.

Policies:
- ``uniform`` (Q-Diffusion): every k-th step of each trajectory, so all noise levels are
  represented.
- ``normal`` (PTQ4DM): the same number of inputs per trajectory, at timesteps drawn from a normal
  distribution skewed toward the clean end (mean T/4, standard deviation T/6, snapped to the nearest
  sampler step).
- ``last``: only the final, least noisy step of each trajectory (the naive baseline); as many
  trajectories as needed to give the same number of inputs as the other policies.

A set is stored as safetensors with its recipe and the fingerprint of the model it came from;
loading it for another model, resolution, sampler or recipe is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from accel.core.config import Config, one_of
from accel.core.errors import AccelError, one_line
from accel.core.files import atomic_file, parse_json_object
from accel.core.hooks import StepCall, StepHook, Trajectory
from accel.core.weights import conditioning_state

POLICIES = ("uniform", "normal", "last")
METADATA_KEY = "accel_calibration"
RECORDING_BATCH = 256
HOOK_NAME = "calibration"


@dataclass(frozen=True)
class CalibConfig(Config):
    policy: str = one_of("uniform", POLICIES)
    samples: int = 64  # sampler trajectories
    # keep every k-th sampler step (uniform policy); the others keep as many per trajectory
    every: int = 5
    seed: int = 0

    def validate(self) -> None:
        for name in ("samples", "every"):
            if getattr(self, name) < 1:
                raise self.invalid(name, f"must be at least 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class CalibFile(Config):
    """Where a calibration set is kept: a file to reuse or create (None: a cache under
    ~/.cache/accel)."""

    path: str | None = None


def model_fingerprint(denoiser) -> str:
    """A short hash of the model's config and weights, and the text states it samples with."""
    digest = hashlib.sha256(json.dumps(denoiser.config, sort_keys=True, default=str).encode())
    tensors = {**denoiser.module.state_dict(), **conditioning_state(denoiser)}
    for name, tensor in sorted(tensors.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass
class CalibrationSet:
    x: torch.Tensor  # (M, C, H, W) noisy inputs
    t: torch.Tensor  # (M,) int64 timesteps
    cond: torch.Tensor | None  # (M, ...) conditioning, or None
    meta: dict  # recipe (CalibConfig), sampler, model fingerprint, sample shape

    def __len__(self) -> int:
        return len(self.t)

    def batches(self, batch_size: int):
        for start in range(0, len(self), batch_size):
            end = start + batch_size
            yield (
                self.x[start:end],
                self.t[start:end],
                None if self.cond is None else self.cond[start:end],
            )

    @torch.no_grad()
    def run_through(self, denoiser, desc: str, batch_size: int = 64, progress: bool = True) -> None:
        """Call ``denoiser`` on every input, batch by batch (for the hooks and observers that
        collect what it computes)."""
        from tqdm.auto import tqdm

        for x, t, cond in tqdm(list(self.batches(batch_size)), desc=desc, disable=not progress):
            x, t = x.to(denoiser.device, denoiser.dtype), t.to(denoiser.device)
            denoiser(x, t, denoiser.to_model(cond))

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"x": self.x.contiguous(), "t": self.t.contiguous()}
        if self.cond is not None:
            tensors["cond"] = self.cond.contiguous()
        with atomic_file(path) as partial:
            save_file(tensors, str(partial), metadata={METADATA_KEY: json.dumps(self.meta)})

    @classmethod
    def load(cls, path: str | Path) -> CalibrationSet:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = (handle.metadata() or {}).get(METADATA_KEY)
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (safetensors' handle is no dict)
        # safetensors raises its own types for files that are not safetensors
        except Exception as error:
            raise AccelError(f"{path} is not an accel calibration set ({one_line(error)})")
        if metadata is None:
            raise AccelError(
                f"{path} is not an accel calibration set (no '{METADATA_KEY}' metadata)"
            )
        meta = parse_json_object(metadata, f"the calibration metadata of {path}")
        _check_tensors(tensors, path)
        return cls(tensors["x"], tensors["t"], tensors.get("cond"), meta)

    def check_matches(self, recipe: dict, path: Path) -> None:
        """Refuse a set recorded for another model, shape, sampler or recipe, naming the first
        difference."""
        for key, wanted in recipe.items():
            if self.meta.get(key) != wanted:
                raise AccelError(
                    f"calibration set {path} was recorded with {key} {self.meta.get(key)!r}; "
                    f"this run needs {wanted!r} (record a new one: another `calib` path)"
                )


def _check_tensors(tensors: dict, path) -> None:
    x, t = tensors.get("x"), tensors.get("t")
    if x is None or t is None:
        raise AccelError(
            f"{path} lacks the '{'x' if x is None else 't'}' tensor of a calibration set"
        )
    if (
        x.ndim != 4
        or t.ndim != 1
        or len(x) != len(t)
        or ("cond" in tensors and len(tensors["cond"]) != len(t))
    ):
        raise AccelError(
            f"{path}: calibration tensors have inconsistent shapes (x {tuple(x.shape)}, "
            f"t {tuple(t.shape)})"
        )


def _kept_steps(
    policy: str,
    steps: int,
    every: int,
    timesteps: torch.Tensor,
    count: int,
    generator: np.random.Generator,
) -> list[np.ndarray]:
    """For each trajectory, the sampler step indices whose inputs are kept."""
    per_trajectory = max(1, steps // every)
    if policy == "uniform":
        return [np.arange(0, steps, every)[:per_trajectory]] * count
    if policy == "last":
        return [np.array([steps - 1])] * count
    total = float(timesteps.max()) + 1
    drawn = generator.normal(total / 4, total / 6, size=(count, per_trajectory)).clip(0, total - 1)
    nearest = np.abs(timesteps.numpy()[None, None, :] - drawn[..., None]).argmin(-1)
    return list(nearest)


class _Recorder(StepHook):
    """Keeps the inputs of the calls whose step is listed for their trajectory's image (a step drawn
    twice for one trajectory by the normal policy is kept twice, so every policy gives equal
    counts)."""

    def __init__(self, keep: list[np.ndarray]):
        self.keep, self.first, self.count, self.kept = keep, 0, 0, []

    def reset(self, trajectory: Trajectory) -> None:
        self.first, self.count = trajectory.first_image, trajectory.count

    def pre_forward(self, call: StepCall) -> StepCall:
        # a guided call holds each image twice (conditional half, then unconditional): both are
        # kept, as the network sees both
        rows = [
            i
            for i in range(len(call.x_t))
            for _ in range(int((self.keep[self.first + i % self.count] == call.step).sum()))
        ]
        if rows:
            index = torch.tensor(rows, device=call.x_t.device)
            self.kept.append(
                (
                    call.x_t[index].float().cpu(),
                    call.t[index].long().cpu(),
                    None if call.cond is None else call.cond[index].cpu(),
                )
            )
        return call


def recipe(denoiser, config: CalibConfig, fingerprint: str) -> dict:
    """What a calibration set must have been recorded with to serve ``denoiser`` under
    ``config``."""
    return {
        "sample_shape": list(denoiser.sample_shape),
        "model": fingerprint,
        **config.to_dict(),
        "sampler": denoiser.sampling.to_dict(),
    }


def collect(
    denoiser,
    config: CalibConfig = CalibConfig(),
    fingerprint: str | None = None,
    progress: bool = True,
) -> CalibrationSet:
    """Run the model's own sampler and keep its inputs by ``config.policy``."""
    from accel.sampling import sample

    steps_run = denoiser.sampling.scheduler(denoiser.scheduler_config).timesteps
    steps = len(steps_run)
    trajectories = (
        config.samples * max(1, steps // config.every)
        if config.policy == "last"
        else config.samples
    )
    keep = _kept_steps(
        config.policy,
        steps,
        config.every,
        steps_run,
        trajectories,
        np.random.default_rng(config.seed),
    )
    recorder = _Recorder(keep)
    denoiser.add_hook(HOOK_NAME, recorder)
    try:
        sample(denoiser, trajectories, config.seed, batch_size=RECORDING_BATCH, progress=progress)
    finally:
        denoiser.remove_hook(HOOK_NAME)
    xs, ts, conds = zip(*recorder.kept)
    return CalibrationSet(
        torch.cat(xs),
        torch.cat(ts),
        None if conds[0] is None else torch.cat(conds),
        recipe(denoiser, config, fingerprint or model_fingerprint(denoiser)),
    )


def default_cache_dir() -> Path:
    return Path(os.environ.get("ACCEL_CACHE_DIR", Path.home() / ".cache" / "accel")) / "calib"


def calibrate(
    denoiser,
    config: CalibConfig = CalibConfig(),
    path: str | Path | None = None,
    progress: bool = True,
) -> CalibrationSet:
    """The calibration set for ``denoiser``: reused from ``path`` (default: a cache keyed by the
    model and the recipe) if it was recorded for this model and recipe, else recorded from its
    sampler and stored there."""
    fingerprint = model_fingerprint(denoiser)
    wanted = recipe(denoiser, config, fingerprint)
    if path is None:
        key = hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:12]
        path = (
            default_cache_dir()
            / f"{fingerprint}-{config.policy}-n{config.samples}-{key}.safetensors"
        )
    path = Path(path)
    if path.exists():
        calib = CalibrationSet.load(path)
        calib.check_matches(wanted, path)
        return calib
    calib = collect(denoiser, config, fingerprint, progress)
    calib.save(path)
    return calib
