"""Which channels must go together, how many of them go, and how a network takes a recorded pruned
shape.

Torch-Pruning's dependency graph (DepGraph) traces the denoiser once and gives every coupled set of
channels: a residual stream with the norms, skips and concatenations that read it, a ResNet block's
inner width with its time-embedding projection, the time embedding itself. Each such
``ChannelGroup`` keeps the same fraction of its channels. What to keep is ours (``importance``), and
so are three rules Torch-Pruning 1.6 gets wrong or leaves out for diffusion models:

- widths are rounded to ``round_to`` *after* GroupNorm's constraint, as a multiple of both, and a
  ratio that empties a layer or a GroupNorm group is refused (Torch-Pruning's ``round_to`` counts
  per-GroupNorm-group channels against the whole width and can silently remove a layer);
- attention is pruned by whole heads (``HeadGroup``): head_dim stays as trained (and a multiple of
  8: SDPA and our Triton kernel are fastest there), q/k/v/out stay consistent, and
  ``Attention.heads`` is rewritten. The graph does not couple q with k through the attention
  product, which is what broke Diff-Pruning on torch 2 (VainF/Diff-Pruning#4), so heads are handled
  here rather than through the graph;
- the input and the output layer keep their channels (the image's), and cross-attention keys and
  values keep their text width: both are the model's interface. A transformer's residual width is
  cut by hand (``accel.prune.residual``) where its layout is known (DiT); PixArt's adaLN-single
  tables and projected text states are that width too, so it keeps it and loses heads and
  feed-forward width.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from accel.core.errors import AccelError, ConfigError

PRUNABLE_ROOTS = (nn.Conv2d, nn.Linear)
WEIGHTED = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.GroupNorm, nn.LayerNorm, nn.Embedding)


@dataclass
class Slice:
    """One layer's share of a channel group: its ``dim`` ("out" or "in") channels ``idxs``, which
    are the group's channels ``root_idxs`` (a concatenation maps the group's channels to an offset
    range of the layer's)."""

    module: nn.Module
    dim: str
    idxs: list[int]
    root_idxs: list[int]


@dataclass
class ChannelGroup:
    name: str  # the layer whose output channels define the group
    root: nn.Module
    channels: int
    slices: list[Slice]
    # GroupNorms that normalize these channels
    norms: list[nn.GroupNorm] = field(default_factory=list)
    # num_groups of a GroupNorm over exactly these channels: keep each group's share
    aligned_groups: int = 1
    # found by Torch-Pruning's graph (and cut through it), or listed by hand (accel.prune.residual)
    traced: bool = True


@dataclass
class HeadGroup:
    attention: nn.Module
    heads: int
    head_dim: int
    # q, k, v output rows and the output projection's input columns, in head order
    slices: list[Slice]


def build_graph(denoiser):
    import torch_pruning as tp

    inputs = denoiser.example_inputs(1)
    with warnings.catch_warnings():
        # PixArt's adaLN-single tables are parameters outside any layer; they are its residual
        # width, which accel keeps (``residual_writers``), so Torch-Pruning never cuts them
        warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
        return tp.DependencyGraph().build_dependency(
            denoiser.module, example_inputs=inputs, forward_fn=lambda _, args: denoiser(*args)
        )


def attention_layers(module: nn.Module) -> dict[str, nn.Module]:
    """diffusers ``Attention`` modules with separate q/k/v projections (the ones pruned by head)."""
    return {
        name: m
        for name, m in module.named_modules()
        if all(hasattr(m, a) for a in ("to_q", "to_k", "to_v", "to_out", "heads"))
        and isinstance(m.to_q, nn.Linear)
        and getattr(m, "add_q_proj", None) is None
    }


