"""DeepCache on diffusers UNets (UNet2DModel, UNet2DConditionModel), found from their block
structure.

A diffusers UNet runs conv_in, its down blocks (each adding its skip features to a stack), the mid
block, and its up blocks (each taking as many skip features off the stack as it has resnets), then
conv_out. Up block ``n - 1 - b`` takes the skip features of down block ``b`` (its resnets) and of
the level above (conv_in for ``b = 0``, else down block ``b - 1``'s downsampler). So with branch
``b`` live, a cached step needs nothing deeper than down block ``b``'s resnets: the input of up
block ``n - 1 - b`` (the output of up block ``n - 2 - b``, or of the mid block for the deepest
branch) is read from the cache (DeepCache, Ma et al. 2024, section 3.2).

The network is never changed at rest: a full step runs it as it is and keeps that feature; a cached
step runs its own forward with the deeper modules' forwards replaced, for that call only, by cheap
stand-ins that keep the skip-feature stack the right length (so diffusers' loop is reused, not
rewritten).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

from accel.core.errors import AccelError, ConfigError
from accel.core.hooks import CapturedFeature

UNET_CLASSES = ("UNet2DModel", "UNet2DConditionModel")


def is_cacheable_unet(network: nn.Module) -> bool:
    return type(network).__name__ in UNET_CLASSES


def branch_count(network: nn.Module) -> int:
    return len(network.down_blocks)


def check_branch(network: nn.Module, branch: int) -> None:
    if any(hasattr(block, "skip_conv") for block in [*network.down_blocks, *network.up_blocks]):
        raise AccelError(
            f"{type(network).__name__} with skip-connection blocks (AttnSkipDownBlock2D, "
            "SkipUpBlock2D...) is not supported by the cache yet"
        )
    if len(network.up_blocks) != len(network.down_blocks):
        raise AccelError(
            f"this {type(network).__name__} has {len(network.down_blocks)} down blocks and "
            f"{len(network.up_blocks)} up blocks; DeepCache pairs them one to one"
        )
    if not 0 <= branch < branch_count(network):
        raise ConfigError(
            "CacheConfig",
            "branch",
            f"{branch} does not exist: this {type(network).__name__} has "
            f"{branch_count(network)} skip levels (branches 0-{branch_count(network) - 1}, 0 the "
            "shallowest)",
        )


def _cached_module(network: nn.Module, branch: int) -> nn.Module:
    """The module whose output a cached step reuses: the input of up block n - 1 - branch."""
    deepest_skipped_up = len(network.up_blocks) - 2 - branch
    if deepest_skipped_up < 0:
        if network.mid_block is None:
            raise ConfigError(
                "CacheConfig",
                "branch",
                f"{branch} is the deepest level of a UNet without a mid "
                "block, which skips nothing: choose a lower one",
            )
        return network.mid_block
    return network.up_blocks[deepest_skipped_up]


@contextlib.contextmanager
def capturing(network: nn.Module, branch: int):
    """Within: calls of ``network`` run whole, and the yielded ``CapturedFeature`` keeps the feature
    a cached step needs."""
    captured = CapturedFeature()

    def keep(module, inputs, output):
        captured.feature = output[0] if isinstance(output, tuple) else output

    handle = _cached_module(network, branch).register_forward_hook(keep)
    try:
        yield captured
    finally:
        handle.remove()


@contextlib.contextmanager
def reusing(network: nn.Module, branch: int, feature: torch.Tensor):
    """Within: calls of ``network`` run only the blocks of levels 0..branch, and take ``feature``
    for the rest."""
    stand_ins = dict(_stand_ins(network, branch, feature))
    for module, forward in stand_ins.items():
        # an instance attribute shadows the class's forward for this call only
        module.forward = forward
    try:
        yield
    finally:
        for module in stand_ins:
            del module.forward


def _stand_ins(network: nn.Module, branch: int, feature: torch.Tensor):
    """(module, forward) pairs that skip the levels deeper than ``branch`` at no cost."""
    level = network.down_blocks[branch]
    for downsampler in getattr(level, "downsamplers", None) or []:
        yield downsampler, _passthrough  # its output feeds only deeper levels
    for block in network.down_blocks[branch + 1 :]:
        yield (
            block,
            _skipped_down_block(
                len(block.resnets) + len(getattr(block, "downsamplers", None) or [])
            ),
        )
    skipped_up = network.up_blocks[: len(network.up_blocks) - 1 - branch]
    if network.mid_block is not None:  # the cached feature itself where no up block is skipped
        yield network.mid_block, _returning(feature) if len(skipped_up) == 0 else _passthrough
    for block in skipped_up:
        yield block, _returning(feature)


def _returning(feature: torch.Tensor):
    return lambda *args, **kwargs: feature


def _passthrough(hidden_states=None, *args, **kwargs):
    return hidden_states


def _skipped_down_block(outputs: int):
    """A down block's stand-in: its input, and as many placeholder skip features as the block leaves
    on the stack (the up blocks that would take them are skipped too)."""

    def forward(hidden_states=None, *args, **kwargs):
        return hidden_states, (hidden_states,) * outputs

    return forward
