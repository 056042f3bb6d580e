"""Per-step denoiser latency: warm-up, then the median of many timed calls.

Several models are timed interleaved (A, B, A, B, ...) so that a slow moment of the machine hits all
of them alike, and their ratio is measured in one run.
"""

from __future__ import annotations

import statistics
import time

import torch

from accel.core.denoiser import Denoiser


def _time_once(denoiser: Denoiser, inputs) -> float:
    """Milliseconds of one call: CUDA events on a GPU, the host clock elsewhere."""
    x = inputs[0]
    if x.device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        denoiser(*inputs)
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    start_s = time.perf_counter()
    denoiser(*inputs)
    return (time.perf_counter() - start_s) * 1e3


@torch.inference_mode()
def step_latency_ms(
    denoisers: list[Denoiser], batch_size: int = 1, warmup: int = 5, repeats: int = 30
) -> list[float]:
    """Median milliseconds per sampler step at ``batch_size`` images, one figure per model, timed
    interleaved: one denoiser call, on twice the batch for a guided model (its conditional and
    unconditional halves)."""
    inputs = [d.example_inputs(batch_size * d.evaluations_per_step()) for d in denoisers]
    for _ in range(warmup):
        for denoiser, args in zip(denoisers, inputs):
            denoiser(*args)
    times: list[list[float]] = [[] for _ in denoisers]
    for _ in range(repeats):
        for own, denoiser, args in zip(times, denoisers, inputs):
            own.append(_time_once(denoiser, args))
    return [statistics.median(t) for t in times]