def output_layers(denoiser) -> list[nn.Module]:
    """The layers that write the model's output: their output channels are the image's."""
    module = denoiser.module
    names = {
        "unet": ("conv_out",),
        "unet-text": ("conv_out",),
        "dit": ("proj_out_2", "proj_out"),
        "dit-text": ("proj_out",),
    }
    found = [
        getattr(module, n)
        for n in names.get(denoiser.kind, ())
        if isinstance(getattr(module, n, None), nn.Module)
    ]
    if not found:
        raise AccelError(
            "pruning supports diffusers UNet2DModel, UNet2DConditionModel, DiT and PixArt "
            f"models; this is a {type(module).__name__}"
        )
    return found[:1]


def residual_writers(denoiser) -> list[nn.Module]:
    """Layers whose output width is a transformer's residual width, which the graph leaves alone:
    DiT's adaLN-Zero chunks the conditioning projection six ways over it and its positional
    embedding is a fixed buffer of that width (accel.prune.residual cuts it by hand)."""
    if denoiser.kind == "dit-text":  # PixArt's text states, projected to the residual width
        return [denoiser.module.pos_embed.proj, denoiser.module.caption_projection.linear_2]
    if denoiser.kind != "dit":
        return []
    return [denoiser.module.pos_embed.proj]


def gated_projections(module: nn.Module) -> list[nn.Module]:
    """GEGLU/SwiGLU input projections (Stable Diffusion's feed-forward): their output is chunked
    into a value and a gate half, which the graph does not pair channel by channel, so their hidden
    width stays (not yet pruned; plain-GELU feed-forwards, as in DiT, are)."""
    return [m.proj for m in module.modules() if type(m).__name__ in ("GEGLU", "SwiGLU")]


def channel_groups(graph, denoiser) -> list[ChannelGroup]:
    """Every prunable coupled channel set, with the slices of the layers that hold weights."""
    module = denoiser.module
    names = {m: n for n, m in module.named_modules()}
    heads = attention_layers(module)
    # q/k/v output rows belong to heads; ignoring them as roots keeps the graph from cutting across
    # heads
    ignored = (
        output_layers(denoiser)
        + residual_writers(denoiser)
        + gated_projections(module)
        + [getattr(a, proj) for a in heads.values() for proj in ("to_q", "to_k", "to_v")]
    )
    groups = []
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=PRUNABLE_ROOTS):
        root = group[0].dep.target.module
        slices = [
            Slice(
                item.dep.target.module,
                "out" if graph.is_out_channel_pruning_fn(item.dep.handler) else "in",
                list(item.idxs),
                list(item.root_idxs),
            )
            for item in group
            if isinstance(item.dep.target.module, WEIGHTED)
        ]
        channels = len(group[0].idxs)
        norms = [s.module for s in slices if isinstance(s.module, nn.GroupNorm)]
        aligned = [n.num_groups for n in norms if n.num_channels == channels]
        groups.append(
            ChannelGroup(names[root], root, channels, slices, norms, max(aligned, default=1))
        )
    return groups


