"""FlashAttention-2-style forward attention (no mask, no dropout) as a Triton kernel.

    out = softmax(q @ k^T * scale) @ v        q: (B, H, Lq, D), k and v: (B, H, Lk, D)

One program owns BLOCK_M query rows of one (batch, head) and streams K/V in BLOCK_N blocks with the
online softmax (running max and sum, exp2 with log2(e) folded into the scale), so the Lq x Lk scores
never reach memory. Query and key lengths are independent and need not be block multiples (masked
tails), which covers cross-attention (4096 x 77 in SD1.5).

Head dims that are not powers of two are split into a power-of-two part and a small tail part, each
its own tl.dot: 40 = 32 + 16 (8 of them padding), 72 = 64 + 16, 80 = 64 + 16, 160 = 128 + 32.
Padding to the next power of two instead would waste 37-44% of the math at SD1.5's and DiT's head
dims (24/64, 56/128, 48/128, 96/256 padding columns); the split pays at most 8 columns.

Any strides: the (B, L, H, D) projections diffusers produces are read in place, and the output is
written as (B, Lq, H, D) so the caller's reshape to (B, Lq, H*D) is free.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from accel.core.errors import AccelError
from accel.kernels._runtime import check_launchable, interpreted

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16)
MIN_HEAD_DIM, MAX_HEAD_DIM, HEAD_DIM_MULTIPLE = 16, 256, 8
MIN_DOT = 16  # tl.dot needs every dimension >= 16
INTERPRETER_BLOCK = 16  # small blocks keep the CPU interpreter fast and exercise the tails


def head_dim_split(head_dim: int) -> tuple[int, int]:
    """(power-of-two part, padded tail part) that the kernel computes for ``head_dim``; tail 0 when
    exact."""
    main = max(MIN_DOT, 1 << (head_dim.bit_length() - 1))
    tail = head_dim - main
    return main, (max(MIN_DOT, triton.next_power_of_2(tail)) if tail > 0 else 0)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None
) -> torch.Tensor:
    """Triton attention; same result as :func:`attention_reference`. Returns (B, H, Lq, D), a
    transposed view of a contiguous (B, Lq, H, D) tensor."""
    _check(q, k, v)
    batch, heads, len_q, head_dim = q.shape
    len_k = k.shape[2]
    scale = head_dim**-0.5 if scale is None else scale
    out = torch.empty((batch, len_q, heads, head_dim), device=q.device, dtype=q.dtype).transpose(
        1, 2
    )
    main, tail = head_dim_split(head_dim)
    args = (
        q,
        k,
        v,
        out,
        scale * math.log2(math.e),
        len_q,
        len_k,
        heads,
        *q.stride(),
        *k.stride(),
        *v.stride(),
        *out.stride(),
    )
    shape = dict(HEAD_DIM=head_dim, D_MAIN=main, D_TAIL=max(tail, MIN_DOT), HAS_TAIL=tail > 0)
    if interpreted():
        block = INTERPRETER_BLOCK
        grid = (triton.cdiv(len_q, block), batch * heads)
        _attention_kernel[grid](
            *args,
            **shape,
            BLOCK_M=block,
            BLOCK_N=block,
            EVEN_N=len_k % block == 0,
            UPCAST_DOT=q.dtype == torch.bfloat16,
        )
    else:
        grid = lambda meta: (triton.cdiv(len_q, meta["BLOCK_M"]), batch * heads)  # noqa: E731
        _attention_tuned[grid](*args, **shape)
    return out


def _check(q, k, v) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.ndim != 4:
            raise AccelError(
                f"attention kernel: {name} must be (batch, heads, length, head_dim), got shape "
                f"{tuple(t.shape)}"
            )
        if t.dtype not in SUPPORTED_DTYPES:
            raise AccelError(
                f"attention kernel: dtype {t.dtype} is not supported (use float16 or bfloat16)"
            )
        if t.device != q.device or t.dtype != q.dtype:
            raise AccelError("attention kernel: q, k and v must share one device and dtype")
    batch, heads, _, head_dim = q.shape
    if k.shape != v.shape or k.shape[:2] != (batch, heads) or k.shape[3] != head_dim:
        raise AccelError(
            f"attention kernel: k {tuple(k.shape)} and v {tuple(v.shape)} do not match q "
            f"{tuple(q.shape)} (same batch, heads and head_dim; key length may differ)"
        )
    if not (MIN_HEAD_DIM <= head_dim <= MAX_HEAD_DIM and head_dim % HEAD_DIM_MULTIPLE == 0):
        raise AccelError(
            f"attention kernel: head_dim {head_dim} is not supported (a multiple of "
            f"{HEAD_DIM_MULTIPLE} from {MIN_HEAD_DIM} to {MAX_HEAD_DIM})"
        )
    if q.shape[2] == 0 or k.shape[2] == 0:
        raise AccelError("attention kernel: query and key lengths must be positive")
    check_launchable(q, "attention")


@triton.jit
def _mma(a, b, acc, UPCAST: tl.constexpr):
    # Triton 3.9's CPU interpreter multiplies bfloat16 tiles as raw integers; fp32 is exact there
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc)


# fmt: off
@triton.jit
def _attention_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, qk_scale, LQ, LK, H,
    sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd, sob, soh, som, sod,  # strides
    HEAD_DIM: tl.constexpr, D_MAIN: tl.constexpr, D_TAIL: tl.constexpr, HAS_TAIL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, EVEN_N: tl.constexpr,
    UPCAST_DOT: tl.constexpr = False,
):
    # fmt: on
    block_m, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    q_ptr += b * sqb + h * sqh
    k_ptr += b * skb + h * skh
    v_ptr += b * svb + h * svh
    o_ptr += b * sob + h * soh
    rows = block_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < LQ
    d_main = tl.arange(0, D_MAIN)
    d_tail = D_MAIN + tl.arange(0, D_TAIL)
    tail_ok = d_tail < HEAD_DIM
    q_main = tl.load(
        q_ptr + rows[:, None] * sqm + d_main[None, :] * sqd, mask=row_ok[:, None], other=0.0
    )
    q_tail = q_main  # a stand-in, never read, where the head dim has no tail
    if HAS_TAIL:
        q_tail = tl.load(
            q_ptr + rows[:, None] * sqm + d_tail[None, :] * sqd,
            mask=row_ok[:, None] & tail_ok[None, :],
            other=0.0,
        )
    row_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
    row_sum = tl.zeros([BLOCK_M], tl.float32)
    acc_main = tl.zeros([BLOCK_M, D_MAIN], tl.float32)
    acc_tail = tl.zeros([BLOCK_M, D_TAIL], tl.float32)
    for start_n in range(0, LK, BLOCK_N):
        row_max, row_sum, acc_main, acc_tail = _attend_block(
            q_main, q_tail, k_ptr, v_ptr, start_n, LK, skn, skd, svn, svd, qk_scale, d_main, d_tail,
            tail_ok, row_max, row_sum, acc_main, acc_tail, HAS_TAIL, BLOCK_M, BLOCK_N, EVEN_N,
            UPCAST_DOT,
        )
    inv_sum = 1.0 / row_sum
    out_ty = o_ptr.dtype.element_ty
    tl.store(
        o_ptr + rows[:, None] * som + d_main[None, :] * sod,
        (acc_main * inv_sum[:, None]).to(out_ty),
        mask=row_ok[:, None],
    )
    if HAS_TAIL:
        tl.store(
            o_ptr + rows[:, None] * som + d_tail[None, :] * sod,
            (acc_tail * inv_sum[:, None]).to(out_ty),
            mask=row_ok[:, None] & tail_ok[None, :],
        )


# fmt: off
@triton.jit
def _attend_block(
    q_main, q_tail, k_ptr, v_ptr, start_n, LK, skn, skd, svn, svd, qk_scale,
    d_main, d_tail, tail_ok,
    row_max, row_sum, acc_main, acc_tail,  # the running softmax statistics and outputs
    HAS_TAIL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, EVEN_N: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
):
    # fmt: on
    """One block of keys and values folded into the running softmax and outputs."""
    cols = start_n + tl.arange(0, BLOCK_N)
    col_ok = cols < LK
    k_main = tl.load(
        k_ptr + cols[None, :] * skn + d_main[:, None] * skd, mask=col_ok[None, :], other=0.0
    )
    scores = _mma(q_main, k_main, tl.zeros([BLOCK_M, BLOCK_N], tl.float32), UPCAST_DOT)
    if HAS_TAIL:
        k_tail = tl.load(
            k_ptr + cols[None, :] * skn + d_tail[:, None] * skd,
            mask=col_ok[None, :] & tail_ok[:, None],
            other=0.0,
        )
        scores = _mma(q_tail, k_tail, scores, UPCAST_DOT)
    scores *= qk_scale
    if not EVEN_N:
        scores = tl.where(col_ok[None, :], scores, float("-inf"))
    # Online softmax (FlashAttention-2): rescale what was accumulated by exp2(old max - new max).
    new_max = tl.maximum(row_max, tl.max(scores, 1))
    p = tl.math.exp2(scores - new_max[:, None])
    correction = tl.math.exp2(row_max - new_max)
    row_sum = row_sum * correction + tl.sum(p, 1)
    p = p.to(v_ptr.dtype.element_ty)
    v_main = tl.load(
        v_ptr + cols[:, None] * svn + d_main[None, :] * svd, mask=col_ok[:, None], other=0.0
    )
    acc_main = _mma(p, v_main, acc_main * correction[:, None], UPCAST_DOT)
    if HAS_TAIL:
        v_tail = tl.load(
            v_ptr + cols[:, None] * svn + d_tail[None, :] * svd,
            mask=col_ok[:, None] & tail_ok[None, :],
            other=0.0,
        )
        acc_tail = _mma(p, v_tail, acc_tail * correction[:, None], UPCAST_DOT)
    return new_max, row_sum, acc_main, acc_tail


def _fits_registers(configs, named_args, **kwargs):
    """Drop block shapes whose fp32 accumulators would spill at large head dims."""
    head_dim = kwargs.get("HEAD_DIM", named_args.get("HEAD_DIM", 64))
    kept = [
        c
        for c in configs
        if head_dim <= 128
        or c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= 64 * 64
        or c.num_warps == 8
    ]
    return kept or configs


_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
    for bm, bn, w, s in [
        (128, 64, 4, 3),
        (128, 64, 8, 3),
        (128, 32, 4, 3),
        (64, 64, 4, 3),
        (64, 32, 4, 4),
        (128, 128, 8, 2),
        (64, 64, 4, 2),
    ]
]
_attention_tuned = triton.autotune(
    _CONFIGS, key=["LQ", "LK", "HEAD_DIM"], prune_configs_by={"early_config_prune": _fits_registers}
)(triton.heuristics({"EVEN_N": lambda args: args["LK"] % args["BLOCK_N"] == 0})(_attention_kernel))
