"""W4A4 as SVDQuant does it: dynamic per-token activation groups, smoothing, a low-rank branch."""

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn as nn

import accel
from accel.core.errors import AccelError
from accel.metrics.quality import fid_setup
from accel.quant import quantize_
from accel.quant.apply import plan_layers
from accel.quant.config import W4A4, QuantConfig
from accel.quant.layers import QuantLayer, activation_quantizers
from accel.quant.low_rank import LowRankBranch
from accel.quant.quantizer import DynamicQuantizer
from accel.quant.rotation import hadamard, rotate_channels, rotation_block
from accel.quant.smoothing import smoothing_factors
from conftest import make_tiny_dit, make_tiny_unet, refused, tiny_calib

TINY_W4A4 = replace(W4A4, low_rank=4)


def relative_error(a, b):
    return ((a - b).norm() / a.norm()).item()


def test_dynamic_quantizer_puts_each_token_group_on_its_own_4bit_grid():
    x = torch.randn(2, 8, 3, 3) * torch.arange(1, 9).reshape(1, 8, 1, 1)
    quantized = DynamicQuantizer(4, group_size=4, channel_dim=1)(x)
    assert not torch.equal(quantized, x)
    groups = x.movedim(1, -1).reshape(2, 3, 3, 2, 4)
    scale = groups.abs().amax(-1, keepdim=True) / 7
    codes = quantized.movedim(1, -1).reshape(2, 3, 3, 2, 4) / scale
    assert torch.allclose(codes, codes.round(), atol=1e-4) and codes.abs().max() <= 7 + 1e-4
    # each group's largest value is kept exactly: the scale is its absmax
    assert torch.allclose(quantized.abs().amax(1), x.abs().amax(1))
    # 8 channels in groups of 3 do not divide: one group per token
    whole = DynamicQuantizer(4, group_size=3, channel_dim=-1)(x.movedim(1, -1))
    per_token = whole / (x.movedim(1, -1).abs().amax(-1, keepdim=True) / 7)
    assert torch.allclose(per_token, per_token.round(), atol=1e-4)


def test_smoothing_and_low_rank_keep_the_float_function_and_shrink_the_residual():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 8, 3, padding=1)
    x = torch.randn(4, 6, 5, 5)
    x[:, 2] *= 30  # an outlier channel
    factors = smoothing_factors(x.abs().amax((0, 2, 3)), conv.weight, 0.5)
    assert factors[2] == factors.max()
    layer = QuantLayer(conv, 4, 4, a_group_size=64, smooth=factors, rank=3)
    with torch.no_grad():
        assert torch.allclose(layer.float_forward(x), conv(x), atol=2e-3)
        smoothed = conv.weight * factors.reshape(1, -1, 1, 1)
        # the branch takes the top singular directions: the residual has less range
        assert layer.weight.abs().max() < smoothed.abs().max()
        assert torch.allclose(layer.weight + layer.low_rank.dense(), smoothed, atol=1e-2)
        assert torch.equal(layer.low_rank.up, layer.low_rank.up.half().float())
        assert 0 < relative_error(conv(x), layer(x)) < 0.2


def test_low_rank_branch_of_a_linear_layer_is_the_best_rank_r_approximation():
    weight = torch.randn(12, 10)
    branch = LowRankBranch(weight.shape, 10, None)
    residual = branch.take_from(weight)
    assert residual.abs().max() < 1e-2  # full rank: all of it (fp16 rounding left)
    x = torch.randn(3, 10)
    assert torch.allclose(branch(x), x @ branch.dense().T, atol=1e-5)


@pytest.mark.parametrize(
    "channels,group,split,block",
    [(128, 64, 0, 64), (96, 64, 0, 32), (24, 64, 0, 8), (128, 64, 40, 8), (7, 64, 0, 1)],
)
def test_rotation_blocks_stay_inside_a_group_and_a_split_part(channels, group, split, block):
    assert rotation_block(channels, group, split) == block


