"""Quantized weights as stored in an artifact: integer codes (4 bits and below: two per byte) plus scales.

A QuantLayer's float weight is replaced in the state dict by ``<layer>.weight_codes.<part>`` (uint8 holding
``code - q_min``; one part, or two at a split site); its quantizers' scales and zero points stay as they are.
Loading rebuilds the weight as ``(code - zero_point) * scale``: exactly the values the fake-quantized layer
used, so the restored model's outputs equal the in-memory model's bit for bit.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from accel.errors import AccelError
from accel.quant.layers import QuantLayer


def pack_codes(unsigned: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 storage of values in [0, 2^bits): two per byte for bits <= 4 (low nibble first)."""
    flat = unsigned.reshape(-1).to(torch.uint8)
    if bits > 4:
        return flat
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    return flat[0::2] | (flat[1::2] << 4)


def unpack_codes(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    if bits > 4:
        return packed[:count].to(torch.int32)
    both = torch.stack([packed & 0xF, packed >> 4], dim=1).reshape(-1)
    return both[:count].to(torch.int32)


def _quant_layers(network: nn.Module):
    return [(name, module) for name, module in network.named_modules() if isinstance(module, QuantLayer)]


@torch.no_grad()
def packed_state(network: nn.Module) -> dict[str, torch.Tensor]:
    """The network's state dict with every QuantLayer's weight stored as packed integer codes."""
    state = {k: v.detach().contiguous().cpu() for k, v in network.state_dict().items()}
    for name, layer in _quant_layers(network):
        del state[f"{name}.weight"]
        for part, (codes, quantizer) in enumerate(zip(layer.weight_codes(), layer.weight_quantizers)):
            state[f"{name}.weight_codes.{part}"] = pack_codes((codes - quantizer.q_min).cpu(), quantizer.bits)
    return state


@torch.no_grad()
def load_packed_state(network: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load ``packed_state`` output into a network with the same quantized structure."""
    state = dict(state)
    for name, layer in _quant_layers(network):
        for key, tensor in state.items():  # per-channel scales are shaped by the data they were fitted to
            if key.startswith(f"{name}.") and key.endswith((".scale", ".zero_point")):
                target = layer.get_submodule(key[len(name) + 1:].rpartition(".")[0])
                getattr(target, key.rpartition(".")[2]).data = torch.empty_like(tensor)
        parts = []
        for part, (weight, quantizer) in enumerate(zip(layer.weight_parts(layer.weight), layer.weight_quantizers)):
            key = f"{name}.weight_codes.{part}"
            if key not in state:
                raise AccelError(f"artifact weights lack {key}")
            codes = unpack_codes(state.pop(key), quantizer.bits, weight.numel()).reshape(weight.shape)
            prefix = f"{name}.weight_quantizers.{part}."
            scale = quantizer._shaped(state[prefix + "scale"], weight)
            zero = quantizer._shaped(state[prefix + "zero_point"], weight)
            parts.append((codes + quantizer.q_min - zero) * scale)
        state[f"{name}.weight"] = torch.cat(parts, dim=1) if layer.split else parts[0]
    missing, unexpected = network.load_state_dict(state, strict=False)
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise AccelError(f"artifact weights do not match the quantized model ({len(missing)} missing, "
                         f"{len(unexpected)} unexpected, e.g. {example})")
