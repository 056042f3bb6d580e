"""Per-token dynamic activation scales in ONNX: blocked QuantizeLinear with scales the graph
computes.

A DynamicQuantizer gives each token (a pixel of a feature map, a position of a sequence) and group
of channels its own scale, absmax / q_max, taken from the input at run time (W4A4's groups of 64;
at 8 bits, one group per token). Opset 21's QuantizeLinear takes a scale tensor blocked along one
axis (``block_size``) and an ``output_dtype`` (INT4 for 4 bits), and a scale input need not be an
initializer, so the form is: ReduceMax(Abs) over each group / q_max, clamped like the quantizer,
then QuantizeLinear -> DequantizeLinear with those scales, blocked along the channel axis. ONNX
Runtime runs it on CPUs (as float arithmetic on the grid: no integer kernel takes 4-bit
activations); TensorRT takes only constant Q/DQ scales, so its engines are refused before this form
is built. The TorchScript exporter stops at opset 20, so the quantize step is traced as the
placeholder ``accel::BlockQuantizeLinear`` (with a ``bits`` attribute), rewritten by the exporter,
as blocked DequantizeLinear is (qdq.py).
"""

from __future__ import annotations

import torch

from accel.core.registry import BLOCK_QUANTIZE, PLACEHOLDER_DOMAIN
from accel.quant.quantizer import DynamicQuantizer, grid

ACTIVATION_TYPE_BITS = (4, 8)  # ONNX's INT4 and INT8; QuantizeLinear saturates to the type's range


class BlockQuantize(torch.autograd.Function):
    """x -> signed codes of ``bits``, one scale per block of ``block`` values along ``axis``."""

    @staticmethod
    def forward(ctx, x, scale, axis, block, bits):
        low, high = grid(bits, symmetric=True)
        # round half to even, as ONNX; the same division DynamicQuantizer makes
        codes = torch.round(x / scale.repeat_interleave(block, dim=axis))
        return torch.clamp(codes, low, high).to(torch.int8)

    @staticmethod
    def symbolic(g, x, scale, axis, block, bits):
        codes = g.op(
            f"{PLACEHOLDER_DOMAIN}::{BLOCK_QUANTIZE}",
            x,
            scale,
            axis_i=axis,
            block_size_i=block,
            bits_i=bits,
        )
        # sizes left unknown: a static type here lets the exporter fold the batch into later shapes
        typed = x.type().with_dtype(torch.int8)  # INT4 once rewritten, for 4 bits
        codes.setType(typed.with_sizes([None] * x.type().dim()))
        return codes


def token_scales(x: torch.Tensor, quantizer: DynamicQuantizer) -> tuple[torch.Tensor, int, int]:
    """``x``'s scales as ``quantizer`` takes them (absmax / q_max per token and group), shaped as
    blocked QuantizeLinear wants them (x's shape, the channel axis divided by the block), with the
    axis and block size."""
    axis = 1 if quantizer.channel_dim == 1 else x.ndim - 1
    channels = int(x.shape[axis])  # static in every graph (only the batch is dynamic)
    group = quantizer.group_size
    block = group if group and channels % group == 0 else channels
    groups = x.unflatten(axis, (channels // block, block))
    scale = groups.abs().amax(dim=axis + 1).clamp_min(1e-12) / quantizer.q_max
    return scale, axis, block


def block_quantize(x: torch.Tensor, quantizer: DynamicQuantizer):
    """``x``'s codes as ``quantizer`` makes them, traced as blocked QuantizeLinear, with their
    scales, axis and block size (qdq.py dequantizes them)."""
    scale, axis, block = token_scales(x, quantizer)
    return BlockQuantize.apply(x, scale, axis, block, quantizer.bits), scale, axis, block
