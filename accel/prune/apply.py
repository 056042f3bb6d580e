"""``prune``: score, cut and fix up a denoiser in place; ``rebuild``: give a fresh network a
recorded pruned shape."""

from __future__ import annotations

import torch

from accel.core.errors import AccelError
from accel.prune.config import PruneConfig
from accel.prune.fixups import fix_attributes
from accel.prune.importance import accumulate_gradients, channel_scores, head_scores
from accel.prune.residual import keep_positions, prune_residual, residual_group
from accel.prune.structure import (
    apply_widths,
    build_graph,
    changed_widths,
    channel_groups,
    channels_to_remove,
    head_groups,
    kept_channels,
    layer_widths,
    prune_channels,
    prune_heads,
)


def check_images(denoiser, images: torch.Tensor | None, config: PruneConfig) -> None:
    if not config.needs_gradients:
        return
    if images is None:
        raise AccelError(
            f"the {config.criterion} criterion needs images (its gradients come from the "
            "noise-prediction loss on them); pass data, or use --criterion magnitude or random"
        )
    if tuple(images.shape[1:]) != tuple(denoiser.sample_shape):
        raise AccelError(
            f"the images are {tuple(images.shape[1:])} and the model takes "
            f"{tuple(denoiser.sample_shape)}: channels, height and width must match"
        )


def heads_to_remove(heads: int, ratio: float) -> int:
    """``ratio`` of the heads, rounded to the nearest whole head; one head always stays."""
    return min(heads - 1, round(heads * ratio))


def prune(denoiser, config: PruneConfig, images: torch.Tensor | None = None) -> dict:
    """Prune ``denoiser`` in place; ``images``: clean samples in [-1, 1] (N, C, H, W) for gradient
    criteria."""
    if denoiser.hooks:
        raise AccelError(f"prune the model before adding step hooks ({', '.join(denoiser.hooks)})")
    check_images(denoiser, images, config)
    module = denoiser.module
    graph = build_graph(denoiser)
    residual = residual_group(module)
    groups = channel_groups(graph, denoiser) + ([residual] if residual else [])
    heads = head_groups(module)
    # a bad ratio fails before gradients
    keep = [kept_channels(g, config.ratio, config.round_to) for g in groups]
    importance = {"criterion": config.criterion}
    if config.needs_gradients:
        was_training = module.training
        module.eval()  # the network as it samples (dropout off)
        with torch.enable_grad():
            importance.update(accumulate_gradients(denoiser, images, config))
        module.train(was_training)
    generator = torch.Generator().manual_seed(config.seed)
    channel_cuts = [
        channels_to_remove(
            channel_scores(g.slices, g.channels, config.criterion, generator), k, g.aligned_groups
        )
        for g, k in zip(groups, keep)
    ]
    head_cuts = [
        sorted(
            torch.argsort(head_scores(h.slices, h.heads, config.criterion, generator), stable=True)[
                : heads_to_remove(h.heads, config.ratio)
            ].tolist()
        )
        for h in heads
    ]
    module.zero_grad(set_to_none=True)
    before = layer_widths(module)
    # the hand-listed residual group comes last: the graph's cuts run on the shapes it traced
    record = {}
    for group, cut in zip(groups, channel_cuts):
        if group.traced:
            prune_channels(graph, group, cut)
        elif (kept := prune_residual(module, group, cut)) is not None:
            record["positional_channels"] = kept
    for group, cut in zip(heads, head_cuts):
        prune_heads(group, cut)
    fix_attributes(module)
    widths = changed_widths(before, layer_widths(module))
    return {"widths": widths, "importance": importance, **record}


def rebuild(denoiser, record: dict) -> None:
    apply_widths(denoiser.module, record["widths"])
    if "positional_channels" in record:
        keep_positions(denoiser.module, record["positional_channels"])
    fix_attributes(denoiser.module)
