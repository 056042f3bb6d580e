"""The quantize stage's bit budget: layer costs on an 8-bit base, the allocation path (budget.py),
and the point of it that meets ``--target-size`` (predicted) or ``--max-fid-ratio`` (measured).

For a quality budget, candidates spread along the path by size are quantized and sampled beside
the original in one run (same noise); the smallest that meets the ratio wins, then the stretch of
the path between it and the next smaller candidate is searched the same way once more.
"""

from __future__ import annotations

import collections
import copy
from dataclasses import replace

from accel.core import registry
from accel.core.errors import AccelError
from accel.quant.apply import plan_layers
from accel.quant.budget import (
    Allocation,
    allocation_path,
    changeable_layers,
    for_size,
    layer_costs,
    weight_bytes,
)
from accel.quant.config import BitBudget, QuantConfig

FIRST_ROUND = 5  # candidates measured across the whole path
SECOND_ROUND = 3  # then strictly between the best one and the next smaller measured


def choose_bits(
    model, config: QuantConfig, calib, budget: BitBudget, progress: bool = True
) -> tuple[dict[str, int], dict]:
    """{layer: weight bits} meeting ``budget`` and the record of how they were chosen."""
    from accel.metrics.size import weights_bytes

    # Weights alone: with quantized activations any change to a layer flips activation roundings
    # downstream, a floor as large as a 4-bit layer's own cost (~7e-5 each on digits), and an
    # allocation on those costs followed the floor (at W4A8's size: FID ratio 4.16, uniform W4A8
    # 2.15). Activations are quantized the same way whatever the widths.
    base = _quantized(model, replace(config, w_bits=8, a_bits=None, layer_bits={}), calib)
    layers = changeable_layers(base.module, pinned_layers(model, config))
    # what the written model holds besides the free layers' codes (activation scales, split
    # halves' second scales): from the model quantized as asked, all at 8 bits
    all_eight = _quantized(model, replace(config, w_bits=8, layer_bits={}), calib)
    if not layers:
        raise AccelError("no layer's bits are free to choose: every quantized layer is pinned")
    counts = {name: m.weight.numel() for name, m in layers.items()}
    base_error, costs = layer_costs(base, model, calib, layers, progress=progress)
    path = allocation_path(costs, counts, base_error)
    other_bytes = weights_bytes(all_eight) - sum(weight_bytes(c, 8) for c in counts.values())
    if budget.target_size is not None:
        chosen, measured = _for_size(path, budget.target_size, other_bytes), []
    else:
        chosen, measured = _for_quality(model, config, calib, path, budget, progress)
    record = {
        "budget": budget.to_dict(),
        "base_error": base_error,
        "layers": len(layers),
        "chosen": _describe(chosen, other_bytes),
        "measured": [{**_describe(p, other_bytes), "fid_ratio": r} for p, r in measured],
        "layer_costs": costs,
    }
    return chosen.bits, record


def _quantized(model, config: QuantConfig, calib):
    """A quantized copy of ``model``, recorded as the stage records it (its size is then the
    packed one)."""
    copied = copy.deepcopy(model)
    registry.apply(copied, "quantize", config, calib, False)
    return copied


def pinned_layers(model, config: QuantConfig) -> set[str]:
    """Layers the plan keeps at 8-bit weights whatever the width asked (first layer, time
    embedding and the other ``eight_bit`` patterns)."""
    probe = replace(config, w_bits=4, layer_bits={})
    return {name for name, spec in plan_layers(model, probe).items() if spec["w_bits"] == 8}


def _describe(point: Allocation, other_bytes: int) -> dict:
    widths = collections.Counter(point.bits.values())
    return {
        "layers_at_bits": {str(b): widths[b] for b in sorted(widths)},
        "predicted_error": point.predicted_error,
        "predicted_mb": (point.weight_bytes + other_bytes) / 1e6,
    }


def _for_size(path: list[Allocation], target_mb: float, other_bytes: int) -> Allocation:
    chosen = for_size(path, int(target_mb * 1e6) - other_bytes)
    if chosen is None:
        smallest = (path[-1].weight_bytes + other_bytes) / 1e6
        raise AccelError(
            f"--target-size {target_mb:g} MB is below the smallest this model can be "
            f"({smallest:.2f} MB: every free layer at its lowest width)"
        )
    return chosen


def _for_quality(model, config, calib, path, budget: BitBudget, progress: bool):
    """The smallest measured point whose FID ratio, and every larger one's, is at most the
    budget's; and every (point, ratio) measured."""
    ratio_at: dict[int, float] = {}  # path index -> measured FID ratio
    low, high = 0, len(path) - 1
    for count in (FIRST_ROUND, SECOND_ROUND):
        indices = [i for i in _spread(low, high, count) if i not in ratio_at]
        ratios = _fid_ratios(model, config, calib, [path[i] for i in indices], budget, progress)
        ratio_at.update(zip(indices, ratios))
        measured = [(path[i], ratio_at[i]) for i in sorted(ratio_at)]
        chosen = _smallest_meeting(measured, budget.max_fid_ratio)
        if chosen is None:
            break
        low = path.index(chosen)
        smaller = [i for i in ratio_at if i > low]
        if not smaller or min(smaller) - low < 2:  # nothing unmeasured between them
            break
        low, high = low + 1, min(smaller) - 1  # the next round: strictly between
    if chosen is None:
        best = min(r for _, r in measured)
        raise AccelError(
            f"--max-fid-ratio {budget.max_fid_ratio:g} is not met by any model measured "
            f"(best {best:.3f}, with 8-bit weights where the plan allows); raise it, or quantize "
            "with reconstruction (--recon-iters)"
        )
    return chosen, measured


def _smallest_meeting(measured: list, bound: float) -> Allocation | None:
    """From the largest measured model down, the last one before the first that misses the bound:
    a smaller model that meets it past a larger one that did not is taken as a lucky draw of FID,
    not trusted (at 1,000 samples such a pick measured 1.24 at 2,000 against a bound of 1.09)."""
    chosen = None
    for point, ratio in sorted(measured, key=lambda item: -item[0].weight_bytes):
        if ratio > bound:
            break
        chosen = point
    return chosen


def _spread(low: int, high: int, count: int) -> list[int]:
    """``count`` path indices from ``low`` to ``high`` inclusive, evenly spaced, without repeats."""
    if high - low + 1 <= count:
        return list(range(low, high + 1))
    step = (high - low) / (count - 1)
    return sorted({low + round(k * step) for k in range(count)})


def _fid_ratios(model, config, calib, points, budget: BitBudget, progress) -> list[float]:
    """Each point quantized and sampled beside the original in one run: their FID ratios."""
    from accel.evaluate import EvalConfig, evaluate_many

    candidates = [_quantized(model, replace(config, layer_bits=p.bits), calib) for p in points]
    evaluations = evaluate_many(
        [model, *candidates],
        EvalConfig(n=budget.fid_samples, latency_repeats=1),
        command="quantize --max-fid-ratio",
    )
    return [e.report.delta.fid_ratio for e in evaluations]
