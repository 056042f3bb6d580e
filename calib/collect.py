"""Calibration sets: denoiser inputs (x_t, t, cond) recorded from the full-precision sampler's own trajectories.

Policies:
- ``uniform`` (Q-Diffusion): every k-th step of each DDIM trajectory, so all noise levels are represented.
- ``normal`` (PTQ4DM): the same number of inputs per trajectory, at timesteps drawn from a normal distribution
  skewed toward the clean end (mean T/4, standard deviation T/6, snapped to the nearest sampler step).
- ``last``: only the final, least noisy step of each trajectory (the naive baseline); as many trajectories as
  needed to give the same number of inputs as the other policies.

A set is stored as safetensors with its recipe and the fingerprint of the model it came from; loading it for
another model or resolution is refused.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from accel.errors import AccelError

POLICIES = ("uniform", "normal", "last")


def model_fingerprint(denoiser) -> str:
    """A short hash of the model's config and full-precision weights."""
    digest = hashlib.sha256(json.dumps(denoiser.config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(denoiser.module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass
class CalibrationSet:
    x: torch.Tensor                 # (M, C, H, W) noisy inputs
    t: torch.Tensor                 # (M,) int64 timesteps
    cond: torch.Tensor | None       # (M, ...) conditioning, or None
    meta: dict                      # recipe: policy, samples, steps, every, seed, model fingerprint, shape

    def __len__(self) -> int:
        return len(self.t)

    def batches(self, batch_size: int):
        for start in range(0, len(self), batch_size):
            end = start + batch_size
            yield self.x[start:end], self.t[start:end], None if self.cond is None else self.cond[start:end]

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"x": self.x.contiguous(), "t": self.t.contiguous()}
        if self.cond is not None:
            tensors["cond"] = self.cond.contiguous()
        partial = path.with_name(f".{path.name}.partial")
        save_file(tensors, str(partial), metadata={"accel_calibration": json.dumps(self.meta)})
        os.replace(partial, path)

    @classmethod
    def load(cls, path: str | Path) -> "CalibrationSet":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = json.loads(handle.metadata()["accel_calibration"])
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        except Exception as error:
            raise AccelError(f"{path} is not an accel calibration set ({str(error).splitlines()[0]})")
        return cls(tensors["x"], tensors["t"], tensors.get("cond"), meta)

    def check_matches(self, denoiser, fingerprint: str) -> None:
        if list(self.meta["sample_shape"]) != list(denoiser.sample_shape):
            raise AccelError(f"calibration set was recorded at sample shape {self.meta['sample_shape']}, the model "
                             f"takes {list(denoiser.sample_shape)}; record a new one")
        if self.meta["model"] != fingerprint:
            raise AccelError(f"calibration set was recorded for another model (fingerprint {self.meta['model']}, "
                             f"this model {fingerprint}); record a new one")


def _kept_steps(policy: str, steps: int, every: int, timesteps: torch.Tensor, count: int,
                generator: np.random.Generator) -> list[np.ndarray]:
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


def collect(denoiser, policy: str = "uniform", samples: int = 64, steps: int = 50, every: int = 5,
            seed: int = 0, fingerprint: str | None = None, progress: bool = True) -> CalibrationSet:
    """Run the full-precision DDIM sampler and keep its inputs by ``policy``."""
    from accel.sampling import SamplerConfig, make_scheduler, sample

    if policy not in POLICIES:
        raise AccelError(f"calibration policy must be one of {', '.join(POLICIES)}, got {policy}")
    config = SamplerConfig("ddim", steps, batch_size=256)
    timesteps = make_scheduler(denoiser, config).timesteps
    trajectories = samples * max(1, steps // every) if policy == "last" else samples
    keep = _kept_steps(policy, steps, every, timesteps, trajectories, np.random.default_rng(seed))
    kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
    offset = {"value": 0}

    def record(step, x, t, cond):
        start = offset["value"]
        # a step drawn twice for one trajectory (normal policy) is kept twice, so every policy gives equal counts
        rows = [i for i in range(len(x)) for _ in range(int((keep[start + i] == step).sum()))]
        if step == steps - 1:
            offset["value"] += len(x)
        if rows:
            index = torch.tensor(rows, device=x.device)
            kept.append((x[index].float().cpu(), t.repeat(len(rows)).long().cpu(),
                         None if cond is None else cond[index].cpu()))

    sample(denoiser, trajectories, seed, config, progress=progress, on_step=record)
    conds = [c for _, _, c in kept]
    meta = {"policy": policy, "samples": samples, "steps": steps, "every": every, "seed": seed,
            "model": fingerprint or model_fingerprint(denoiser), "sample_shape": list(denoiser.sample_shape)}
    return CalibrationSet(torch.cat([x for x, _, _ in kept]), torch.cat([t for _, t, _ in kept]),
                          None if conds[0] is None else torch.cat(conds), meta)


def default_cache_dir() -> Path:
    return Path(os.environ.get("ACCEL_CACHE_DIR", Path.home() / ".cache" / "accel")) / "calib"


def load_or_collect(denoiser, policy: str, samples: int, steps: int, every: int, seed: int,
                    path: str | Path | None = None, progress: bool = True) -> CalibrationSet:
    """Reuse the calibration set at ``path`` (or in the cache) if it exists, else record and store it."""
    fingerprint = model_fingerprint(denoiser)
    if path is None:
        path = default_cache_dir() / f"{fingerprint}-{policy}-n{samples}-s{steps}-k{every}-seed{seed}.safetensors"
    path = Path(path)
    if path.exists():
        calib = CalibrationSet.load(path)
        calib.check_matches(denoiser, fingerprint)
        return calib
    calib = collect(denoiser, policy, samples, steps, every, seed, fingerprint, progress)
    calib.save(path)
    return calib
