"""The step hook that makes a sampler's trajectory cheap: full steps run the whole network and
refresh the cache, the steps between reuse it. The network is reached through a splitter:
``capturing()`` (a context in which a call runs whole and keeps the cached feature) and
``reusing(feature)`` (a context in which a call runs only the shallow levels); a diffusers UNet gets
one from ``accel.cache.unet``, an exported model's runtime is its own splitter
(``accel.export.runtime``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from accel.cache import unet
from accel.cache.config import CacheConfig
from accel.cache.schedule import full_steps
from accel.core.hooks import Forward, StepCall, StepHook, Trajectory

HOOK_NAME = "cache"


@dataclass
class UNetSplitter:
    network: nn.Module
    branch: int

    def capturing(self):
        return unet.capturing(self.network, self.branch)

    def reusing(self, feature: torch.Tensor):
        return unet.reusing(self.network, self.branch, feature)


class DeepCacheHook(StepHook):
    """Runs step i whole when i is one of the trajectory's full steps (or nothing is cached yet),
    else from the cache. Calls outside a sampler (``step`` None: timing, tracing, a user's own call)
    run whole and leave the cache alone. ``counts`` tallies the full and cached calls it ran (what
    the sampler actually did)."""

    def __init__(self, config: CacheConfig, splitter):
        self.config, self.splitter = config, splitter
        self.full: frozenset[int] = frozenset()
        self.feature: torch.Tensor | None = None
        self.counts = {"full": 0, "cached": 0}

    def reset(self, trajectory: Trajectory) -> None:
        self.full = frozenset(full_steps(len(trajectory.timesteps), self.config))
        self.feature = None

    def new_forward(self, call: StepCall, forward: Forward) -> torch.Tensor:
        if call.step is None:
            return forward(call)
        # a feature of another batch size is another trajectory's (a sampler that did not say it
        # started one)
        if call.step in self.full or self.feature is None or len(self.feature) != len(call.x_t):
            self.counts["full"] += 1
            with self.splitter.capturing() as captured:
                output = forward(call)
            self.feature = captured.feature
            return output
        self.counts["cached"] += 1
        with self.splitter.reusing(self.feature):
            return forward(call)
