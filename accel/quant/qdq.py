"""Quantized layers in the form runtimes execute: QuantizeLinear/DequantizeLinear (Q/DQ) pairs.

After :func:`to_qdq`, every QuantLayer computes exactly what the exported graph will:
- its input through Q/DQ with the layer's static per-tensor scale (zero point 0, INT8);
- its weight as DequantizeLinear of integer codes (an initializer) with per-output-channel scales.
  Convolutions, and every layer when INT4 is off, carry their codes on the INT8 grid: 4-bit codes
  lie in [-8, 7] with the same scale, so an INT8 runtime performs exactly the W4A8 arithmetic (no
  mainstream runtime has INT4 convolutions);
- linear layers with 4-bit weights or per-group scales, when blocked form is on (opset 21), as
  blocked DequantizeLinear of the transposed (K, N) weight, blocked along K (one block per output
  channel, or per group of ``group_size`` inputs), feeding a MatMul directly; 4-bit codes as INT4.
  This is the pattern ONNX Runtime fuses into MatMulNBits and TensorRT reads as INT4 weights;
- an input with per-token dynamic scales (W4A4's groups, or 8-bit per token) through blocked
  QuantizeLinear -> DequantizeLinear whose scales the graph computes (dynamic_qdq.py; opset 21);
- W4A4's smoothing and Hadamard rotation as a Div and a blocked MatMul on the input, and its
  low-rank branch as two float MatMuls (or convolutions) added to the 4-bit product: the graph
  computes the SVDQuant layer as the model does;
- at a split-shortcut site, two convolutions (each half of the input with its own scale and weight
  half) whose outputs are added. A runtime sees two ordinary Q/DQ convolutions and an Add, which
  TensorRT and ONNX Runtime both fuse; one convolution over a concatenation of differently-scaled
  halves has no Q/DQ form.
Attention matmuls stay in floating point (TensorRT's quantization guide: attention is quantized only
in FP8, and NVIDIA's Model Optimizer diffusers recipe keeps it out of INT8), so quantized attention
processors are exported as diffusers' float processor.

The TorchScript exporter stops at opset 20 and has no INT4 type, so a blocked DequantizeLinear is
traced as the placeholder ``accel::BlockDequantizeLinear`` over INT8 codes (with a ``bits``
attribute); the exporter rewrites it to the standard op, 4-bit codes as INT4 initializers, and
raises the graph to opset 21. This is the export's default (``tensorrt``) target; ort_cpu.py builds
the ``ort-cpu`` target's form on it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from accel.core.errors import AccelError
from accel.core.registry import BLOCK_DEQUANTIZE, PLACEHOLDER_DOMAIN
from accel.quant.attention import QuantAttnProcessor
from accel.quant.dynamic_qdq import ACTIVATION_TYPE_BITS, block_quantize
from accel.quant.layers import QuantLayer
from accel.quant.quantizer import DynamicQuantizer, Quantizer

INT8_MIN, INT8_MAX = -128, 127


class QuantDequant(torch.autograd.Function):
    """Per-tensor symmetric INT8 fake quantization that exports as QuantizeLinear ->
    DequantizeLinear."""

    @staticmethod
    def forward(ctx, x, scale):
        # round half to even, as ONNX
        return torch.clamp(torch.round(x / scale), INT8_MIN, INT8_MAX) * scale

    @staticmethod
    def symbolic(g, x, scale):
        zero = g.op("Constant", value_t=torch.tensor(0, dtype=torch.int8))
        return g.op("DequantizeLinear", g.op("QuantizeLinear", x, scale, zero), scale, zero)


class Dequant(torch.autograd.Function):
    """INT8 codes x per-output-channel scales, exported as one DequantizeLinear(axis=0) of an INT8
    initializer."""

    @staticmethod
    def forward(ctx, codes, scale, zero):
        return codes.to(scale.dtype) * scale.reshape(-1, *([1] * (codes.ndim - 1)))

    @staticmethod
    def symbolic(g, codes, scale, zero):
        return g.op("DequantizeLinear", codes, scale, zero, axis_i=0)


class BlockDequant(torch.autograd.Function):
    """codes x scales blocked along ``axis`` (a weight's (K, N) codes and (K / block, N) scales,
    blocked along K; or an activation's, along its channels); exported as the placeholder op (no
    zero-point input: DequantizeLinear's default is 0 of the codes' type, and an INT4 zero point is
    one more rewrite)."""

    @staticmethod
    def forward(ctx, codes, scale, block, bits, axis=0):
        return codes.to(scale.dtype) * scale.repeat_interleave(block, dim=axis)

    @staticmethod
    def symbolic(g, codes, scale, block, bits, axis=0):
        weight = g.op(
            f"{PLACEHOLDER_DOMAIN}::{BLOCK_DEQUANTIZE}",
            codes,
            scale,
            axis_i=axis,
            block_size_i=block,
            bits_i=bits,
        )
        # what shape inference cannot know
        weight.setType(codes.type().with_dtype(scale.type().dtype()))
        return weight


def blocked_layers(network: nn.Module) -> list[str]:
    """Names of the quantized layers that need opset 21's blocked Q/DQ: linear layers with 4-bit
    weights (INT4) or per-group scales, and layers with per-token activation scales."""
    return [
        name
        for name, m in network.named_modules()
        if isinstance(m, QuantLayer) and (_wants_blocks(m) or _per_token(m))
    ]


def _wants_blocks(layer: QuantLayer) -> bool:
    return not layer.is_conv and (
        layer.w_bits <= 4 or any(q.group_size for q in layer.weight_quantizers)
    )


def _per_token(layer: QuantLayer) -> bool:
    return any(isinstance(q, DynamicQuantizer) for q in layer.input_quantizers or [])


def _check_dynamic(layer: QuantLayer, name: str, blocked: bool, ort_cpu: bool) -> None:
    if _per_token(layer) and ort_cpu:
        raise AccelError(
            f"{name}: per-token activation scales have no integer kernel in ONNX Runtime on CPUs: "
            "export with the default target (scales computed in the graph), or quantize with "
            "--dynamic-scope tensor"
        )
    if _per_token(layer) and not blocked:
        # TensorRT builds from opset 19 with every weight on the INT8 grid, and takes only constant
        # Q/DQ scales
        raise AccelError(
            f"{name}: per-token activation scales are computed in the graph, which needs opset "
            "21's blocked QuantizeLinear (not --int8-grid, and no TensorRT engine: its scales are "
            "constants); export with `accel export onnx` and the default opset"
        )
    if not _per_token(layer) and not ort_cpu:
        raise AccelError(
            f"{name}: per-tensor dynamic activation scales export as ONNX's DynamicQuantizeLinear, "
            "which ONNX Runtime reads and TensorRT does not: export with --target ort-cpu"
        )


def check_exportable(layer: QuantLayer, name: str, blocked: bool, ort_cpu: bool) -> None:
    """Refuse what Q/DQ cannot express, naming the layer. ``blocked``: opset 21's blocked Q/DQ may
    be written; ``ort_cpu``: the form being written is ort_cpu.py's (per-tensor dynamic scales)."""
    static = [q for q in layer.input_quantizers or [] if isinstance(q, Quantizer)]
    if any(not q.symmetric for q in [*layer.weight_quantizers, *static]):
        raise AccelError(
            f"{name}: asymmetric quantization has no ONNX Q/DQ form runtimes "
            "accept (zero point must be 0); quantize with symmetric ranges"
        )
    if static and layer.a_bits != 8:
        raise AccelError(
            f"{name}: {layer.a_bits}-bit static activation scales cannot be exported; static Q/DQ "
            "activations are INT8"
        )
    if layer.a_bits not in (None, *ACTIVATION_TYPE_BITS):
        raise AccelError(
            f"{name}: {layer.a_bits}-bit activations have no ONNX type (INT4 or INT8 only)"
        )
    if layer.dynamic_input:
        _check_dynamic(layer, name, blocked, ort_cpu)
    if layer.w_bits > 8:
        raise AccelError(f"{name}: {layer.w_bits}-bit weights do not fit the INT8 grid")
    if any(q.group_size for q in layer.weight_quantizers) and not (
        blocked and _wants_blocks(layer)
    ):
        raise AccelError(
            f"{name}: per-group weight scales need blocked DequantizeLinear (opset 21, without "
            "--int8-grid)"
        )


