"""Quantized layers in the form runtimes execute: QuantizeLinear/DequantizeLinear (Q/DQ) pairs.

While :func:`exportable` is active, every QuantLayer computes exactly what the exported graph will:
- its input through Q/DQ with the layer's static per-tensor scale (zero point 0, INT8);
- its weight as DequantizeLinear of INT8 integer codes (an initializer) with per-output-channel scales;
  4-bit codes lie in [-8, 7] on the same INT8 grid, so an INT8 runtime performs exactly the W4A8 arithmetic;
- at a split-shortcut site, two convolutions (each half of the input with its own scale and weight half)
  whose outputs are added. A runtime sees two ordinary Q/DQ convolutions and an Add, which TensorRT and ONNX
  Runtime both fuse; one convolution over a concatenation of differently-scaled halves has no Q/DQ form.
Attention matmuls stay in floating point (FIELD_NOTES.md: TensorRT quantizes attention only in FP8), so
quantized attention processors are exported as diffusers' float processor.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from accel.errors import AccelError
from accel.quant.layers import QuantAttnProcessor, QuantLayer

INT8_MIN, INT8_MAX = -128, 127


class QuantDequant(torch.autograd.Function):
    """Per-tensor symmetric INT8 fake quantization that exports as QuantizeLinear -> DequantizeLinear."""

    @staticmethod
    def forward(ctx, x, scale):
        return torch.clamp(torch.round(x / scale), INT8_MIN, INT8_MAX) * scale  # round half to even, as ONNX

    @staticmethod
    def symbolic(g, x, scale):
        zero = g.op("Constant", value_t=torch.tensor(0, dtype=torch.int8))
        return g.op("DequantizeLinear", g.op("QuantizeLinear", x, scale, zero), scale, zero)


class Dequant(torch.autograd.Function):
    """INT8 codes x per-output-channel scales, exported as one DequantizeLinear(axis=0) of an INT8 initializer."""

    @staticmethod
    def forward(ctx, codes, scale, zero):
        return codes.float() * scale.reshape(-1, *([1] * (codes.ndim - 1)))

    @staticmethod
    def symbolic(g, codes, scale, zero):
        return g.op("DequantizeLinear", codes, scale, zero, axis_i=0)


def check_exportable(layer: QuantLayer, name: str) -> None:
    """Refuse what Q/DQ cannot express, naming the layer."""
    quantizers = list(layer.weight_quantizers) + list(layer.input_quantizers or [])
    if any(not q.symmetric for q in quantizers):
        raise AccelError(f"{name}: asymmetric quantization has no ONNX Q/DQ form runtimes accept (zero point must "
                         "be 0); quantize with symmetric ranges")
    if layer.a_bits not in (None, 8):
        raise AccelError(f"{name}: {layer.a_bits}-bit activations cannot be exported; Q/DQ activations are INT8")
    if layer.w_bits > 8:
        raise AccelError(f"{name}: {layer.w_bits}-bit weights do not fit the INT8 grid")
    if any(q.group_size for q in layer.weight_quantizers):
        raise AccelError(f"{name}: per-group weight scales need opset-21 blocked DequantizeLinear, which this "
                         "exporter does not write yet; quantize without --group-size")


def _export_forward(layer: QuantLayer, x: torch.Tensor) -> torch.Tensor:
    inputs = layer._input_parts(x)
    if layer.input_quantizers is not None:
        inputs = [QuantDequant.apply(part, q.scale.float()) for part, q in zip(inputs, layer.input_quantizers)]
    out = None
    for index, part in enumerate(inputs):
        weight = Dequant.apply(getattr(layer, f"export_codes_{index}"), getattr(layer, f"export_scale_{index}"),
                               getattr(layer, f"export_zero_{index}"))
        bias = layer.bias if index == 0 else None
        y = F.conv2d(part, weight, bias, **layer.conv_args) if layer.is_conv else F.linear(part, weight, bias)
        out = y if out is None else out + y
    return out


def _attach(layer: QuantLayer) -> list[str]:
    names = []
    for index, (codes, quantizer) in enumerate(zip(layer.weight_codes(), layer.weight_quantizers)):
        scale = quantizer.scale.detach().float().reshape(-1)
        tensors = {"codes": codes.to(torch.int8), "scale": scale, "zero": torch.zeros_like(scale, dtype=torch.int8)}
        for kind, tensor in tensors.items():
            layer.register_buffer(f"export_{kind}_{index}", tensor)
            names.append(f"export_{kind}_{index}")
    layer.forward = lambda x, layer=layer: _export_forward(layer, x)
    return names


@contextmanager
def exportable(network: nn.Module) -> Iterator[dict]:
    """Put ``network``'s quantized layers in their Q/DQ form for the duration; yields what was converted."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    layers = [(name, m) for name, m in network.named_modules() if isinstance(m, QuantLayer)]
    for name, layer in layers:
        check_exportable(layer, name)
    attention = [m for m in network.modules() if isinstance(getattr(m, "processor", None), QuantAttnProcessor)]
    attached = [(layer, _attach(layer)) for _, layer in layers]
    processors = [m.processor for m in attention]
    for module in attention:
        module.set_processor(AttnProcessor2_0())
    try:
        yield {"qdq_layers": len(layers), "split_layers": sum(bool(m.split) for _, m in layers),
               "float_attention": len(attention)}
    finally:
        for layer, names in attached:
            del layer.forward
            for name in names:
                delattr(layer, name)
        for module, processor in zip(attention, processors):
            module.set_processor(processor)
