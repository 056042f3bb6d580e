"""What is traced: a model's step as one eps graph, or a cached model's two forms of step (the full
step, which also returns the feature its cached steps read, and the cached step from that feature),
with the references the parity gate compares them with."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from accel.export.parity import PARITY_TIMESTEPS


class EpsGraph(nn.Module):
    """What is traced: the denoiser's own eps computation (conditioning routing, learned-variance
    slicing)."""

    def __init__(self, denoiser):
        super().__init__()
        self.denoiser = denoiser

    def forward(self, sample, timestep, cond=None, guidance=None):
        """``guidance``: the per-sample weight of a guidance-distilled student (a graph input)."""
        return self.denoiser.eps_of(self.denoiser.module, sample, timestep, cond, guidance)


class FullStepGraph(EpsGraph):
    """A cached model's full step: eps, and the feature its cached steps read (``FEATURE``)."""

    def forward(self, sample, timestep, cond=None, guidance=None):
        with step_splitter(self.denoiser).capturing() as captured:
            eps = super().forward(sample, timestep, cond, guidance)
        return eps, captured.feature


class CachedStepGraph(EpsGraph):
    """A cached model's cached step: eps from the inputs and the feature of the last full step."""

    def forward(self, sample, timestep, *cond_and_feature):
        *cond, feature = cond_and_feature
        with step_splitter(self.denoiser).reusing(feature):
            return super().forward(sample, timestep, *cond)


CACHED_SUFFIX = ".cached.onnx"


def step_splitter(denoiser):
    """The two forms of step of a model whose hook splits them (feature caching), or None."""
    return next(
        (hook.splitter for hook in denoiser.hooks.values() if hook.splitter is not None), None
    )


def cached_graph_path(out: Path) -> Path:
    """Where the cached-step graph of ``out`` (the full-step graph) goes: beside it, x.onnx ->
    x.cached.onnx."""
    return out.with_name(out.stem + CACHED_SUFFIX)


def from_other_steps(features: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each parity input's cached feature taken from the next timestep's input of the same batch
    size, as a sampler's cached step reads a feature an earlier step wrote (from its own input, the
    cached step would reproduce the full step exactly and test less)."""
    per_batch = len(PARITY_TIMESTEPS)
    return [features[i - i % per_batch + (i + 1) % per_batch] for i in range(len(features))]


def reference_full_step(denoiser, args: tuple) -> tuple[torch.Tensor, torch.Tensor | None]:
    """eps (and a cached model's feature) computed by the model itself, not by the graphs that are
    traced: the parity gate's reference."""
    splitter = step_splitter(denoiser)
    if splitter is None:
        return denoiser.eps_of(denoiser.module, *args), None
    with splitter.capturing() as captured:
        eps = denoiser.eps_of(denoiser.module, *args)
    return eps, captured.feature


def reference_cached_step(denoiser, args: tuple, feature: torch.Tensor) -> torch.Tensor:
    with step_splitter(denoiser).reusing(feature):
        return denoiser.eps_of(denoiser.module, *args)


def cached_step_macs(cached_graph: nn.Module, example: tuple, feature: torch.Tensor) -> int:
    """MACs of one cached step on one sample."""
    from accel.metrics.size import counted_macs

    one = tuple(None if a is None else a[:1] for a in example)
    return counted_macs(lambda: cached_graph(*one, feature[:1]))
