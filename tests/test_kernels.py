"""Triton kernels against their PyTorch references: under TRITON_INTERPRET=1 on CPU (small shapes),
on CUDA when present (the same tests plus SD1.5 shapes, marked gpu)."""

import pytest
import torch

from accel.core.errors import AccelError
from accel.kernels import attention, attention_reference, group_norm, group_norm_reference
from accel.kernels.attention import head_dim_split

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# Tolerances. GroupNorm keeps everything in fp32 and rounds once at the store: fp32 agrees to float
# rounding, fp16/bf16 to one unit in the last place of the output (rtol = the dtype's epsilon).
# Attention rounds P to the input dtype before P.V (as FlashAttention does), so its error is about
# one ulp of that dtype on outputs of order one.
GN_TOL = {
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.float16: dict(atol=1e-3, rtol=1e-3),
    torch.bfloat16: dict(atol=8e-3, rtol=8e-3),
}
ATTN_TOL = {
    torch.float16: dict(atol=2e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=1.6e-2, rtol=1.6e-2),
}


def _close(actual, expected, tol):
    torch.testing.assert_close(actual.float(), expected.float(), **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "silu,residual", [(False, None), (True, None), (True, "per_channel"), (False, "full")]
)
def test_group_norm_matches_reference(dtype, channels_last, silu, residual):
    torch.manual_seed(0)
    x = (torch.randn(2, 24, 6, 5, device=DEVICE) * 3 + 2).to(dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    weight, bias = torch.randn(24, device=DEVICE), torch.randn(24, device=DEVICE)
    add = {
        None: None,
        "per_channel": torch.randn(2, 24, device=DEVICE),
        "full": torch.randn(2, 24, 6, 5, device=DEVICE).to(dtype),
    }[residual]
    # block_hw=8 and split=2 force several programs per group and several tiles per program.
    y = group_norm(x, 6, weight, bias, 1e-6, silu=silu, residual=add, split=2, block_hw=8)
    _close(
        y, group_norm_reference(x, 6, weight, bias, 1e-6, silu=silu, residual=add), GN_TOL[dtype]
    )
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last


@pytest.mark.parametrize("split", [1, 3, 7])
def test_group_norm_split_merges_statistics_exactly(split):
    """Chunked statistics (Chan's merge) must agree with one pass, also when chunks are uneven."""
    torch.manual_seed(1)
    # large mean: sum-of-squares formulas would cancel
    x = torch.randn(1, 8, 37, device=DEVICE) * 5 + 100
    y = group_norm(x, 2, split=split, block_hw=4)
    _close(y, group_norm_reference(x, 2), dict(atol=2e-5, rtol=1e-5))


def test_group_norm_reads_transposed_attention_view():
    """diffusers' attention normalizes hidden_states.transpose(1, 2): (N, C, L) with channel stride
    1."""
    torch.manual_seed(2)
    tokens = torch.randn(2, 10, 16, device=DEVICE)
    x = tokens.transpose(1, 2)
    _close(group_norm(x, 4), group_norm_reference(x, 4), GN_TOL[torch.float32])


def test_group_norm_actually_normalizes():
    x = torch.randn(2, 8, 4, 4, device=DEVICE) * 7 + 3
    y = group_norm(x, 2).view(2, 2, -1)
    assert y.mean(-1).abs().max() < 1e-4 and (y.var(-1, unbiased=False) - 1).abs().max() < 1e-3


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: group_norm(torch.randn(2, 10, 4, device=DEVICE), 4), "not divisible"),
        (lambda: group_norm(torch.randn(2, 8, 4, device=DEVICE).double(), 2), "dtype"),
        (
            lambda: group_norm(
                torch.randn(2, 8, 4, device=DEVICE), 2, torch.ones(4, device=DEVICE)
            ),
            "weight",
        ),
        (
            lambda: group_norm(
                torch.randn(2, 8, 4, device=DEVICE), 2, residual=torch.randn(2, 3, device=DEVICE)
            ),
            "residual",
        ),
    ],
)
def test_group_norm_rejects_bad_input(call, message):
    with pytest.raises(AccelError, match=message):
        call()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "head_dim,len_q,len_k",
    [(64, 33, 33), (40, 20, 7), (72, 17, 40), (80, 16, 16), (160, 9, 21), (128, 5, 77)],
)
def test_attention_matches_reference(dtype, head_dim, len_q, len_k):
    torch.manual_seed(0)
    q = torch.randn(2, 3, len_q, head_dim, device=DEVICE).to(dtype)
    k = torch.randn(2, 3, len_k, head_dim, device=DEVICE).to(dtype)
    v = torch.randn(2, 3, len_k, head_dim, device=DEVICE).to(dtype)
    _close(attention(q, k, v), attention_reference(q, k, v), ATTN_TOL[dtype])


