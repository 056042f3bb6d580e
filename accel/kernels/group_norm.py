"""GroupNorm forward with optional fused SiLU and a fused add before normalization, as a Triton
kernel.

    y = silu?( GroupNorm(x + residual?) * weight + bias )

``residual`` is either a tensor of x's shape (a residual stream) or one value per (sample, channel),
such as the projected time embedding a diffusers ResnetBlock2D adds right before its second
GroupNorm.

Two launches. The first reduces each group in ``split`` chunks to partial (count, mean, M2)
statistics in fp32, the second merges them (Chan et al.'s parallel variance) and normalizes its
chunk. One program per (sample, group) leaves an H100 under half busy at batch 2 (64 programs for
the 132 SMs of NVIDIA's H100 SXM datasheet), so the launcher splits each group's spatial extent
until there are several programs per SM. The input is read twice; at SD1.5 sizes (5 MB per
activation in fp16) the second read comes from L2.

Strided throughout: NCHW, channels-last, and the (N, C, L) transposed views diffusers' attention
normalizes all run without a copy.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from accel.core.errors import AccelError
from accel.kernels._runtime import check_launchable, sm_count
from accel.kernels.reference import as_broadcast

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
TILE_ELEMENTS = 4096  # elements one program holds per loop step (BLOCK_C x BLOCK_HW)
MAX_CHANNELS_PER_GROUP = TILE_ELEMENTS
PROGRAMS_PER_SM = 4  # memory-bound: several resident programs per SM hide load latency


def group_norm(
    x: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
    *,
    silu: bool = False,
    residual: torch.Tensor | None = None,
    split: int | None = None,
    block_hw: int | None = None,
) -> torch.Tensor:
    """Triton GroupNorm of ``x`` (N, C, *spatial); same result as :func:`group_norm_reference`.

    Tuning (defaults are chosen from the shape and the GPU): ``split`` programs per group,
    ``block_hw`` spatial positions per loop step (a power of two).
    """
    _check(x, num_groups, weight, bias, eps, residual)
    n, c = x.shape[:2]
    cpg = c // num_groups
    x3 = _flat(x)
    hw = x3.shape[2]
    y = torch.empty_like(x)
    y3 = y.view(n, c, hw)  # empty_like keeps x's dense layout, so this view exists
    add3 = _flat(as_broadcast(residual, x)) if residual is not None else x3
    weight = weight if weight is not None else torch.ones(c, device=x.device)
    bias = bias if bias is not None else torch.zeros(c, device=x.device)

    block_c = triton.next_power_of_2(cpg)
    block_hw = block_hw or max(1, min(TILE_ELEMENTS // block_c, triton.next_power_of_2(hw)))
    split = split or _auto_split(n * num_groups, hw, block_hw, sm_count(x.device))
    chunk_hw = triton.cdiv(triton.cdiv(hw, split), block_hw) * block_hw
    split = triton.cdiv(hw, chunk_hw)  # no empty chunks
    partials = torch.empty((3, n * num_groups * split), device=x.device, dtype=torch.float32)
    grid = (n * num_groups, split)
    common = dict(HAS_ADD=residual is not None, BLOCK_C=block_c, BLOCK_HW=block_hw)
    # fmt: off
    _group_stats_kernel[grid](x3, add3, partials, num_groups, cpg, hw, chunk_hw, split,
                              *x3.stride(), *add3.stride(), **common)
    _group_norm_apply_kernel[grid](x3, add3, weight, bias, y3, partials, num_groups, cpg, hw,
                                   chunk_hw, split, eps, *x3.stride(), *add3.stride(), *y3.stride(),
                                   APPLY_SILU=silu, BLOCK_SPLIT=triton.next_power_of_2(split),
                                   **common)
    # fmt: on
    return y


def _auto_split(groups: int, hw: int, block_hw: int, sms: int) -> int:
    wanted = triton.cdiv(PROGRAMS_PER_SM * sms, groups)
    return max(1, min(wanted, triton.cdiv(hw, block_hw)))


def _flat(t: torch.Tensor) -> torch.Tensor:
    """(N, C, *spatial) -> (N, C, HW), a view when the spatial dims can merge (NCHW, channels-last,
    broadcast)."""
    n, c = t.shape[:2]
    try:
        return t.view(n, c, -1)
    except RuntimeError:
        return t.reshape(n, c, -1)


def _check(x, num_groups, weight, bias, eps, residual) -> None:
    if x.dtype not in SUPPORTED_DTYPES:
        raise AccelError(
            f"group_norm kernel: dtype {x.dtype} is not "
            "supported (use float32, float16 or bfloat16)"
        )
    if x.ndim < 2 or x.numel() == 0:
        raise AccelError(
            "group_norm kernel: expected a non-empty (N, C, "
            f"*spatial) tensor, got shape {tuple(x.shape)}"
        )
    c = x.shape[1]
    if num_groups <= 0 or c % num_groups:
        raise AccelError(
            f"group_norm kernel: {c} channels are not divisible into {num_groups} groups"
        )
    if c // num_groups > MAX_CHANNELS_PER_GROUP:
        raise AccelError(
            f"group_norm kernel: {c // num_groups} channels per group; at most "
            f"{MAX_CHANNELS_PER_GROUP} are supported"
        )
    if not eps > 0:
        raise AccelError(f"group_norm kernel: eps must be positive, got {eps}")
    for name, param in (("weight", weight), ("bias", bias)):
        if param is not None and (tuple(param.shape) != (c,) or param.device != x.device):
            raise AccelError(
                f"group_norm kernel: {name} must have shape ({c},) on {x.device}, got "
                f"{tuple(param.shape)} on {param.device}"
            )
    if residual is not None:
        per_channel = residual.ndim == 2 and tuple(residual.shape) == tuple(x.shape[:2])
        broadcastable = residual.ndim == x.ndim and all(
            r in (1, s) for r, s in zip(residual.shape, x.shape)
        )
        if not (per_channel or broadcastable) or residual.device != x.device:
            raise AccelError(
                f"group_norm kernel: residual of shape {tuple(residual.shape)} on "
                f"{residual.device} does not broadcast to x {tuple(x.shape)} on {x.device}"
            )
    check_launchable(x, "group_norm")


@triton.jit
def _load_tile(
    x_ptr, add_ptr, n, c, hw, mask, sxn, sxc, sxhw, san, sac, sahw, HAS_ADD: tl.constexpr
):
    v = tl.load(x_ptr + n * sxn + c[None, :] * sxc + hw[:, None] * sxhw, mask=mask, other=0.0).to(
        tl.float32
    )
    if HAS_ADD:
        v += tl.load(
            add_ptr + n * san + c[None, :] * sac + hw[:, None] * sahw, mask=mask, other=0.0
        ).to(tl.float32)
    return v


# fmt: off
@triton.jit
def _group_stats_kernel(
    x_ptr, add_ptr, partial_ptr, G, CPG, HW, CHUNK_HW, SPLIT,
    sxn, sxc, sxhw, san, sac, sahw,  # strides of x and the residual
    HAS_ADD: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
):
    # fmt: on
    group, part = tl.program_id(0), tl.program_id(1)
    n, g = group // G, group % G
    c_off = tl.arange(0, BLOCK_C)
    c = g * CPG + c_off
    hw_start = part * CHUNK_HW
    hw_end = tl.minimum(hw_start + CHUNK_HW, HW)
    count = tl.zeros([], tl.float32)
    mean = tl.zeros([], tl.float32)
    m2 = tl.zeros([], tl.float32)
    for hw0 in range(hw_start, hw_end, BLOCK_HW):
        hw = hw0 + tl.arange(0, BLOCK_HW)
        mask = (hw < hw_end)[:, None] & (c_off < CPG)[None, :]
        v = _load_tile(x_ptr, add_ptr, n, c, hw, mask, sxn, sxc, sxhw, san, sac, sahw, HAS_ADD)
        tile_count = tl.sum(mask.to(tl.float32))
        tile_mean = tl.sum(v) / tile_count
        centered = tl.where(mask, v - tile_mean, 0.0)
        # Chan et al.: merge (count, mean, M2) of the tile into the running statistics without
        # cancellation.
        total = count + tile_count
        delta = tile_mean - mean
        mean += delta * (tile_count / total)
        m2 += tl.sum(centered * centered) + delta * delta * (count * tile_count / total)
        count = total
    slot = group * SPLIT + part
    stride = tl.num_programs(0) * SPLIT
    tl.store(partial_ptr + slot, count)
    tl.store(partial_ptr + stride + slot, mean)
    tl.store(partial_ptr + 2 * stride + slot, m2)


# fmt: off
@triton.jit
def _group_norm_apply_kernel(
    x_ptr, add_ptr, w_ptr, b_ptr, y_ptr, partial_ptr, G, CPG, HW, CHUNK_HW, SPLIT, eps,
    sxn, sxc, sxhw, san, sac, sahw, syn, syc, syhw,  # strides of x, the residual and y
    HAS_ADD: tl.constexpr, APPLY_SILU: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
    BLOCK_SPLIT: tl.constexpr,
):
    # fmt: on
    group, part = tl.program_id(0), tl.program_id(1)
    n, g = group // G, group % G
    # Merge the group's partial statistics (every program of the group repeats this small
    # reduction).
    s = tl.arange(0, BLOCK_SPLIT)
    s_mask = s < SPLIT
    stride = tl.num_programs(0) * SPLIT
    counts = tl.load(partial_ptr + group * SPLIT + s, mask=s_mask, other=0.0)
    means = tl.load(partial_ptr + stride + group * SPLIT + s, mask=s_mask, other=0.0)
    m2s = tl.load(partial_ptr + 2 * stride + group * SPLIT + s, mask=s_mask, other=0.0)
    total = tl.sum(counts)
    mean = tl.sum(counts * means) / total
    spread = tl.where(s_mask, means - mean, 0.0)
    var = (tl.sum(m2s) + tl.sum(counts * spread * spread)) / total
    rstd = 1.0 / tl.sqrt(var + eps)

    c_off = tl.arange(0, BLOCK_C)
    c_mask = c_off < CPG
    c = g * CPG + c_off
    scale = tl.load(w_ptr + c, mask=c_mask, other=0.0).to(tl.float32) * rstd
    shift = tl.load(b_ptr + c, mask=c_mask, other=0.0).to(tl.float32) - mean * scale
    hw_start = part * CHUNK_HW
    hw_end = tl.minimum(hw_start + CHUNK_HW, HW)
    for hw0 in range(hw_start, hw_end, BLOCK_HW):
        hw = hw0 + tl.arange(0, BLOCK_HW)
        mask = (hw < hw_end)[:, None] & c_mask[None, :]
        v = _load_tile(x_ptr, add_ptr, n, c, hw, mask, sxn, sxc, sxhw, san, sac, sahw, HAS_ADD)
        out = v * scale[None, :] + shift[None, :]
        if APPLY_SILU:
            out = out * tl.sigmoid(out)
        tl.store(
            y_ptr + n * syn + c[None, :] * syc + hw[:, None] * syhw,
            out.to(y_ptr.dtype.element_ty),
            mask=mask,
        )