def test_rotation_keeps_the_function_and_spreads_an_outlier_channel_over_its_block():
    matrix = hadamard(64)
    assert torch.allclose(matrix @ matrix.T, torch.eye(64, dtype=torch.float64), atol=1e-12)
    x, weight = torch.randn(32, 128), torch.randn(16, 128)
    x[:, 5] = 40.0  # one outlier channel, as a LayerNorm's output has
    rotated_x, rotated_w = rotate_channels(x, matrix, -1), rotate_channels(weight, matrix, 1)
    assert torch.allclose(rotated_x @ rotated_w.T, x @ weight.T, atol=1e-3)
    # the outlier's group: its peak over its RMS falls from about 8 (= sqrt(64)) towards 1
    group, rotated_group = x[:, :64], rotated_x[:, :64]
    peak = group.abs().amax(-1) / group.pow(2).mean(-1).sqrt()
    rotated_peak = rotated_group.abs().amax(-1) / rotated_group.pow(2).mean(-1).sqrt()
    assert (peak > 7).all() and (rotated_peak < 3).all()
    conv_x = torch.randn(2, 64, 3, 3)
    assert torch.equal(
        rotate_channels(conv_x, matrix, 1),
        rotate_channels(conv_x.movedim(1, -1), matrix, -1).movedim(-1, 1),
    )


def test_rotation_is_planned_for_the_4bit_layers_and_changes_the_model():
    original = accel.load(make_tiny_dit())
    calib = tiny_calib(original)
    x, t, cond = original.example_inputs(4, seed=3)
    outputs = {}
    for rotate in (False, True):
        model = accel.load(make_tiny_dit())
        record = quantize_(model, replace(TINY_W4A4, rotate=rotate), calib, progress=False)
        with torch.no_grad():
            outputs[rotate] = model(x, t, cond)
    rotated = [spec["rotate"] for spec in record["layers"].values() if spec["a_bits"] == 4]
    assert rotated and all(block > 1 for block in rotated)
    assert not torch.equal(outputs[False], outputs[True])


def test_the_8bit_layers_of_w4a4_take_per_token_8bit_inputs():
    """The time embedding's and adaLN's inputs (one vector per sample) get a scale per token at run
    time, not one static scale for every timestep."""
    plan = plan_layers(accel.load(make_tiny_dit()), TINY_W4A4)
    eight_bit = {
        name: spec for name, spec in plan.items() if spec["w_bits"] == 8 and spec["a_bits"]
    }
    assert any("norm1.linear" in name for name in eight_bit)
    assert all(spec["a_bits"] == 8 and spec["a_dynamic"] == "token" for spec in eight_bit.values())
    model = accel.load(make_tiny_dit())
    quantize_(model, TINY_W4A4, tiny_calib(accel.load(make_tiny_dit())), progress=False)
    quantizers = [
        q
        for name, m in model.module.named_modules()
        if name in eight_bit and isinstance(m, QuantLayer)
        for q in m.input_quantizers
    ]
    assert len(quantizers) == len(eight_bit)
    assert all(isinstance(q, DynamicQuantizer) and q.bits == 8 for q in quantizers)


def test_a_rotated_layer_keeps_its_float_function_and_quantizes_closer_with_an_outlier():
    linear = nn.Linear(64, 32)
    x = torch.randn(48, 64)
    x[:, 3] = 30.0  # one outlier channel: 4-bit groups lose the others to its scale
    smooth = torch.ones(64)
    plain, rotated = (
        QuantLayer(linear, 4, 4, a_group_size=64, smooth=smooth, rotate=block, rank=2)
        for block in (1, 64)
    )
    with torch.no_grad():
        reference = linear(x)
        assert torch.allclose(rotated.float_forward(x), reference, atol=1e-2)
        assert relative_error(reference, rotated(x)) < relative_error(reference, plain(x))


@pytest.mark.parametrize("make", [make_tiny_unet, make_tiny_dit])
def test_each_w4a4_ingredient_changes_the_model_and_low_rank_lowers_the_error(make):
    original = accel.load(make())
    calib = tiny_calib(original)
    x, t, cond = original.example_inputs(4, seed=3)
    naive = replace(TINY_W4A4, smooth_alpha=None, low_rank=0)
    outputs = {}
    for name, config in {"naive": naive, "smooth": replace(naive, smooth_alpha=0.5)}.items():
        model = accel.load(make())
        quantize_(model, config, calib, progress=False)
        with torch.no_grad():
            outputs[name] = model(x, t, cond)
    model = accel.load(make())
    record = quantize_(model, TINY_W4A4, calib, progress=False)
    with torch.no_grad():
        reference, outputs["full"] = original(x, t, cond), model(x, t, cond)
    errors = {name: relative_error(reference, out) for name, out in outputs.items()}
    assert all(e > 0 for e in errors.values()) and errors["smooth"] != errors["naive"]
    assert errors["full"] < errors["naive"]
    four_bit = [spec for spec in record["layers"].values() if spec["a_bits"] == 4]
    assert four_bit and all(s["rank"] == 4 and s["smooth"] and s["w_bits"] == 4 for s in four_bit)
    # 8-bit-weight layers keep static 8-bit activations; the attention matmuls stay in float
    assert all(s["a_bits"] in (None, 8) for s in record["layers"].values() if s["w_bits"] == 8)
    assert all(q.bits == 8 for q in activation_quantizers(model.module))
    assert record["attention"] == []
    assert replace(TINY_W4A4, quantize_attention=True).attention_quantized


