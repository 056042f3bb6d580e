"""Caching for diffusion transformers (DiT and kin: a stack of blocks in ``transformer_blocks``).

Two ways to skip most of the stack on most steps:

- ``interval`` (fixed schedule, as FORA and Delta-DiT): a full step runs every block and keeps the
  residual that blocks ``branch`` .. n-1 add to the token stream; the steps between run the patch
  embedding, the first ``branch`` blocks and the output head (its adaLN conditioning follows the
  current timestep), and add the kept residual in place of the rest. Which steps are full follows
  ``CacheConfig.schedule``, as for DeepCache. It is a splitter (``capturing`` / ``reusing``), so
  the exporter writes its two forms of step as two graphs, as for a UNet.
- ``first-block`` (adaptive, First-Block Cache as diffusers ships it in ``diffusers.hooks``): every
  call runs block 0; when its residual moved by less than ``threshold`` (mean |r_t - r_prev| /
  mean |r_prev|, r_prev that of the last full step) the other blocks are skipped and their last
  residual reused. The decision is made on the data, so it has no fixed graph to export.

Under classifier-free guidance the sampler makes one call on the conditional and unconditional
halves together, so one cache holds both halves and one decision covers both.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

from accel.cache.config import CacheConfig
from accel.core.errors import ConfigError
from accel.core.hooks import CapturedFeature, Forward, StepCall, StepHook, Trajectory

BLOCKS = "transformer_blocks"
OUTSIDE_SAMPLER = "outside-sampler"  # the diffusers cache context of a call no sampler made


def is_cacheable_transformer(network: nn.Module) -> bool:
    return isinstance(getattr(network, BLOCKS, None), nn.ModuleList)


def check_config(network: nn.Module, config: CacheConfig) -> None:
    blocks = len(getattr(network, BLOCKS))
    if not 0 <= config.branch < blocks:
        raise ConfigError(
            "CacheConfig",
            "branch",
            f"{config.branch} blocks cannot stay live on cached steps of a transformer with "
            f"{blocks} blocks: give 0-{blocks - 1} (0: every block is reused)",
        )


class BlockResidualSplitter:
    """The two forms of a transformer step: whole (keeping blocks ``branch``.. n-1's residual), and
    from that residual."""

    def __init__(self, network: nn.Module, branch: int):
        self.network, self.branch = network, branch

    @property
    def blocks(self) -> nn.ModuleList:
        return getattr(self.network, BLOCKS)

    @contextlib.contextmanager
    def capturing(self):
        captured = CapturedFeature()
        entry: list[torch.Tensor] = []

        def keep_entry(module, args, kwargs):
            entry.append(kwargs.get("hidden_states", args[0] if args else None))

        def keep_residual(module, args, output):
            captured.feature = output - entry[-1]

        handles = [
            self.blocks[self.branch].register_forward_pre_hook(keep_entry, with_kwargs=True),
            self.blocks[-1].register_forward_hook(keep_residual),
        ]
        try:
            yield captured
        finally:
            for handle in handles:
                handle.remove()

    @contextlib.contextmanager
    def reusing(self, feature: torch.Tensor):
        skipped = list(self.blocks[self.branch :])

        def add_residual(hidden_states=None, *args, **kwargs):
            return hidden_states + feature

        # an instance attribute shadows the class's forward for this call only
        skipped[0].forward = add_residual
        for block in skipped[1:]:
            block.forward = _passthrough
        try:
            yield
        finally:
            for block in skipped:
                del block.forward


def _passthrough(hidden_states=None, *args, **kwargs):
    return hidden_states


class FirstBlockCacheHook(StepHook):
    """diffusers' First-Block Cache on the network's blocks, driven by accel's sampler: a fresh
    cache per trajectory, one cache context for the guided batch, and calls outside a sampler
    (timing, tracing) run whole. ``counts`` tallies the full and cached calls."""

    def __init__(self, network: nn.Module, config: CacheConfig):
        from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

        self.network, self.config = network, config
        apply_first_block_cache(network, FirstBlockCacheConfig(threshold=config.threshold))
        self.counts = {"full": 0, "cached": 0}

    def _registry(self):
        from diffusers.hooks import HookRegistry

        return HookRegistry.check_if_exists_or_initialize(self.network)

    def _head_state(self):
        from diffusers.hooks import HookRegistry

        head = HookRegistry.check_if_exists_or_initialize(getattr(self.network, BLOCKS)[0])
        return head.get_hook("fbc_leader_block_hook").state_manager.get_state()

    def reset(self, trajectory: Trajectory) -> None:
        self._registry().reset_stateful_hooks()  # what diffusers' pipelines do per generation

    def new_forward(self, call: StepCall, forward: Forward) -> torch.Tensor:
        from diffusers.models.cache_utils import CacheMixin

        if call.step is None:
            self._registry().reset_stateful_hooks()  # nothing cached: the call runs whole
        # DiTTransformer2DModel does not inherit CacheMixin; its context manager only tags the
        # network's hooks with the name of the call
        with CacheMixin.cache_context(
            self.network, OUTSIDE_SAMPLER if call.step is None else "cfg"
        ):
            output = forward(call)
            if call.step is not None:
                self.counts["full" if self._head_state().should_compute else "cached"] += 1
        return output
