"""GPTQ rounding: the default for weights below 8 bits."""

import copy
import json
from dataclasses import replace

import pytest
import torch

import accel
from accel.quant import quantize_
from accel.quant.config import W4A8, QuantConfig
from accel.quant.gptq import gptq
from accel.quant.layers import QuantLayer
from conftest import make_tiny_dit, make_tiny_unet, run_cli, tiny_calib

NEAREST = QuantConfig(w_bits=4, a_bits=8, rounding="nearest")


def _grid(scale: torch.Tensor):
    def on_grid(values, columns):
        return torch.clamp(torch.round(values / scale[:, None]), -8, 7) * scale[:, None]

    return on_grid


def test_gptq_leaves_less_output_error_than_nearest_and_stays_on_the_grid():
    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn(16, 16, generator=generator, dtype=torch.float64)
    inputs = mixing @ torch.randn(16, 400, generator=generator, dtype=torch.float64)  # correlated
    weight = torch.randn(6, 16, generator=generator, dtype=torch.float64)
    scale = weight.abs().amax(1) / 7
    hessian = inputs @ inputs.T
    rounded, before_rounding = gptq(weight, hessian, _grid(scale))
    nearest = _grid(scale)(weight, None)
    # the compensated weights GPTQ rounded: their rounding to nearest is its rounding
    assert torch.equal(_grid(scale)(before_rounding, None), rounded)
    assert not torch.equal(before_rounding, weight)
    codes = rounded / scale[:, None]
    assert torch.allclose(codes, codes.round()) and codes.min() >= -8 and codes.max() <= 7
    assert not torch.equal(rounded, nearest)

    def output_error(q):
        return ((weight - q) @ inputs).pow(2).sum()

    assert output_error(rounded) < 0.7 * output_error(nearest)


def _codes(model) -> dict[str, torch.Tensor]:
    return {
        name: torch.cat([c.flatten() for c in layer.weight_codes()])
        for name, layer in model.module.named_modules()
        if isinstance(layer, QuantLayer) and layer.w_bits < 8
    }


@pytest.mark.parametrize("make", [make_tiny_unet, make_tiny_dit])
def test_w4a8_rounds_by_gptq_closer_to_the_original_than_nearest(make):
    original = accel.load(make())
    calib = tiny_calib(original)
    models = {name: copy.deepcopy(original) for name in ("gptq", "nearest")}
    record = quantize_(models["gptq"], W4A8, calib, progress=False)
    quantize_(models["nearest"], NEAREST, calib, progress=False)
    gptq_codes, nearest_codes = _codes(models["gptq"]), _codes(models["nearest"])
    assert record["gptq"]["layers"] == len(gptq_codes) > 0
    assert record["gptq"]["error_vs_nearest_median"] < 1
    assert any(not torch.equal(gptq_codes[n], nearest_codes[n]) for n in gptq_codes)
    for layer in models["gptq"].module.modules():
        if isinstance(layer, QuantLayer) and layer.w_bits < 8:  # on the grid: rounding again
            assert torch.equal(layer.quantized_weight(), layer.weight)
    x, t, cond = calib.x[:8], calib.t[:8], None if calib.cond is None else calib.cond[:8]
    with torch.no_grad():
        reference = original(x, t, cond)
        errors = {n: (m(x, t, cond) - reference).norm().item() for n, m in models.items()}
    assert errors["gptq"] < errors["nearest"]


def test_gptq_adaround_learns_the_rounding_from_gptqs_compensated_weights(monkeypatch):
    import accel.quant.reconstruct as reconstruct

    original = accel.load(make_tiny_dit())
    calib = tiny_calib(original)
    starts = []

    def recording(denoiser, *args, **kwargs):  # the weights the reconstruction starts from
        starts.append({n: layer.weight.clone() for n, layer in _low_bit(denoiser)})
        return reconstruct_(denoiser, *args, **kwargs)

    reconstruct_ = reconstruct.reconstruct_
    monkeypatch.setattr(reconstruct, "reconstruct_", recording)
    config = replace(W4A8, rounding="gptq-adaround", recon_iters=20)
    models = {name: copy.deepcopy(original) for name in ("gptq", "gptq-adaround")}
    quantize_(models["gptq"], W4A8, calib, progress=False)
    record = quantize_(models["gptq-adaround"], config, calib, progress=False)
    assert record["gptq"]["layers"] > 0 and record["reconstruction"]["blocks"] > 0
    assert "bias_correction" not in record  # the reconstruction fits what it would correct
    gptq_weights = {name: layer.weight for name, layer in _low_bit(models["gptq"])}
    hybrid_layers = dict(_low_bit(models["gptq-adaround"]))
    for name, start in starts[0].items():  # off the grid, and GPTQ's rounding when rounded
        assert not torch.equal(start, gptq_weights[name])
        rounded = hybrid_layers[name].weight_quantizers[0](start)
        assert torch.allclose(rounded, gptq_weights[name], atol=1e-6)
    for layer in hybrid_layers.values():  # rounded again, and on the grid
        assert torch.equal(layer.quantized_weight(), layer.weight)
    changed = _codes(models["gptq-adaround"]), _codes(models["gptq"])
    assert any(not torch.equal(changed[0][n], changed[1][n]) for n in changed[0])


def _low_bit(model):
    return [
        (name, layer)
        for name, layer in model.module.named_modules()
        if isinstance(layer, QuantLayer) and layer.w_bits < 8
    ]


def test_gptq_codes_do_not_move_with_the_thread_count():
    original = accel.load(make_tiny_unet())
    calib = tiny_calib(original)
    codes, before = [], torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            model = copy.deepcopy(original)
            quantize_(model, W4A8, calib, progress=False)
            codes.append(_codes(model))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(codes[0][name], codes[1][name]) for name in codes[0])


def test_gptq_needs_a_calibration_set_even_with_dynamic_scales():
    dynamic = QuantConfig(w_bits=4, a_bits=8, dynamic_activations=True, bias_correction=False)
    assert dynamic.needs_calibration
    assert not QuantConfig(w_bits=8, a_bits=8, dynamic_activations=True).needs_calibration
    with pytest.raises(accel.AccelError, match="need a calibration set"):
        quantize_(accel.load(make_tiny_dit()), dynamic, None, progress=False)


@pytest.mark.slow
def test_accel_quantize_reports_its_gptq_rounding(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ACCEL_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "q4"
    tiny = ["--n", "16", "--steps", "3", "--batch-size", "16", "--calib-samples", "2"]
    code, stdout, _ = run_cli(capsys, "quantize", "--bits", "4", *tiny, "--out", str(out), "--json")
    report = json.loads(stdout)
    assert code == 0 and report["gptq"]["layers"] > 0 and "reconstruction" not in report
    assert "## GPTQ rounding" in (out / "report.md").read_text()
