"""``python -m bench.float_order``: the nudge must stay within the last bit, and the comparison must
see a changed code or scale (a comparison that always reads zero would hide the float order's
effect)."""

import copy

import torch

import accel
from accel.quant import quantize_
from accel.quant.config import W4A8
from accel.quant.layers import QuantLayer, activation_quantizers
from bench.float_order import differences, eps_error, nudged
from conftest import make_tiny_unet, tiny_calib


def test_nudge_changes_about_half_the_inputs_by_one_bit_at_most():
    calib = tiny_calib(accel.load(make_tiny_unet()))
    moved = nudged(calib)
    changed = moved.x != calib.x
    assert 0.4 < changed.float().mean() < 0.6
    relative = ((moved.x - calib.x).abs() / calib.x.abs())[changed]
    assert relative.max() <= 2.0**-23  # one unit in the last place of a float32
    assert torch.equal(moved.t, calib.t)


def test_differences_count_changed_codes_and_scales():
    original = accel.load(make_tiny_unet())
    first = copy.deepcopy(original)
    quantize_(first, W4A8, tiny_calib(original), progress=False)
    second = copy.deepcopy(first)
    assert differences(first, second)["codes_changed_pct"] == 0
    assert eps_error(original, first, tiny_calib(original)) > 0

    layer = next(m for m in second.module.modules() if isinstance(m, QuantLayer))
    step = layer.weight_quantizers[0].scale.reshape(-1)[0]
    with torch.no_grad():
        flat = layer.weight.view(-1)
        flat[0] += step if flat[0] < 0 else -step  # one code moved by one step, inside the grid
        activation_quantizers(second.module)[0].scale.mul_(1.001)
    moved = differences(first, second)
    assert moved["codes_changed_pct"] > 0
    assert moved["scales_changed"].startswith("1 of ")
    assert moved["scale_change_max"] > 0