def _quantized_input(part: torch.Tensor, quantizer: nn.Module) -> torch.Tensor:
    if isinstance(quantizer, DynamicQuantizer):
        codes, scale, axis, block = block_quantize(part, quantizer)
        return BlockDequant.apply(codes, scale, block, quantizer.bits, axis)
    return QuantDequant.apply(part, quantizer.scale.to(part.dtype))


def _export_forward(layer: QuantLayer, x: torch.Tensor) -> torch.Tensor:
    x = layer.smoothed_input(x)  # W4A4's smoothing and rotation; x itself at other widths
    branch = None if layer.low_rank is None else layer.low_rank(x)
    inputs = layer._input_parts(x)
    if layer.input_quantizers is not None:
        inputs = [_quantized_input(part, q) for part, q in zip(inputs, layer.input_quantizers)]
    out = None
    for index, part in enumerate(inputs):
        codes, scale = (
            getattr(layer, f"export_codes_{index}"),
            getattr(layer, f"export_scale_{index}"),
        )
        bias = layer.bias if index == 0 else None
        if layer.export_block:
            y = torch.matmul(
                part, BlockDequant.apply(codes, scale, layer.export_block, layer.w_bits)
            )
            y = y if bias is None else y + bias
        else:
            weight = Dequant.apply(codes, scale, getattr(layer, f"export_zero_{index}"))
            y = (
                F.conv2d(part, weight, bias, **layer.conv_args)
                if layer.is_conv
                else F.linear(part, weight, bias)
            )
        out = y if out is None else out + y
    return out if branch is None else out + branch


