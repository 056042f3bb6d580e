"""Quantized weights as stored in an artifact: integer codes (3-4 bits: two per byte; 2 bits: four
per byte) plus scales.

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


def codes_per_byte(bits: int) -> int:
    return 4 if bits <= 2 else 2 if bits <= 4 else 1


def pack_codes(unsigned: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 storage of values in [0, 2^bits): ``codes_per_byte(bits)`` per byte, lowest bits
    first."""
    flat = unsigned.reshape(-1).to(torch.uint8)
    per_byte = codes_per_byte(bits)
    if flat.numel() % per_byte:
        flat = torch.cat([flat, flat.new_zeros(per_byte - flat.numel() % per_byte)])
    width = 8 // per_byte
    packed = flat[0::per_byte].clone()
    for index in range(1, per_byte):
        packed |= flat[index::per_byte] << (width * index)
    return packed


def unpack_codes(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    per_byte = codes_per_byte(bits)
    expected = -(-count // per_byte)
    if packed.dtype != torch.uint8 or packed.numel() != expected:
        raise AccelError(
            f"packed {bits}-bit codes must be {expected} uint8 values, got {packed.numel()} "
            f"{packed.dtype}"
        )
    width = 8 // per_byte
    mask = (1 << width) - 1
    fields = [(packed >> (width * index)) & mask for index in range(per_byte)]
    return torch.stack(fields, dim=1).reshape(-1)[:count].to(torch.int32)


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
