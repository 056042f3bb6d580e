"""The Q/DQ form ONNX Runtime's CPU graph optimizer fuses into integer kernels (export target
``ort-cpu``).

ONNX Runtime fuses a node unit only when every input of the op comes through DequantizeLinear and,
for a convolution, its output goes through QuantizeLinear (QDQSelectorActionTransformer; source
``qdq_selectors.cc``):
- convolution: DQ(x uint8) + DQ(w int8, per channel) + DQ(bias int32, scale s_x * s_w) -> Conv -> Q
  becomes QLinearConv. Without the output Q the convolution stays in float, and its computed
  weight loses the reordered (NCHWc) float kernel as well: accel's portable form ran the digits
  UNet 0.58x fp32's speed at batch 500 on a VNNI CPU, this form 1.39-1.46x (measured, AMD EPYC);
- linear: DQ(x uint8) + DQ(w int8) -> MatMul, with no Q after it, becomes MatMulIntegerToFloat,
  but that fusion leaves the bias as an Add over the whole output (1 ms per layer of digits-dit at
  batch 500, 5 of a block's 111 ms); this form writes the fused kernel itself, the contrib op
  com.microsoft.MatMulIntegerToFloat with its bias input (the graph is for ONNX Runtime anyway).
  An output Q (QLinearMatMul) was measured slower: digits-dit 1.40x -> 1.00x at batch 500.
- linear with dynamic per-tensor input scales (``--dynamic-scope tensor``): the contrib op
  com.microsoft.DynamicQuantizeMatMul, which computes the input's range, quantizes it to uint8 and
  multiplies in integers in one kernel (what ONNX Runtime's own ``quantize_dynamic`` graphs fuse
  into); a convolution with dynamic scales runs DynamicQuantizeLinear -> DequantizeLinear -> Conv,
  unfused.
Activations are uint8: on x86 ONNX Runtime rejects int8 activations in these units (int8 is allowed
only on ARM). accel's activation scales are symmetric, so the uint8 zero point is 128: the same grid
as the model's int8 codes, shifted. Output ranges are not part of the quantized model (its layers
quantize inputs): they are observed here, min and max of each layer's output over the model's own
calibration trajectories, asymmetric uint8. (The layer that writes eps is not quantized by default,
``QuantConfig.protect_ends``, so eps itself is never rounded to uint8.) At a split-shortcut site
each half is its own fused convolution, their outputs added in float.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.onnx import symbolic_helper

from accel.quant.layers import QuantLayer
from accel.quant.qdq import Dequant, to_qdq
from accel.quant.quantizer import TensorDynamicQuantizer

ORT_DOMAIN = "com.microsoft"  # ONNX Runtime's contrib ops
UINT8_MAX = 255
ACTIVATION_ZERO = 128  # symmetric int8 codes, shifted onto uint8
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


class QuantDequantUint8(torch.autograd.Function):
    """Per-tensor uint8 fake quantization that exports as QuantizeLinear -> DequantizeLinear."""

    @staticmethod
    def forward(ctx, x, scale, zero):
        # round half to even, as ONNX
        return (torch.clamp(torch.round(x / scale) + zero, 0, UINT8_MAX) - zero) * scale

    @staticmethod
    def symbolic(g, x, scale, zero):
        zero = g.op("Constant", value_t=torch.tensor(int(zero), dtype=torch.uint8))
        return g.op("DequantizeLinear", g.op("QuantizeLinear", x, scale, zero), scale, zero)


class DequantBias(torch.autograd.Function):
    """int32 bias codes x per-channel scales s_x * s_w: the bias QLinearConv adds to its int32
    accumulator."""

    @staticmethod
    def forward(ctx, codes, scale):
        return codes.to(scale.dtype) * scale

    @staticmethod
    def symbolic(g, codes, scale):
        return g.op("DequantizeLinear", codes, scale, axis_i=0)


class IntegerLinear(torch.autograd.Function):
    """uint8 input codes (zero point 128) times int8 weight codes, summed in int32, scaled to float
    and the bias added; exported as QuantizeLinear -> com.microsoft.MatMulIntegerToFloat."""

    @staticmethod
    def forward(ctx, x, input_scale, codes, weight_scale, weight_zero, bias):
        x = QuantDequantUint8.forward(ctx, x, input_scale, ACTIVATION_ZERO)
        return F.linear(x, Dequant.forward(ctx, codes, weight_scale, weight_zero), bias)

    @staticmethod
    def symbolic(g, x, input_scale, codes, weight_scale, weight_zero, bias):
        zero = g.op("Constant", value_t=torch.tensor(ACTIVATION_ZERO, dtype=torch.uint8))
        codes = g.op("Transpose", codes, perm_i=[1, 0])  # (K, N), MatMul's B; folded at load
        inputs = [g.op("QuantizeLinear", x, input_scale, zero), codes, input_scale, weight_scale]
        inputs += [zero, weight_zero] + ([] if symbolic_helper._is_none(bias) else [bias])
        return _float_like(x, g.op(f"{ORT_DOMAIN}::MatMulIntegerToFloat", *inputs))


def _float_like(x, out):
    """A contrib op's output typed for the exporter: x's dtype and rank (the last size differs)."""
    rank = x.type().dim()
    if rank is not None:
        out.setType(x.type().with_sizes([None] * rank))
    return out


class DynamicIntegerLinear(torch.autograd.Function):
    """The input quantized to uint8 with its own per-tensor range (ONNX's DynamicQuantizeLinear)
    times int8 weight codes, scaled to float and the bias added; exported as the contrib op
    com.microsoft.DynamicQuantizeMatMul, which does all of it in one kernel."""

    @staticmethod
    def forward(ctx, x, codes, weight_scale, weight_zero, bias):
        x = TensorDynamicQuantizer()(x)
        return F.linear(x, Dequant.forward(ctx, codes, weight_scale, weight_zero), bias)

    @staticmethod
    def symbolic(g, x, codes, weight_scale, weight_zero, bias):
        codes = g.op("Transpose", codes, perm_i=[1, 0])  # (K, N), MatMul's B; folded at load
        inputs = [x, codes, weight_scale, weight_zero]
        inputs += [] if symbolic_helper._is_none(bias) else [bias]
        return _float_like(x, g.op(f"{ORT_DOMAIN}::DynamicQuantizeMatMul", *inputs))


class DynamicQuantDequantUint8(torch.autograd.Function):
    """ONNX's DynamicQuantizeLinear -> DequantizeLinear: the input of a convolution with dynamic
    scales (ONNX Runtime has no fused kernel for it; it runs in float on the grid)."""

    @staticmethod
    def forward(ctx, x):
        return TensorDynamicQuantizer()(x)

    @staticmethod
    def symbolic(g, x):
        codes, scale, zero = g.op("DynamicQuantizeLinear", x, outputs=3)
        return g.op("DequantizeLinear", codes, scale, zero)


def fusable(layer: QuantLayer) -> bool:
    """Layers this form rewrites with static scales: those with 8-bit, calibrated inputs.
    (Smoothing and low-rank branches come only with 4-bit activations.)"""
    return layer.a_bits == 8 and not layer.dynamic_input


def to_ort_cpu(network: nn.Module, run_calibration) -> dict:
    """Convert ``network``'s quantized layers to the ort-cpu form, in place; output ranges come
    from ``run_calibration`` (a pass over calibration inputs), observed before the conversion."""
    layers = {name: m for name, m in network.named_modules() if isinstance(m, QuantLayer)}
    ranges = observe_output_ranges(layers, run_calibration)
    counts = to_qdq(network, blocked=False, ort_cpu=True)
    for name, layer in layers.items():
        if fusable(layer):
            attach(layer, ranges.get(name))
        elif layer.dynamic_input:
            layer.forward = lambda x, layer=layer: _dynamic_forward(layer, x)
    counts["fused_convolutions"] = len(ranges)
    counts["integer_linear_layers"] = sum(
        (fusable(m) or m.dynamic_input) and not m.is_conv for m in layers.values()
    )
    counts["dynamic_layers"] = sum(m.dynamic_input for m in layers.values())
    return counts


def observe_output_ranges(layers: dict[str, QuantLayer], run_calibration) -> dict[str, list]:
    """{name: [(min, max) per input part]} of each fusable convolution's output over the
    calibration pass."""
    ranges: dict[str, list] = {}

    def observe(name):
        def hook(layer, inputs, output):
            seen = [(float(y.min()), float(y.max())) for y in part_outputs(layer, inputs[0])]
            old = ranges.get(name, seen)
            ranges[name] = [(min(a, c), max(b, d)) for (a, b), (c, d) in zip(old, seen)]

        return hook

    convs = {name: m for name, m in layers.items() if m.is_conv and fusable(m)}
    if not convs:  # a transformer's, or dynamic scales: no output range to observe
        return ranges
    handles = [m.register_forward_hook(observe(name)) for name, m in convs.items()]
    try:
        with torch.no_grad():
            run_calibration()
    finally:
        for handle in handles:
            handle.remove()
    return ranges


def part_outputs(layer: QuantLayer, x: torch.Tensor) -> list[torch.Tensor]:
    """Each input part's convolution (the bias with the first), as the fake-quantized layer computes
    them."""
    weights = layer.weight_parts(layer._inference_weight())
    return [
        F.conv2d(q(part), w, layer.bias if index == 0 else None, **layer.conv_args)
        for index, (q, part, w) in enumerate(
            zip(layer.input_quantizers, layer._input_parts(x), weights)
        )
    ]


def attach(layer: QuantLayer, output_ranges: list | None) -> None:
    """Give ``layer`` (already carrying its int8 export codes and scales) the ort-cpu forward: a
    fused convolution per part where ``output_ranges`` are given, MatMulIntegerToFloat's pattern
    for a linear layer."""
    layer.output_ranges = output_ranges
    if output_ranges is not None and layer.bias is not None:
        # an initializer, as QLinearConv's fusion wants: scale s_x * s_w, so that the codes add to
        # the int32 accumulator of x's and w's codes
        scale = layer.input_quantizers[0].scale.detach().float().reshape(()) * layer.export_scale_0
        codes = torch.round(layer.bias.detach().float() / scale).clamp(INT32_MIN, INT32_MAX)
        layer.register_buffer("export_bias_codes", codes.to(torch.int32))
        layer.register_buffer("export_bias_scale", scale)
    layer.forward = lambda x, layer=layer: _forward(layer, x)


def _forward(layer: QuantLayer, x: torch.Tensor) -> torch.Tensor:
    if not layer.is_conv:  # one input part: splits are at convolutions only
        return IntegerLinear.apply(x, _input_scale(layer, 0), *_weight(layer, 0), layer.bias)
    out = None
    for index, part in enumerate(layer._input_parts(x)):
        part = QuantDequantUint8.apply(part, _input_scale(layer, index), ACTIVATION_ZERO)
        weight = Dequant.apply(*_weight(layer, index))
        bias = layer.bias if index == 0 else None
        if layer.output_ranges is None:
            y = F.conv2d(part, weight, bias, **layer.conv_args)
        else:
            if bias is not None:
                bias = DequantBias.apply(layer.export_bias_codes, layer.export_bias_scale)
            y = F.conv2d(part, weight, bias, **layer.conv_args)
            y = _output_qdq(y, *layer.output_ranges[index])
        out = y if out is None else out + y
    return out


def _dynamic_forward(layer: QuantLayer, x: torch.Tensor) -> torch.Tensor:
    if not layer.is_conv:
        return DynamicIntegerLinear.apply(x, *_weight(layer, 0), layer.bias)
    out = None
    for index, part in enumerate(layer._input_parts(x)):
        weight = Dequant.apply(*_weight(layer, index))
        bias = layer.bias if index == 0 else None
        y = F.conv2d(DynamicQuantDequantUint8.apply(part), weight, bias, **layer.conv_args)
        out = y if out is None else out + y
    return out


def _input_scale(layer: QuantLayer, index: int) -> torch.Tensor:
    return layer.input_quantizers[index].scale.float().reshape(())


def _weight(layer: QuantLayer, index: int) -> list[torch.Tensor]:
    """The int8 codes of input part ``index``'s weight, their per-output-channel scales and (zero)
    zero points."""
    return [getattr(layer, f"export_{kind}_{index}") for kind in ("codes", "scale", "zero")]


def _output_qdq(y: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Asymmetric uint8 over [low, high] (widened to hold 0, as a zero point must)."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = max(high - low, 1e-8) / UINT8_MAX
    zero = int(round(-low / scale))
    return QuantDequantUint8.apply(y, torch.tensor(scale, dtype=y.dtype), zero)
