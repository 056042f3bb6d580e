"""Step hooks: behaviour attached to a Denoiser that sees every call and every new trajectory.

The pattern is diffusers' ``ModelHook`` (``pre_forward`` / ``post_forward`` around a module's
forward, a ``new_forward`` that may replace it, ``reset_state`` between runs), moved from one module
up to the denoiser step, where the sampler can say which step of which trajectory a call is: feature
caching needs the step index and a reset between trajectories, calibration records inputs by step,
CUDA-graph replay replaces the call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Trajectory:
    """What the sampler is about to run: the timesteps of one trajectory, for images first .. first
    + count."""

    timesteps: tuple[int, ...]
    first_image: int
    count: int


@dataclass(frozen=True)
class StepCall:
    """One denoiser call. ``step`` is its index in the current trajectory, None outside a sampler
    (timing, tracing, a user's own call)."""

    x_t: torch.Tensor
    t: torch.Tensor
    cond: torch.Tensor | None
    step: int | None = None
    # the guidance weight of a guidance-distilled network's call (None for other networks)
    guidance: torch.Tensor | None = None


Forward = Callable[[StepCall], torch.Tensor]


@dataclass
class CapturedFeature:
    """What a splitter's ``capturing()`` yields (see ``StepHook``): the feature of the call made
    within."""

    feature: torch.Tensor | None = None


class StepHook:
    """Override what you need; every method's default leaves the call as it is.

    A hook is configuration plus per-trajectory state. Copying a denoiser copies its hooks; a hook
    whose state cannot or should not be copied (a captured CUDA graph) defines ``__deepcopy__`` to
    start fresh.

    A hook whose steps run the network in two forms (feature caching) exposes them as ``splitter``:
    ``splitter.capturing()`` is a context in which a call runs whole and the yielded
    ``CapturedFeature`` keeps what the other form needs; ``splitter.reusing(feature)`` a context in
    which a call reads it instead of computing it. Exporters write one graph per form.
    """

    splitter = None

    def reset(self, trajectory: Trajectory) -> None:
        """A new trajectory starts: forget per-trajectory state."""

    def pre_forward(self, call: StepCall) -> StepCall:
        return call

    def new_forward(self, call: StepCall, forward: Forward) -> torch.Tensor:
        """Compute the call; ``forward`` is the rest of the chain (the next hook's, then the
        network)."""
        return forward(call)

    def post_forward(self, call: StepCall, output: torch.Tensor) -> torch.Tensor:
        return output
