"""Seeded, batched sampling with a model's own sampler (``Denoiser.sampling``) through diffusers
schedulers.

Image i's initial noise depends only on (seed, i); a stochastic sampler's per-step noise comes from
a generator seeded per batch. Before each batch's trajectory the denoiser's step hooks are reset,
and every call carries its step index.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from accel.core.denoiser import Denoiser
from accel.core.errors import ConfigError
from accel.core.hooks import Trajectory
from accel.core.sampling_spec import SamplingSpec

DEFAULT_BATCH = 500


@dataclass
class Samples:
    images: torch.Tensor  # float32 (N, C, H, W) in [-1, 1], on the CPU
    seconds: float  # wall time of the sampling loop
    # network evaluations in one trajectory: a guided step evaluates the conditional and the
    # unconditional model (one batched call)
    calls_per_image: int
    labels: torch.Tensor | None = None  # the class each image was drawn with (class models)

    @property
    def seconds_per_image(self) -> float:
        return self.seconds / len(self.images)


def initial_noise(denoiser: Denoiser, count: int, seed: int) -> torch.Tensor:
    """x_T for ``count`` samples; image i's noise depends only on (seed, i), not on the batch
    size."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((count, *denoiser.sample_shape), generator=generator)


def sample(
    denoiser: Denoiser,
    count: int,
    seed: int = 0,
    spec: SamplingSpec | None = None,
    batch_size: int = DEFAULT_BATCH,
    cond: torch.Tensor | None = None,
    progress: bool = True,
) -> Samples:
    """Draw ``count`` samples with ``spec`` (default: the model's own sampler). The same seed gives
    the same images on the same machine and settings. Without ``cond``, class-conditional models
    get the labels ``spec`` draws (``Denoiser.class_labels``), other conditional models
    ``Denoiser.default_cond`` (seeded)."""
    return join(list(sample_batches(denoiser, count, seed, spec, batch_size, cond, progress)))


def join(batches: list[Samples]) -> Samples:
    return Samples(
        torch.cat([b.images for b in batches]),
        sum(b.seconds for b in batches),
        batches[0].calls_per_image,
        None if batches[0].labels is None else torch.cat([b.labels for b in batches]),
    )


@torch.inference_mode()
def sample_batches(
    denoiser: Denoiser,
    count: int,
    seed: int = 0,
    spec: SamplingSpec | None = None,
    batch_size: int = DEFAULT_BATCH,
    cond: torch.Tensor | None = None,
    progress: bool = True,
    batches: slice = slice(None),
) -> Iterator[Samples]:
    """``sample`` one batch at a time, each with its own wall time (evaluations interleave two
    models' batches). ``batches`` picks which to draw (default all); each keeps its index, noise and
    generator, so ``slice(rank, None, count)`` is exactly one process's share of the batches of a
    single-process run."""
    if count < 1:
        raise ConfigError("sample", "count", f"must be at least 1, got {count}")
    if batch_size < 1:
        raise ConfigError("sample", "batch_size", f"must be at least 1, got {batch_size}")
    spec = spec or denoiser.sampling
    denoiser.check_sampling(spec)
    device, dtype = denoiser.device, denoiser.dtype
    noise = initial_noise(denoiser, count, seed)
    if cond is None and denoiser.cond_kind == "class":
        cond = denoiser.class_labels(count, spec)
    elif cond is None:
        cond = denoiser.default_cond(count, torch.Generator().manual_seed(seed + 1))
    labels = cond if denoiser.cond_kind == "class" else None
    chosen = list(enumerate(range(0, count, batch_size)))[batches]
    steps = len(spec.scheduler(denoiser.scheduler_config).timesteps)
    with tqdm(
        total=len(chosen) * steps, desc=spec.describe(), unit="step", disable=not progress
    ) as bar:
        for index, first in chosen:
            last = min(first + batch_size, count)
            batch_cond = None if cond is None else denoiser.to_model(cond[first:last])
            step_generator = torch.Generator(device=device).manual_seed(seed * 100_003 + index)
            start = time.perf_counter()
            x = _denoise(
                denoiser,
                spec,
                noise[first:last].to(device, dtype),
                batch_cond,
                step_generator,
                first,
                bar,
            )
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
            yield Samples(
                x.float().clamp(-1, 1).cpu(),
                seconds,
                steps * denoiser.evaluations_per_step(spec),
                None if labels is None else labels[first:last].cpu(),
            )


def _denoise(
    denoiser: Denoiser, spec: SamplingSpec, x: torch.Tensor, cond, generator, first: int, bar
):
    scheduler = spec.scheduler(denoiser.scheduler_config)
    denoiser.start_trajectory(Trajectory(tuple(int(t) for t in scheduler.timesteps), first, len(x)))
    step_kwargs = spec.step_kwargs(scheduler, generator)
    x = x * scheduler.init_noise_sigma
    for index, t in enumerate(scheduler.timesteps):
        model_input = scheduler.scale_model_input(x, t)
        if denoiser.guidance_range:  # a guidance-distilled student: w is its input
            eps = denoiser(model_input, t.to(x.device), cond, step=index, guidance=spec.guidance)
        elif spec.guided:
            eps = guided_eps(denoiser, model_input, t.to(x.device), cond, index, spec.guidance)
        else:
            eps = denoiser(model_input, t.to(x.device), cond, step=index)
        x = scheduler.step(eps, t, x, **step_kwargs).prev_sample
        bar.update(1)
    return x


def guided_eps(
    denoiser: Denoiser, x: torch.Tensor, t: torch.Tensor, cond, step: int | None, scale: float
) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022), as diffusers' pipelines run it: one call on
    the batch doubled, the given conditioning then the unconditional, eps_u + scale (eps_c - eps_u).
    Step hooks see the one call, so a cache keeps both halves together."""
    eps = denoiser(
        torch.cat([x, x]), t, torch.cat([cond, unconditional(denoiser, cond)]), step=step
    )
    conditional, unconditional_eps = eps.chunk(2)
    return unconditional_eps + scale * (conditional - unconditional_eps)


def unconditional(denoiser: Denoiser, cond: torch.Tensor) -> torch.Tensor:
    """The unconditional half of a guided batch: a DiT's null class; a text model's empty prompt's
    states (StableDiffusionPipeline's and PixArtAlphaPipeline's negative prompt "")."""
    if denoiser.cond_kind == "text":
        return denoiser.null_text_states.to(cond).expand_as(cond)
    return torch.full_like(cond, denoiser.null_class)
