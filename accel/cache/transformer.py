"""Transformers (DiT and kin): diffusers' own cache hooks where the class has them
(``CacheMixin.enable_cache``), driven by accel's sampler. Pyramid Attention Broadcast (Zhao et al.
2024) is the one of diffusers' hooks that takes an interval: each transformer block's self-attention
output is reused for ``interval - 1`` of every ``interval`` calls while the timestep is inside
diffusers' default range (100, 800), where attention changes least; outside it every call runs
whole. ``schedule`` and ``center`` do not apply (PAB's schedule is its own).

diffusers 0.42.1's ``DiTTransformer2DModel`` and ``Transformer2DModel``, the transformers accel
wraps, do not inherit ``CacheMixin``; the hooks themselves work on their blocks (tested on a DiT
subclass that adds the mixin).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from accel.cache.config import CacheConfig
from accel.core.errors import ConfigError
from accel.core.hooks import Forward, StepCall, StepHook, Trajectory

OUTSIDE_ANY_RANGE = -1


def has_diffusers_cache(network: nn.Module) -> bool:
    return callable(getattr(network, "enable_cache", None)) and callable(
        getattr(network, "cache_context", None)
    )


def check_config(config: CacheConfig) -> None:
    if config.branch != 0:
        raise ConfigError(
            "CacheConfig",
            "branch",
            "chooses a UNet's skip level; diffusers' attention cache on a "
            "transformer reuses every block's attention (leave it at 0)",
        )


class DiffusersCacheHook(StepHook):
    """Enables Pyramid Attention Broadcast on ``network``, starts each trajectory with an empty
    cache, and tells the hook the timestep of the call (``current_timestep_callback``)."""

    def __init__(self, network: nn.Module, config: CacheConfig):
        from diffusers import PyramidAttentionBroadcastConfig

        self.network, self.timestep = network, OUTSIDE_ANY_RANGE
        if getattr(network, "is_cache_enabled", False):
            network.disable_cache()
        network.enable_cache(
            PyramidAttentionBroadcastConfig(
                spatial_attention_block_skip_range=config.interval,
                current_timestep_callback=self._current_timestep,
            )
        )

    def _current_timestep(self) -> int:
        return self.timestep

    def reset(self, trajectory: Trajectory) -> None:
        self.network._reset_stateful_cache()  # what diffusers' pipelines do before each generation

    def new_forward(self, call: StepCall, forward: Forward) -> torch.Tensor:
        # outside a sampler (step None: timing, tracing) the call runs whole: no timestep is inside
        # PAB's range
        self.timestep = OUTSIDE_ANY_RANGE if call.step is None else int(call.t.reshape(-1)[0])
        with self.network.cache_context("cond"):
            return forward(call)
