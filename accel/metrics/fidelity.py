"""Fidelity without trained weights: how far a transformed network's output is from the original's
on the same inputs.

FID says nothing about a randomly initialised network, but the transformed network's error against
its original still says whether a stage changed the function as it should (W8A8 a little, pruning
more, a stage that did nothing not at all). The inputs are the original's own: the x_t, t and
conditioning of calls along one of its sampled trajectories, at evenly spaced steps, so the error is
measured where the sampler takes the network. For a stage that acts across steps (feature caching)
a single call says nothing; ``sample_fidelity`` compares the final samples from the same noise.

SQNR (dB) = 10 log10(|reference|^2 / |reference - output|^2); relative error = |ref - out| / |ref|.
"""

from __future__ import annotations

import math

import torch

from accel.core.denoiser import Denoiser
from accel.core.hooks import StepCall, StepHook
from accel.core.sampling_spec import SamplingSpec
from accel.sampling import sample

RECORDER = "fidelity-recorder"


def error_of(reference: torch.Tensor, output: torch.Tensor) -> dict:
    """Relative error and SQNR of ``output`` against ``reference``."""
    reference, output = reference.double(), output.double()
    noise = (reference - output).pow(2).sum().item()
    signal = reference.pow(2).sum().item()
    return {
        "relative_error": math.sqrt(noise / signal) if signal else math.inf,
        "sqnr_db": 10 * math.log10(signal / noise) if noise else math.inf,
    }


class _Calls(StepHook):
    def __init__(self):
        self.calls: list[StepCall] = []

    def pre_forward(self, call: StepCall) -> StepCall:
        self.calls.append(
            StepCall(
                call.x_t.detach().cpu(),
                call.t.detach().cpu(),
                None if call.cond is None else call.cond.detach().cpu(),
                call.step,
                None if call.guidance is None else call.guidance.detach().cpu(),
            )
        )
        return call


def trajectory_calls(
    original: Denoiser, points: int = 4, seed: int = 0, spec: SamplingSpec | None = None
) -> list[StepCall]:
    """The inputs of ``points`` calls, evenly spaced from first to last, of one trajectory the
    original samples from ``seed`` with ``spec`` (default: its own sampler)."""
    recorder = _Calls()
    original.add_hook(RECORDER, recorder)
    try:
        sample(original, 1, seed, spec, batch_size=1, progress=False)
    finally:
        original.remove_hook(RECORDER)
    calls = recorder.calls
    chosen = sorted({round(i * (len(calls) - 1) / max(points - 1, 1)) for i in range(points)})
    return [calls[i] for i in chosen]


@torch.inference_mode()
def output_fidelity(original: Denoiser, transformed: Denoiser, calls: list[StepCall]) -> dict:
    """The transformed network's output error against the original's on each call's inputs, and
    over all of them (no step hooks: the network itself)."""
    per_call, references, outputs = [], [], []
    for call in calls:
        reference = _eps(original, call)
        output = _eps(transformed, call)
        references.append(reference)
        outputs.append(output)
        per_call.append({"t": int(call.t[0]), **error_of(reference, output)})
    return {"calls": per_call, **error_of(torch.cat(references), torch.cat(outputs))}


def _eps(model: Denoiser, call: StepCall) -> torch.Tensor:
    x, t = call.x_t.to(model.device, model.dtype), call.t.to(model.device)
    guidance = None if call.guidance is None else call.guidance.to(model.device)
    return model.eps_of(model.module, x, t, model.to_model(call.cond), guidance).float().cpu()


def sample_fidelity(
    original: Denoiser,
    transformed: Denoiser,
    count: int = 1,
    seed: int = 0,
    spec: SamplingSpec | None = None,
) -> dict:
    """The error of the transformed model's final samples against the original's, both drawn from
    the same noise and conditioning with ``spec`` (default: each model's own sampler), hooks on."""
    reference = sample(original, count, seed, spec, batch_size=count, progress=False).images
    output = sample(transformed, count, seed, spec, batch_size=count, progress=False).images
    return error_of(reference, output)