def test_attention_reads_projection_layout_in_place():
    """(B, L, H, D) projections viewed as (B, H, L, D), an explicit scale, and a free (B, Lq, H*D)
    reshape."""
    torch.manual_seed(3)
    q = torch.randn(2, 20, 2, 40, device=DEVICE).half().transpose(1, 2)
    k = torch.randn(2, 9, 2, 40, device=DEVICE).half().transpose(1, 2)
    v = torch.randn(2, 9, 2, 40, device=DEVICE).half().transpose(1, 2)
    out = attention(q, k, v, scale=0.3)
    _close(out, attention_reference(q, k, v, scale=0.3), ATTN_TOL[torch.float16])
    assert out.transpose(1, 2).is_contiguous()


def test_head_dim_split_avoids_power_of_two_padding():
    assert {d: head_dim_split(d) for d in (40, 64, 72, 80, 128, 160)} == {
        40: (32, 16),
        64: (64, 0),
        72: (64, 16),
        80: (64, 16),
        128: (128, 0),
        160: (128, 32),
    }


@pytest.mark.parametrize(
    "shapes,dtype,message",
    [
        (((1, 1, 8, 36), (1, 1, 8, 36)), torch.float16, "head_dim 36"),
        (((1, 1, 8, 64), (1, 1, 8, 64)), torch.float32, "dtype"),
        (((1, 2, 8, 64), (1, 1, 8, 64)), torch.float16, "do not match"),
    ],
)
def test_attention_rejects_bad_input(shapes, dtype, message):
    q, kv = (torch.zeros(s, device=DEVICE, dtype=dtype) for s in shapes)
    with pytest.raises(AccelError, match=message):
        attention(q, kv, kv)


@pytest.mark.gpu
@pytest.mark.parametrize("channels", [320, 640, 1280])
def test_group_norm_sd15_shapes_on_gpu(channels):
    size = {320: 64, 640: 32, 1280: 16}[channels]
    x = torch.randn(2, channels, size, size, device="cuda", dtype=torch.float16).to(
        memory_format=torch.channels_last
    )
    weight, bias = torch.randn(channels, device="cuda"), torch.randn(channels, device="cuda")
    _close(
        group_norm(x, 32, weight, bias, 1e-5, silu=True),
        group_norm_reference(x, 32, weight, bias, 1e-5, silu=True),
        GN_TOL[torch.float16],
    )


@pytest.mark.gpu
@pytest.mark.parametrize(
    "head_dim,len_q,len_k", [(40, 4096, 4096), (40, 4096, 77), (160, 256, 256), (72, 256, 256)]
)
def test_attention_sd15_shapes_on_gpu(head_dim, len_q, len_k):
    q = torch.randn(2, 8, len_q, head_dim, device="cuda", dtype=torch.float16)
    k = torch.randn(2, 8, len_k, head_dim, device="cuda", dtype=torch.float16)
    v = torch.randn(2, 8, len_k, head_dim, device="cuda", dtype=torch.float16)
    _close(attention(q, k, v), attention_reference(q, k, v), ATTN_TOL[torch.float16])
