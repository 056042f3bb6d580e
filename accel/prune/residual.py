"""DiT's residual width, pruned by hand: the channels every block reads and writes.

Torch-Pruning's graph cannot couple them: the stream starts as the patch projection plus a fixed
sin-cos positional buffer (not a parameter it prunes), and adaLN-Zero writes it through one
projection chunked six ways (shift, scale and gate, for attention and for the MLP; the final layer
two ways), which the graph does not pair chunk by chunk. So the slices are listed from the
architecture (diffusers' ``DiTTransformer2DModel`` with ``ada_norm_zero`` blocks, self-attention
only): each kept channel keeps its row in every writer and in each chunk of every modulation, its
column in every reader, its place in the LayerNorms and the positional buffer. Scores come from
``importance`` like any other group's.

A LayerNorm over fewer channels normalizes with other statistics than it was trained with;
fine-tuning recovers them, as for the UNet's GroupNorms.
"""

from __future__ import annotations

import torch.nn as nn

from accel.prune.structure import ChannelGroup, Slice

NAME = "residual"


def _block_layers(block: nn.Module) -> tuple[list, list, list, list]:
    """(writers, readers, modulations, norms) of one ``ada_norm_zero`` block."""
    writers = [block.attn1.to_out[0], block.ff.net[-1]]
    readers = [block.attn1.to_q, block.attn1.to_k, block.attn1.to_v, block.ff.net[0].proj]
    norms = [n for n in (block.norm1.norm, block.norm2, block.norm3) if isinstance(n, nn.LayerNorm)]
    return writers, readers, [(block.norm1.linear, 6)], norms


def supported(module: nn.Module) -> bool:
    """A DiT whose blocks this module knows: adaLN-Zero, self-attention, a plain feed-forward."""
    blocks = getattr(module, "transformer_blocks", None)
    return (
        type(module).__name__ == "DiTTransformer2DModel"
        and blocks is not None
        and all(
            getattr(b, "norm_type", None) == "ada_norm_zero"
            and getattr(b, "attn2", None) is None
            and isinstance(b.ff.net[0].proj, nn.Linear)
            for b in blocks
        )
    )


def _layers(module: nn.Module) -> tuple[list, list, list, list]:
    writers, readers = [module.pos_embed.proj], [module.proj_out_2]
    modulations, norms = [(module.proj_out_1, 2)], [module.norm_out]
    for block in module.transformer_blocks:
        for layers, of_block in zip((writers, readers, modulations, norms), _block_layers(block)):
            layers.extend(of_block)
    return writers, readers, modulations, norms


def residual_group(module: nn.Module) -> ChannelGroup | None:
    """The residual width as one group (None where the architecture is not one this module knows:
    its residual width stays)."""
    if not supported(module):
        return None
    width = module.pos_embed.proj.out_channels
    channels = list(range(width))
    writers, readers, modulations, norms = _layers(module)
    slices = [Slice(m, "out", channels, channels) for m in writers + norms]
    slices += [Slice(m, "in", channels, channels) for m in readers]
    slices += [
        Slice(m, "out", [c * width + i for i in channels], channels)
        for m, chunks in modulations
        for c in range(chunks)
    ]
    return ChannelGroup(NAME, module.pos_embed.proj, width, slices, traced=False)


def prune_residual(module: nn.Module, group: ChannelGroup, idxs: list[int]) -> list[int] | None:
    """Remove the residual channels ``idxs`` from every slice of ``group`` and from the positional
    buffer; returns the kept channels (None when none went), which the record keeps for the
    buffer."""
    import torch_pruning as tp

    if not idxs:
        return None
    removed = set(idxs)
    # a modulation holds several chunks of the group: its cuts go in one call, or the first cut
    # would shift the indices of the chunks after it
    cuts: dict[tuple[nn.Module, str], list[int]] = {}
    for s in group.slices:
        cuts.setdefault((s.module, s.dim), []).extend(
            i for i, root in zip(s.idxs, s.root_idxs) if root in removed
        )
    for (layer, dim), cut in cuts.items():
        pruner = tp.pruner.function.PrunerBox[tp.ops.module2type(layer)]
        (pruner.prune_out_channels if dim == "out" else pruner.prune_in_channels)(layer, cut)
    kept = [i for i in range(group.channels) if i not in removed]
    keep_positions(module, kept)
    return kept


def keep_positions(module: nn.Module, kept: list[int]) -> None:
    """The positional buffer's ``kept`` channels. diffusers does not save the buffer (it is the
    sin-cos table of the configured width), so a pruned artifact records which channels it kept and
    a fresh network takes them here. (At another resolution diffusers computes a new table of the
    pruned width, whose frequencies are not the kept channels': a pruned DiT samples at its native
    size.)"""
    patch = module.pos_embed
    patch.pos_embed = patch.pos_embed[..., kept].contiguous()
