"""Bits chosen per layer for a quality or size budget (MixDQ's idea, with a cheap sensitivity).

Sensitivity: the model quantized at 8-bit weights (activations as configured) is the base; for each
layer whose width may change, its weights alone are re-quantized at each lower width, and the
squared change this makes to eps, relative to the float model's |eps|^2, over probe inputs spread
through the calibration set (all noise levels), is that layer's cost at that width. The change is
measured against the base, not against the float model: the difference of two errors would mix the
layer's perturbation with the base's own error and their chance correlation (on a tiny probe set
it came out negative for a third of the layers). One pass of the probe inputs per layer and width:
seconds on the reference models.

Allocation: errors taken as additive (first order), the allocator walks from all-8-bit down,
each time taking the change (a layer to a lower width) that adds the least error per byte saved,
until every changeable layer is at the lowest width. Each point of that path is a bit map; a size
budget takes the first point that fits, a quality budget the smallest point whose measured FID
meets it (the quantize stage measures, bisecting the path).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn

from accel.quant.layers import QuantLayer
from accel.quant.pack import codes_per_byte
from accel.quant.quantizer import Quantizer, grid

WIDTHS = (2, 4, 8)  # weight bits the allocator chooses from (8: the base)
PROBE_INPUTS = 128  # calibration inputs the sensitivity is measured on
PROBE_BATCH = 64


@dataclass(frozen=True)
class Allocation:
    bits: dict[str, int]  # layer -> weight bits, for every changeable layer
    weight_bytes: int  # the packed weight codes of the changeable layers
    predicted_error: float  # the base's error plus the sum of the layers' costs


def changeable_layers(network: nn.Module, fixed: set[str]) -> dict[str, QuantLayer]:
    """Quantized layers with 8-bit weights the plan did not pin (first layer, time embedding)."""
    return {
        name: m
        for name, m in network.named_modules()
        if isinstance(m, QuantLayer) and name not in fixed and m.low_rank is None
    }


@torch.no_grad()
def layer_costs(
    base, float_model, calib, layers: dict[str, QuantLayer], widths=WIDTHS, progress: bool = True
) -> tuple[float, dict[str, dict[int, float]]]:
    """The base's error and {layer: {bits: added error}} (0 at 8 bits)."""
    from tqdm.auto import tqdm

    probes = _probe_batches(calib, base)
    reference = [float_model(x, t, c) for x, t, c in probes]
    base_eps = [base(x, t, c) for x, t, c in probes]
    base_error = _relative_change(base_eps, reference, reference)
    costs = {}
    for name, layer in tqdm(layers.items(), desc="layer sensitivity", disable=not progress):
        costs[name] = {8: 0.0}
        for bits in (b for b in widths if b < 8):
            with _weights_at(layer, bits):
                eps = [base(x, t, c) for x, t, c in probes]
            costs[name][bits] = _relative_change(eps, base_eps, reference)
    return base_error, costs


def _probe_batches(calib, denoiser) -> list[tuple]:
    index = torch.linspace(0, len(calib) - 1, min(PROBE_INPUTS, len(calib))).round().long()
    x, t = calib.x[index], calib.t[index]
    cond = None if calib.cond is None else calib.cond[index]
    batches = []
    for start in range(0, len(index), PROBE_BATCH):
        part = slice(start, start + PROBE_BATCH)
        batches.append(
            (
                x[part].to(denoiser.device, denoiser.dtype),
                t[part].to(denoiser.device),
                None if cond is None else denoiser.to_model(cond[part]),
            )
        )
    return batches


def _relative_change(eps: list, against: list, reference: list) -> float:
    """Mean over probe inputs of |eps - against|^2 / |reference|^2."""
    changes = []
    for new, old, ref in zip(eps, against, reference):
        dims = tuple(range(1, new.ndim))
        changes.append(((new - old) ** 2).sum(dims) / (ref**2).sum(dims))
    return float(torch.cat(changes).mean())


class _weights_at:
    """``layer``'s weights re-quantized at ``bits`` for the duration of a ``with`` block."""

    def __init__(self, layer: QuantLayer, bits: int):
        self.layer, self.bits = layer, bits

    def __enter__(self):
        self.saved = self.layer.weight_quantizers
        narrower = nn.ModuleList(copy.deepcopy(q) for q in self.saved)
        for quantizer, part in zip(narrower, self.layer.weight_parts(self.layer.weight)):
            _set_bits(quantizer, self.bits)
            quantizer.fit(part)
        self.layer.weight_quantizers = narrower
        # new quantizers may reuse freed memory: the cached weight's key cannot tell them apart
        self.layer._weight_cache = None

    def __exit__(self, *exc):
        self.layer.weight_quantizers = self.saved
        self.layer._weight_cache = None


def _set_bits(quantizer: Quantizer, bits: int) -> None:
    quantizer.bits = bits
    quantizer.q_min, quantizer.q_max = grid(bits, quantizer.symmetric)


def weight_bytes(count: int, bits: int) -> int:
    return -(-count // codes_per_byte(bits))


def allocation_path(
    costs: dict[str, dict[int, float]], counts: dict[str, int], base_error: float
) -> list[Allocation]:
    """From every layer at 8 bits to every layer at its lowest width, one change at a time, the
    change adding the least error per byte saved first."""
    bits = {name: 8 for name in costs}
    error = base_error

    def point() -> Allocation:
        size = sum(weight_bytes(counts[n], b) for n, b in bits.items())
        return Allocation(dict(bits), size, error)

    path = [point()]
    while True:
        moves = [
            (
                (costs[n][lower] - costs[n][bits[n]])
                / (weight_bytes(counts[n], bits[n]) - weight_bytes(counts[n], lower)),
                n,
                lower,
            )
            for n in costs
            for lower in costs[n]
            if lower < bits[n] and weight_bytes(counts[n], lower) < weight_bytes(counts[n], bits[n])
        ]
        if not moves:
            return path
        _, name, lower = min(moves)
        error += costs[name][lower] - costs[name][bits[name]]
        bits[name] = lower
        path.append(point())


def for_size(path: list[Allocation], weight_bytes_budget: int) -> Allocation | None:
    """The first point of the path (least predicted error) whose weights fit the budget."""
    return next((p for p in path if p.weight_bytes <= weight_bytes_budget), None)