def test_w4a4_artifact_reproduces_the_model_and_stores_the_branch_in_fp16(tmp_path):
    from safetensors.torch import load_file

    original, model = accel.load(make_tiny_unet()), accel.load(make_tiny_unet())
    quantize_(model, TINY_W4A4, tiny_calib(original), progress=False)
    accel.save(model, tmp_path / "q")
    restored = accel.load(tmp_path / "q")
    x, t, _ = original.example_inputs(3, seed=5)
    with torch.no_grad():
        assert torch.equal(model(x, t), restored(x, t))
    stored = load_file(tmp_path / "q" / "model.safetensors")
    branches = [key for key in stored if ".low_rank." in key]
    assert branches and all(stored[key].dtype == torch.float16 for key in branches)


def test_a_rank_larger_than_a_layer_allows_names_the_layer():
    with pytest.raises(AccelError, match=r"exceeds what layer .* allows \(at most 8"):
        plan_layers(accel.load(make_tiny_unet()), replace(TINY_W4A4, low_rank=9))


@pytest.mark.parametrize(
    "flags,expected",
    [
        (["--act-bits", "4"], "--low-rank R"),
        (["--act-bits", "4", "--low-rank", "99"], "exceeds what layer"),
        (
            ["--act-bits", "4", "--low-rank", "4", "--smooth", "1.5"],
            "--smooth must be between 0 and 1",
        ),
        # at 8-bit activations a branch would be silently dropped (and reconstruction with it)
        (["--act-bits", "8", "--low-rank", "16"], "--low-rank works with activations below 8"),
        (["--act-bits", "8", "--smooth", "0.5"], "--smooth works with activations below 8"),
    ],
)
def test_bad_w4a4_flags_are_one_line_errors(capsys, tmp_path, tiny_unet_dir, flags, expected):
    out = str(tmp_path / "q")
    argv = ["quantize", "--model", str(tiny_unet_dir), "--bits", "4", *flags, "--out", out]
    assert expected in refused(capsys, tmp_path, *argv)


def test_config_checks_the_w4a4_fields():
    with pytest.raises(accel.ConfigError, match="low_rank"):
        QuantConfig(low_rank=-1)
    with pytest.raises(accel.ConfigError, match="a_group_size"):
        QuantConfig(a_group_size=0)
    with pytest.raises(accel.ConfigError, match="a_group_size works with activations below 8"):
        QuantConfig(a_bits=8, a_group_size=64)
    with pytest.raises(accel.ConfigError, match="rotate works with activations below 8"):
        QuantConfig(a_bits=8, rotate=True)
    assert W4A4.rotates and not replace(W4A4, low_rank=0).rotates
    assert not replace(W4A4, rotate=False).rotates
    by_bits = QuantConfig(w_bits=4, a_bits=4, low_rank=8, recon_iters=None).by_bits()
    assert (by_bits.a_group_size, by_bits.smooth_alpha, by_bits.recon_iters) == (64, 0.5, 0)


def test_feature_distance_is_zero_for_the_same_samples_and_grows_with_change():
    fid = fid_setup((1, 16, 16))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 1, 16, 16), dtype=np.uint8)
    noisy = np.clip(images + rng.normal(0, 20, images.shape), 0, 255).astype(np.uint8)
    other = rng.integers(0, 256, images.shape, dtype=np.uint8)
    assert fid.feature_distance(images, images) == 0
    assert 0 < fid.feature_distance(images, noisy) < fid.feature_distance(images, other)
