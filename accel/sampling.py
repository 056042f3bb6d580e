"""Seeded, batched DDIM (eta 0) and DDPM sampling through diffusers schedulers."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from tqdm.auto import tqdm

from accel.errors import AccelError
from accel.models.denoiser import Denoiser

SAMPLERS = ("ddim", "ddpm")


@dataclass(frozen=True)
class SamplerConfig:
    name: str = "ddim"
    steps: int = 50
    batch_size: int = 500

    def __post_init__(self):
        if self.name not in SAMPLERS:
            raise AccelError(f"unknown sampler '{self.name}'; choose one of {', '.join(SAMPLERS)}")
        if self.steps < 1:
            raise AccelError(f"--steps must be at least 1, got {self.steps}")
        if self.batch_size < 1:
            raise AccelError(f"--batch-size must be at least 1, got {self.batch_size}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Samples:
    images: torch.Tensor  # float32 (N, C, H, W) in [-1, 1], on the CPU
    seconds: float        # wall time of the whole sampling loop

    @property
    def seconds_per_image(self) -> float:
        return self.seconds / len(self.images)


def make_scheduler(denoiser: Denoiser, config: SamplerConfig):
    from diffusers import DDIMScheduler, DDPMScheduler

    scheduler_class = DDIMScheduler if config.name == "ddim" else DDPMScheduler
    scheduler = scheduler_class.from_config(denoiser.scheduler_config)
    scheduler.set_timesteps(config.steps)
    return scheduler


def initial_noise(denoiser: Denoiser, count: int, seed: int) -> torch.Tensor:
    """x_T for ``count`` samples; image i's noise depends only on (seed, i), not on the batch size."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((count, *denoiser.sample_shape), generator=generator)


@torch.inference_mode()
def sample(denoiser: Denoiser, count: int, seed: int = 0, config: SamplerConfig = SamplerConfig(),
           cond: torch.Tensor | None = None, progress: bool = True,
           on_step: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor | None], None] | None = None) -> Samples:
    """Draw ``count`` samples. The same seed gives the same images on the same machine and settings.

    Without ``cond``, conditional models get ``Denoiser.default_cond`` (seeded). The DDPM sampler's
    per-step noise comes from a generator seeded per batch, so it also depends only on the seed.
    ``on_step(step_index, x_t, t, cond)`` sees every denoiser input (calibration records them).
    """
    if count < 1:
        raise AccelError(f"--n must be at least 1, got {count}")
    device, dtype = denoiser.device, denoiser.dtype
    noise = initial_noise(denoiser, count, seed)
    if cond is None:
        cond = denoiser.default_cond(count, torch.Generator().manual_seed(seed + 1))
    batches = list(range(0, count, config.batch_size))
    out = []
    start = time.perf_counter()
    with tqdm(total=len(batches) * config.steps, desc=f"{config.name} {config.steps} steps", unit="step",
              disable=not progress) as bar:
        for index, first in enumerate(batches):
            last = min(first + config.batch_size, count)
            batch_cond = None if cond is None else denoiser.to_model(cond[first:last])
            step_generator = torch.Generator(device=device).manual_seed(seed * 100_003 + index)
            out.append(_denoise(denoiser, noise[first:last].to(device, dtype), batch_cond, config,
                                step_generator, bar, on_step))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return Samples(torch.cat(out).float().clamp(-1, 1).cpu(), seconds)


def _denoise(denoiser, x, cond, config, generator, bar, on_step) -> torch.Tensor:
    scheduler = make_scheduler(denoiser, config)
    for index, t in enumerate(scheduler.timesteps):
        if on_step is not None:
            on_step(index, x, t, cond)
        eps = denoiser(x, t.to(x.device), cond)
        x = scheduler.step(eps, t, x, generator=generator).prev_sample
        bar.update(1)
    return x