def head_groups(module: nn.Module) -> list[HeadGroup]:
    groups = []
    for attention in attention_layers(module).values():
        width = attention.to_q.out_features
        everything = list(range(width))
        slices = [
            Slice(getattr(attention, proj), "out", everything, everything)
            for proj in ("to_q", "to_k", "to_v")
        ]
        slices.append(Slice(attention.to_out[0], "in", everything, everything))
        groups.append(HeadGroup(attention, attention.heads, width // attention.heads, slices))
    return groups


def kept_channels(group: ChannelGroup, ratio: float, round_to: int) -> int:
    """How many of ``group``'s channels stay: ``(1 - ratio)`` of them, a multiple of every
    GroupNorm's group count and of ``round_to`` (where the group has that many), rounded to the
    nearest such multiple, at least one multiple. A ratio that would leave a layer or a GroupNorm
    group with no channel is refused."""
    wanted = group.channels * (1.0 - ratio)
    norm_step = math.lcm(1, *(n.num_groups for n in group.norms))
    if wanted < norm_step:
        what = (
            f"GroupNorm with {norm_step} groups over {group.channels} channels"
            if norm_step > 1
            else f"{group.channels} channels"
        )
        raise ConfigError(
            "PruneConfig",
            "ratio",
            f"{ratio} would leave a group of {group.name} ({what}) with no "
            f"channel; use a smaller ratio",
        )
    step = math.lcm(norm_step, round_to)
    if group.channels < step or group.channels % step:
        step = norm_step  # too narrow (or not aligned) for round_to: only the norms' constraint
    return min(group.channels, max(step, step * round(wanted / step)))


def channels_to_remove(scores: torch.Tensor, keep: int, aligned_groups: int) -> list[int]:
    """The least important channels, ``len(scores) - keep`` of them. Under a GroupNorm over exactly
    these channels the same positions go from every group (scores averaged over groups), so each
    group keeps its members: the statistics the network was trained with are those of fewer, not
    other, channels."""
    remove = len(scores) - keep
    if remove <= 0:
        return []
    if aligned_groups <= 1:
        return sorted(torch.argsort(scores, stable=True)[:remove].tolist())
    per_group = len(scores) // aligned_groups
    positions = torch.argsort(scores.view(aligned_groups, per_group).mean(0), stable=True)[
        : remove // aligned_groups
    ]
    return sorted((g * per_group + p) for g in range(aligned_groups) for p in positions.tolist())


def prune_channels(graph, group: ChannelGroup, idxs: list[int]) -> None:
    if not idxs:
        return
    handler = graph.get_pruner_of_module(group.root).prune_out_channels
    pruning_group = graph.get_pruning_group(group.root, handler, idxs)
    if not graph.check_pruning_group(pruning_group):
        raise AccelError(f"pruning {len(idxs)} channels of {group.name} would empty a layer")
    pruning_group.prune()


def prune_heads(group: HeadGroup, heads: list[int]) -> None:
    import torch_pruning as tp

    if not heads:
        return
    idxs = [h * group.head_dim + i for h in heads for i in range(group.head_dim)]
    for s in group.slices:
        (tp.prune_linear_out_channels if s.dim == "out" else tp.prune_linear_in_channels)(
            s.module, idxs
        )
    group.attention.heads -= len(heads)


def layer_widths(module: nn.Module) -> dict[str, dict[str, int]]:
    """{name: {"in": ..., "out": ...}} of every layer with weights, and {"heads": ...} of every
    attention."""
    from torch_pruning import ops
    from torch_pruning.pruner.function import PrunerBox

    widths = {}
    for name, m in module.named_modules():
        if isinstance(m, WEIGHTED):
            pruner = PrunerBox[ops.module2type(m)]
            widths[name] = {"in": pruner.get_in_channels(m), "out": pruner.get_out_channels(m)}
    for name, attention in attention_layers(module).items():
        widths[name] = {"heads": attention.heads}
    return widths


def changed_widths(before: dict, after: dict) -> dict[str, dict[str, int]]:
    return {name: width for name, width in after.items() if before.get(name) != width}


def apply_widths(module: nn.Module, widths: dict[str, dict[str, int]]) -> None:
    """Give a freshly built network the recorded widths (trailing channels cut; weights are loaded
    next)."""
    from torch_pruning import ops
    from torch_pruning.pruner.function import PrunerBox

    for name, width in widths.items():
        m = module.get_submodule(name)
        if "heads" in width:
            m.heads = int(width["heads"])
            continue
        pruner = PrunerBox[ops.module2type(m)]
        for dim in ("out", "in"):  # a norm has one width: after "out" its "in" already matches
            current = (pruner.get_out_channels if dim == "out" else pruner.get_in_channels)(m)
            target = int(width[dim])
            if current is not None and target < current:
                cut = pruner.prune_out_channels if dim == "out" else pruner.prune_in_channels
                cut(m, list(range(target, current)))
            elif current != target:
                raise ValueError(
                    f"{name} has {current} {dim} channels; the record asks for {target}"
                )