def _attach(layer: QuantLayer, blocked: bool) -> None:
    """Give ``layer`` its export buffers (codes, scales, and zero points where not blocked) and the
    Q/DQ forward."""
    blocked = blocked and _wants_blocks(layer)
    layer.export_block = 0
    for index, (codes, quantizer) in enumerate(zip(layer.weight_codes(), layer.weight_quantizers)):
        scale = (
            quantizer.scale.detach().float().reshape(codes.shape[0], -1)
        )  # (N, 1) or (N, K / group)
        tensors = {}
        if blocked:
            codes, scale = codes.T, scale.T  # (K, N): MatMul's weight layout, blocks along K
            layer.export_block = codes.shape[0] // scale.shape[0]
        else:
            scale = scale.reshape(-1)
            tensors["zero"] = torch.zeros_like(scale, dtype=torch.int8)
        tensors.update(codes=codes.to(torch.int8).contiguous(), scale=scale.contiguous())
        for kind, tensor in tensors.items():
            layer.register_buffer(f"export_{kind}_{index}", tensor)
    layer.forward = lambda x, layer=layer: _export_forward(layer, x)


def to_qdq(network: nn.Module, blocked: bool, ort_cpu: bool = False) -> dict:
    """Convert ``network``'s quantized layers to their Q/DQ form, in place (export works on a copy).

    ``blocked``: linear layers with 4-bit weights or per-group scales become blocked
    DequantizeLinear (4-bit as INT4), and per-token activation scales may be written; otherwise
    every weight is on the INT8 grid. Returns counts of what was converted. ``ort_cpu``: the caller
    writes ort_cpu.py's form, which takes layers with per-tensor dynamic input scales (their forward
    is the caller's to write).
    """
    from diffusers.models.attention_processor import AttnProcessor2_0

    layers = [(name, m) for name, m in network.named_modules() if isinstance(m, QuantLayer)]
    for name, layer in layers:
        check_exportable(layer, name, blocked, ort_cpu)
    attention = [
        m
        for m in network.modules()
        if isinstance(getattr(m, "processor", None), QuantAttnProcessor)
    ]
    for _, layer in layers:
        _attach(layer, blocked)
    for module in attention:
        module.set_processor(AttnProcessor2_0())
    return {
        "qdq_layers": len(layers),
        "split_layers": sum(bool(m.split) for _, m in layers),
        "blocked_layers": sum(bool(m.export_block) for _, m in layers),
        "int4_layers": sum(bool(m.export_block) and m.w_bits <= 4 for _, m in layers),
        "float_attention": len(attention),
        "per_token_layers": sum(_per_token(m) for _, m in layers),
        "low_rank_branches": sum(m.low_rank is not None for _, m in layers),
    }
