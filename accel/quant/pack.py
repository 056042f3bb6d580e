"""Quantized weights as stored in an artifact: integer codes (4 bits and below: two per byte) plus
scales.

``pack_state`` replaces a QuantLayer's float weight in the state dict by
``<layer>.weight_codes.<part>`` (uint8 holding ``code - q_min``; one part, or two at a split site);
its quantizers' scales and zero points stay as they are; a low-rank branch is stored in fp16 (its
values are fp16 already). ``unpack_state`` rebuilds the weight as
``(code - zero_point) * scale``: exactly the values the fake-quantized layer used, so the restored
model's outputs equal the in-memory model's bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from accel.core.errors import AccelError
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
    expected = count if bits > 4 else (count + 1) // 2
    if packed.dtype != torch.uint8 or packed.numel() != expected:
        raise AccelError(
            f"packed {bits}-bit codes must be {expected} uint8 values, got {packed.numel()} "
            f"{packed.dtype}"
        )
    if bits > 4:
        return packed.to(torch.int32)
    both = torch.stack([packed & 0xF, packed >> 4], dim=1).reshape(-1)
    return both[:count].to(torch.int32)


def _quant_layers(network: nn.Module):
    return [
        (name, module) for name, module in network.named_modules() if isinstance(module, QuantLayer)
    ]


@torch.no_grad()
def pack_state(network: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with every QuantLayer's weight stored as packed integer codes."""
    state = dict(state)
    for name, layer in _quant_layers(network):
        del state[f"{name}.weight"]
        for part, (codes, quantizer) in enumerate(
            zip(layer.weight_codes(), layer.weight_quantizers)
        ):
            state[f"{name}.weight_codes.{part}"] = pack_codes(
                (codes - quantizer.q_min).cpu(), quantizer.bits
            )
        for key in _branch_keys(name, layer):
            state[key] = state[key].half()
    return state


def _branch_keys(name: str, layer: QuantLayer) -> list[str]:
    return [] if layer.low_rank is None else [f"{name}.low_rank.down", f"{name}.low_rank.up"]


@torch.no_grad()
def unpack_state(network: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``pack_state``'s output with float weights again, for a network with the same quantized
    structure. The network's per-channel scales take the stored shapes (a rebuilt layer has not
    fitted any yet)."""
    state = dict(state)
    for name, layer in _quant_layers(network):
        for key, tensor in state.items():
            if key.startswith(f"{name}.") and key.endswith((".scale", ".zero_point")):
                target = layer.get_submodule(key[len(name) + 1 :].rpartition(".")[0])
                getattr(target, key.rpartition(".")[2]).data = torch.empty_like(tensor)
        parts = []
        for part, (weight, quantizer) in enumerate(
            zip(layer.weight_parts(layer.weight), layer.weight_quantizers)
        ):
            key = f"{name}.weight_codes.{part}"
            if key not in state:
                raise AccelError(f"the stored weights lack {key}")
            codes = unpack_codes(state.pop(key), quantizer.bits, weight.numel()).reshape(
                weight.shape
            )
            prefix = f"{name}.weight_quantizers.{part}."
            scale = quantizer._shaped(state[prefix + "scale"], weight)
            zero = quantizer._shaped(state[prefix + "zero_point"], weight)
            parts.append((codes + quantizer.q_min - zero) * scale)
        state[f"{name}.weight"] = torch.cat(parts, dim=1) if layer.split else parts[0]
        for key in _branch_keys(name, layer):
            state[key] = state[key].to(layer.weight.dtype)
    return state
