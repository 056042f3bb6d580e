import json
from dataclasses import replace

import pytest
import torch

import accel
from accel.calib.collect import CalibConfig, CalibrationSet, calibrate, collect
from accel.core.errors import AccelError, ConfigError
from accel.quant import attention, quantize_
from accel.quant.apply import plan_layers
from accel.quant.attention import QuantAttnProcessor
from accel.quant.config import W4A8, W8A8, QuantConfig
from accel.quant.layers import QuantLayer
from accel.quant.pack import pack_codes, unpack_codes
from accel.quant.quantizer import Quantizer
from accel.quant.reconstruct import reconstruct_, reconstruction_estimate
from accel.quant.split import find_split_sites
from conftest import make_tiny_dit, make_tiny_text_unet, make_tiny_unet, tiny_calib

# 4-bit weights, float activations, rounded to nearest: quantizes without a calibration set
WEIGHT_ONLY = QuantConfig(a_bits=None, rounding="nearest")


def relative_error(a, b):
    return ((a - b).norm() / a.norm()).item()


def test_split_sites_in_unet2d_and_condition_unet():
    # Tiny UNets: up block 0 (16 ch) takes 16 ch from below + 16/8 skip; up block 1 (8 ch) takes 16
    # then 8.
    expected = {
        "up_blocks.0.resnets.0": 16,
        "up_blocks.0.resnets.1": 16,
        "up_blocks.1.resnets.0": 16,
        "up_blocks.1.resnets.1": 8,
    }
    for model in (make_tiny_unet(), make_tiny_text_unet()):
        sites = find_split_sites(accel.load(model))
        assert sites == {
            f"{r}.{layer}": c for r, c in expected.items() for layer in ("conv1", "conv_shortcut")
        }
        for name, split in sites.items():
            assert 0 < split < model.get_submodule(name).in_channels
    assert find_split_sites(accel.load(make_tiny_dit())) == {}


def test_split_sites_of_the_reference_model_match_its_channel_widths():
    sites = find_split_sites(accel.load("digits"))
    assert sites["up_blocks.0.resnets.0.conv1"] == 96  # 192 = 96 from the mid block + 96 skip
    assert sites["up_blocks.1.resnets.1.conv_shortcut"] == 48
    assert sites["up_blocks.2.resnets.1.conv1"] == 24  # 48 = 24 + 24 skip
    assert len(sites) == 12


@pytest.mark.parametrize("make", [make_tiny_unet, make_tiny_text_unet, make_tiny_dit])
@pytest.mark.slow
def test_quantize_changes_outputs_but_keeps_them_close(make):
    original, model = accel.load(make()), accel.load(make())
    config = replace(W8A8, quantize_attention=True)  # float at W8A8 by default
    record = quantize_(model, config, tiny_calib(original), progress=False)
    x, t, cond = original.example_inputs(4, seed=3)
    with torch.no_grad():
        reference, quantized = original(x, t, cond), model(x, t, cond)
    assert 0 < relative_error(reference, quantized) < 0.1
    layers = [m for m in model.modules() if isinstance(m, QuantLayer)]
    assert len(layers) == len(record["layers"]) > 5
    assert (
        sum(isinstance(m, QuantAttnProcessor) for m in model.modules())
        == len(record["attention"])
        > 0
    )


def test_w4_codes_lie_on_the_4bit_grid_and_defaults_protect_the_ends():
    model = accel.load(make_tiny_unet())
    float_weight = model.module.get_submodule("down_blocks.0.resnets.0.conv1").weight.clone()
    record = quantize_(model, W4A8, tiny_calib(model), progress=False)
    bits = {name: spec["w_bits"] for name, spec in record["layers"].items()}
    # writes eps: float
    assert "conv_out" not in bits and isinstance(model.module.conv_out, torch.nn.Conv2d)
    # reads x_t: float input
    assert record["layers"]["conv_in"] == {
        "w_bits": 8,
        "a_bits": None,
        "split": 0,
    }
    assert bits["time_embedding.linear_1"] == 8
    assert bits["down_blocks.0.resnets.0.time_emb_proj"] == 8
    # read the timestep embedding: float inputs at static W8A8 only
    assert record["layers"]["time_embedding.linear_2"]["a_bits"] == 8
    fresh = accel.load(make_tiny_unet())
    assert plan_layers(fresh, W8A8)["time_embedding.linear_2"]["a_bits"] is None
    assert plan_layers(fresh, W8A8)["down_blocks.0.resnets.0.conv1"]["a_bits"] == 8
    dynamic = plan_layers(fresh, replace(W8A8, dynamic_activations=True))
    assert dynamic["time_embedding.linear_2"]["a_bits"] == 8
    assert bits["down_blocks.0.resnets.0.conv1"] == bits["mid_block.attentions.0.to_q"] == 4
    layer = model.module.get_submodule("down_blocks.0.resnets.0.conv1")
    codes = layer.weight_codes()[0]
    assert codes.min() >= -8 and codes.max() <= 7 and len(codes.unique()) > 8
    assert not torch.equal(layer.quantized_weight(), float_weight)


def test_named_last_layer_is_quantized_despite_protection():
    model = accel.load(make_tiny_unet())
    plan = plan_layers(model, QuantConfig(layer_bits={"conv_out": 6}))
    assert plan["conv_out"]["w_bits"] == 6


@pytest.mark.slow
def test_split_site_has_two_quantizers_per_operand():
    model = accel.load(make_tiny_unet())
    quantize_(model, W4A8, tiny_calib(model), progress=False)
    layer = model.module.get_submodule("up_blocks.0.resnets.0.conv_shortcut")
    assert layer.split == 16 and len(layer.weight_quantizers) == len(layer.input_quantizers) == 2
    unsplit = accel.load(make_tiny_unet())
    quantize_(unsplit, QuantConfig(split_shortcut=False), tiny_calib(unsplit), progress=False)
    assert unsplit.module.get_submodule("up_blocks.0.resnets.0.conv_shortcut").split == 0


def test_bad_patterns_and_nothing_to_quantize():
    model = accel.load(make_tiny_unet())
    with pytest.raises(AccelError, match="matches no quantizable layer"):
        quantize_(model, QuantConfig(layer_bits={"decoder.*": 6}), None, progress=False)
    with pytest.raises(AccelError, match="nothing to quantize"):
        quantize_(model, QuantConfig(skip=("*",)), None, progress=False)

    class NoLayers(torch.nn.Module):
        def forward(self, x, t):
            return x * 0.5

    with pytest.raises(AccelError, match="no Conv2d or Linear"):
        quantize_(
            accel.Denoiser(NoLayers(), {}, sample_shape=(1, 4, 4)), W8A8, None, progress=False
        )


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(w_bits=1), "w_bits"),
        (dict(w_bits=9), "w_bits"),
        (dict(a_bits=3), "a_bits"),
        (dict(a_bits=17), "a_bits"),
        (dict(w_bits=4.0), "w_bits"),
        (dict(group_size=0), "group_size"),
        (dict(layer_bits={"conv_out": 1}), "layer_bits"),
        (dict(skip="conv_out"), "skip"),
    ],
)
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ConfigError) as error:
        QuantConfig(**kwargs)
    assert error.value.field == field


def test_config_round_trips_through_json():
    config = QuantConfig(w_bits=3, layer_bits={"conv_out": 8}, skip=("mid_block.*",))
    assert QuantConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_presets_cannot_be_changed():
    with pytest.raises(AttributeError):
        W4A8.recon_iters = 500
    with pytest.raises(TypeError):
        QuantConfig(layer_bits={"conv_out": 8}).layer_bits["conv_in"] = 4
    assert W4A8.recon_iters == 0 and replace(W4A8, recon_iters=500).recon_iters == 500


def test_the_stage_rounds_by_weight_bits_unless_told():
    from accel.measure.quantize import ablation_configs
    from accel.quant.config import RECON_ITERS, STAGE_DEFAULT

    def resolved(**changes):
        config = replace(STAGE_DEFAULT, **changes).by_bits()
        return config.rounding, config.recon_iters

    assert resolved() == ("gptq", 0)
    assert resolved(w_bits=8) == ("nearest", 0)
    assert resolved(recon_iters=7) == resolved(w_bits=8, recon_iters=7) == ("adaround", 7)
    assert resolved(rounding="adaround") == ("adaround", RECON_ITERS)
    assert resolved(rounding="gptq-adaround", recon_iters=7) == ("gptq-adaround", 7)
    assert resolved(rounding="gptq-adaround") == ("gptq-adaround", RECON_ITERS)
    assert resolved(rounding="nearest") == ("nearest", 0)
    assert resolved(a_bits=4, low_rank=8) == ("gptq", 0)  # on the residual: SVDQuant+GPTQ
    with pytest.raises(accel.ConfigError, match="learns the rounding itself"):
        replace(STAGE_DEFAULT, rounding="gptq", recon_iters=5)
    # `accel quantize --bits 8 --ablation`: the W4A8 rows end in the 4-bit default's rounding, and
    # the W8A8 row is what the stage runs at 8 bits
    rows = ablation_configs(replace(STAGE_DEFAULT, w_bits=8), CalibConfig())
    assert rows[-2][0] == "+ GPTQ rounding" and rows[-2][1].weight_rounding == "gptq"
    assert rows[-2][1].bias_correction and not rows[-3][1].recon_iters
    assert rows[-1][1].w_bits == 8 and rows[-1][1].weight_rounding == "nearest"
    assert rows[-1][0] == "W8A8 (same recipe, calibration only)" and rows[-1][1].bias_correction
    # one ingredient at a time: bias correction enters after the split shortcut, not before
    names = [name for name, _, _ in rows]
    assert not rows[0][1].bias_correction and names.index("+ bias correction") == 4
    assert rows[0][1].weight_rounding == "nearest"
    adaround = ablation_configs(replace(STAGE_DEFAULT, recon_iters=9), CalibConfig())
    assert adaround[-2][0] == "+ reconstruction (9 iters/block)"
    hybrid = replace(STAGE_DEFAULT, rounding="gptq-adaround", recon_iters=9)
    rows = ablation_configs(hybrid, CalibConfig())
    assert rows[-2][0] == "+ reconstruction from GPTQ (9 iters/block)"
    assert rows[-2][1].weight_rounding == "gptq-adaround"


@pytest.mark.parametrize("bits,keys,recorded", [(8, {}, 0), (4, {"rounding": "adaround"}, 2)])
def test_the_quantize_stage_records_the_reconstruction_it_ran(
    bits, keys, recorded, monkeypatch, tmp_path
):
    import accel.quant.config

    monkeypatch.setenv("ACCEL_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(accel.quant.config, "RECON_ITERS", 2)  # 500 by default: minutes
    ran = []

    def reconstruct(*args, **kwargs):
        ran.append(args[3])
        unit = {"block": True, "capture_s": 1, "learn_s": 2, "rounded_weights": 10}
        ended = {"undecided": 0.3, "loss": 1e-3, "hard_loss": 2e-3}
        return {"units": ["a", "b"], "seconds": [{**unit, **ended}]}

    monkeypatch.setattr("accel.quant.reconstruct.reconstruct_", reconstruct)
    model = accel.load(make_tiny_unet(), sampling={"steps": 2})
    result = accel.run_stage(
        "quantize", model, bits=bits, act_bits=8, calib_samples=1, progress=False, **keys
    )
    assert result.record["config"]["recon_iters"] == recorded
    assert ran == ([recorded] if recorded else [])
    times = {"units": 1, "blocks": 1, "capture_s": 1, "learn_s": 2, "s_per_block": 3}
    times |= {"undecided": 0.3, "soft_loss": 1e-3, "hard_loss": 2e-3}
    assert result.record.get("reconstruction") == (times if recorded else None)


def test_version_1_configs_with_calibration_settings_are_upgraded():
    written_by_0_1 = {
        **{k: v for k, v in W4A8.to_dict().items() if k != "version"},
        "calib_policy": "uniform",
        "calib_samples": 64,
        "calib_steps": 50,
        "calib_every": 5,
    }
    assert QuantConfig.from_dict(written_by_0_1) == W4A8
    with pytest.raises(ConfigError, match="calib_every is not a setting"):
        QuantConfig.from_dict({**written_by_0_1, "version": 2})
    with pytest.raises(ConfigError, match="version"):
        QuantConfig.from_dict({**W4A8.to_dict(), "version": 3})


def test_quantizer_errors_are_accel_errors():
    with pytest.raises(AccelError, match="bits"):
        Quantizer(1)
    with pytest.raises(AccelError, match="range_method"):
        Quantizer(8, range_method="max")


def test_activation_quantization_needs_a_calibration_set():
    with pytest.raises(AccelError, match="calibrate"):
        quantize_(accel.load(make_tiny_unet()), W8A8, None, progress=False)


def test_quantizing_twice_is_refused_and_leaves_the_model_alone():
    model = accel.load(make_tiny_unet())
    quantize_(model, WEIGHT_ONLY, None, progress=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(AccelError, match="cannot quantize this model: it went through quantize"):
        quantize_(model, WEIGHT_ONLY, None, progress=False)
    assert len(model.transforms) == 1 and all(
        torch.equal(v, model.state_dict()[k]) for k, v in before.items()
    )


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
def test_pack_unpack_round_trip(bits):
    values = torch.randint(0, 1 << bits, (101,))
    packed = pack_codes(values, bits)
    expected = {2: 26, 3: 51, 4: 51}.get(bits, 101)  # 2 bits: four per byte; 3-4: two
    assert packed.dtype == torch.uint8 and packed.numel() == expected
    assert torch.equal(unpack_codes(packed, bits, 101), values.to(torch.int32))


@pytest.mark.parametrize(
    "config", [W4A8, W8A8, QuantConfig(w_bits=4, w_symmetric=False, group_size=8)]
)
@pytest.mark.slow
def test_artifact_reproduces_quantized_model_exactly(tmp_path, config):
    original = accel.load(make_tiny_unet())
    model = accel.load(make_tiny_unet())
    quantize_(model, config, tiny_calib(original), progress=False)
    accel.save(model, tmp_path / "q")
    restored = accel.load(tmp_path / "q")
    x, t, _ = original.example_inputs(3, seed=5)
    with torch.no_grad():
        assert torch.equal(model(x, t), restored(x, t))
    assert restored.transforms[0]["name"] == "quantize"
    fp32_bytes = sum(p.numel() * 4 for p in original.parameters())
    stored = (tmp_path / "q" / "model.safetensors").stat().st_size
    # tiny model: headers and 8-bit ends weigh a lot
    assert stored < fp32_bytes * (0.5 if config.w_bits == 4 else 0.65)


def test_loading_a_quantized_artifact_searches_no_ranges(tmp_path, monkeypatch):
    """The stored scales are loaded: fitting weight ranges again (an MSE search per layer) would be
    thrown away."""
    model = accel.load(make_tiny_unet())
    quantize_(model, WEIGHT_ONLY, None, progress=False)
    accel.save(model, tmp_path / "q")
    fits = []
    monkeypatch.setattr(Quantizer, "fit", lambda self, x: fits.append(self))
    accel.load(tmp_path / "q")
    assert fits == []


@pytest.mark.slow
def test_w4_artifact_of_reference_model_is_close_to_an_eighth(tmp_path):
    original = accel.load("digits")
    model = accel.load("digits")
    quantize_(model, WEIGHT_ONLY, None, progress=False)
    accel.save(model, tmp_path / "q")
    ratio = (tmp_path / "q" / "model.safetensors").stat().st_size / original.weights_bytes
    # 4-bit codes for most weights; 8-bit ends, biases, norms and scales in fp32
    assert 0.12 < ratio < 0.17


def test_calibration_policies_sizes_and_timesteps():
    denoiser = accel.load(make_tiny_unet(), sampling={"steps": 10})
    sets = {
        p: collect(denoiser, CalibConfig(policy=p, samples=3, every=5), progress=False)
        for p in ("uniform", "normal", "last")
    }
    assert {p: len(s) for p, s in sets.items()} == {"uniform": 6, "normal": 6, "last": 6}
    assert len(set(sets["uniform"].t.tolist())) == 2 and set(sets["last"].t.tolist()) == {0}
    assert sets["uniform"].x.shape == (6, 3, 8, 8)


def test_calibration_follows_the_model_s_sampler():
    # a plain module: DDPM's default 1,000 steps
    four = accel.load(make_tiny_unet(), sampling={"steps": 4})
    dpm = accel.load(make_tiny_unet(), sampling={"name": "dpm++", "steps": 6})
    assert sorted(
        set(collect(four, CalibConfig(samples=1, every=1), progress=False).t.tolist())
    ) == [0, 250, 500, 750]
    on_dpm = collect(dpm, CalibConfig(samples=1, every=1), progress=False)
    assert len(on_dpm) == 6 and on_dpm.meta["sampler"]["name"] == "dpm++"


def test_calibration_set_is_stored_reused_and_checked(tmp_path):
    denoiser = accel.load(make_tiny_unet(), sampling={"steps": 4})
    path = tmp_path / "calib.safetensors"
    config = CalibConfig(samples=2, every=2)
    first = calibrate(denoiser, config, path, progress=False)
    again = calibrate(denoiser, config, path, progress=False)
    assert torch.equal(first.x, again.x) and again.meta == first.meta
    other_weights = accel.load(make_tiny_unet(), sampling={"steps": 4})
    with torch.no_grad():
        other_weights.module.conv_in.weight.add_(0.01)
    with pytest.raises(AccelError, match="recorded with model"):
        calibrate(other_weights, config, path, progress=False)
    other_shape = accel.load(make_tiny_unet(sample_size=16), sampling={"steps": 4})
    with pytest.raises(AccelError, match="recorded with sample_shape"):
        calibrate(other_shape, config, path, progress=False)
    with pytest.raises(AccelError, match="recorded with policy"):
        calibrate(denoiser, replace(config, policy="last"), path, progress=False)
    with pytest.raises(AccelError, match="recorded with sampler"):
        calibrate(accel.load(make_tiny_unet(), sampling={"steps": 5}), config, path, progress=False)
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(AccelError, match="not an accel calibration set"):
        CalibrationSet.load(tmp_path / "junk.safetensors")


def test_text_conditioning_is_recorded_in_the_calibration_set():
    model = accel.load(make_tiny_text_unet(), sampling={"steps": 2})
    calib = collect(model, CalibConfig(samples=2, every=1), progress=False)
    assert calib.cond.shape == (4, 77, 16)


def test_cached_inference_weight_follows_weight_and_scale_changes():
    model = accel.load(make_tiny_unet())
    quantize_(model, WEIGHT_ONLY, None, progress=False)
    layer = model.module.get_submodule("down_blocks.0.resnets.0.conv1")
    x = torch.randn(1, 8, 8, 8)

    def uncached():
        return torch.nn.functional.conv2d(x, layer.quantized_weight(), layer.bias, padding=1)

    with torch.no_grad():
        first = layer(x)
        torch.testing.assert_close(first, uncached(), rtol=0, atol=0)
        layer.weight.mul_(0.5)  # in place: the cache must notice
        torch.testing.assert_close(layer(x), uncached(), rtol=0, atol=0)
        layer.weight_quantizers[0].scale.data = (
            layer.weight_quantizers[0].scale.data * 4
        )  # a replaced tensor
        coarse = layer(x)
        torch.testing.assert_close(coarse, uncached(), rtol=0, atol=0)
    assert not torch.allclose(first, coarse)


def calibration_error(original, model, calib) -> float:
    with torch.no_grad():
        return relative_error(original(calib.x, calib.t, None), model(calib.x, calib.t, None))


@pytest.mark.slow
def test_reconstruction_learns_rounding_that_lowers_the_error():
    original = accel.load(make_tiny_unet())
    calib = tiny_calib(original)
    config = QuantConfig(w_bits=3, a_bits=8, rounding="nearest")
    plain, reconstructed = accel.load(make_tiny_unet()), accel.load(make_tiny_unet())
    quantize_(plain, config, calib, progress=False)
    quantize_(
        reconstructed, replace(config, rounding="adaround", recon_iters=60), calib, progress=False
    )
    name = "down_blocks.0.resnets.0.conv1"
    nearest = plain.module.get_submodule(name).weight_codes()[0]
    learned = reconstructed.module.get_submodule(name).weight_codes()[0]
    # up or down, one step at most
    assert (nearest != learned).any() and (nearest - learned).abs().max() <= 1
    assert calibration_error(original, reconstructed, calib) < 0.9 * calibration_error(
        original, plain, calib
    )


def test_captures_stop_the_forward_pass_at_the_unit():
    from accel.quant.capture import capture_inputs, capture_outputs

    model = accel.load(make_tiny_unet())
    x, t, cond = model.example_inputs(2, seed=0)
    unit = "down_blocks.0.resnets.0"
    after = []
    model.module.conv_out.register_forward_hook(lambda *args: after.append(1))
    with torch.no_grad():
        expected = model.module.get_submodule(unit)(*_first_call_args(model, unit, x, t, cond))
    after.clear()
    run = lambda network, batch: model(*batch)  # noqa: E731
    batches = [(x, t, cond), (x, t, cond)]
    inputs = capture_inputs(model.module, unit, batches, run)
    outputs = capture_outputs(model.module, unit, batches, run)
    assert len(inputs) == len(outputs) == 2 and after == []  # nothing past the unit ran
    torch.testing.assert_close(outputs[0], expected)


def _first_call_args(model, unit, x, t, cond):
    seen = []
    handle = model.module.get_submodule(unit).register_forward_pre_hook(
        lambda m, args: seen.append(args)
    )
    with torch.no_grad():
        model(x, t, cond)
    handle.remove()
    return seen[0]


def test_reconstructing_up_to_the_first_block_times_it_and_leaves_the_rest():
    original = accel.load(make_tiny_unet())
    calib = tiny_calib(original)
    model = accel.load(make_tiny_unet())
    quantize_(model, QuantConfig(w_bits=3, a_bits=8), calib, progress=False)
    codes = {
        name: layer.weight_codes()[0].clone()
        for name, layer in model.module.named_modules()
        if isinstance(layer, QuantLayer)
    }
    timed = reconstruct_(model, calib, original.module, iters=20, progress=False, max_blocks=1)
    *layers, block = timed["seconds"]
    assert block["block"] and not any(layer["block"] for layer in layers)
    assert [t["unit"] for t in timed["seconds"]] == timed["units"][: len(layers) + 1]
    changed = {
        name
        for name, layer in model.module.named_modules()
        if isinstance(layer, QuantLayer) and (layer.weight_codes()[0] != codes[name]).any()
    }
    timed_units = [t["unit"] for t in timed["seconds"]]
    assert changed and all(
        any(name == unit or name.startswith(unit + ".") for unit in timed_units) for name in changed
    )
    assert any(name.startswith(block["unit"] + ".") for name in changed)
    estimate = reconstruction_estimate(timed, timed_iters=20, iters=500)
    untimed = len(timed["units"]) - len(timed["seconds"])
    assert untimed > 0 and estimate["estimated_s"] > untimed * 500 * block["learn_s"] / 20


def test_attention_in_slices_computes_the_same_numbers(monkeypatch):
    model = accel.load(make_tiny_text_unet())
    quantize_(model, W8A8, tiny_calib(model), progress=False)
    x, t, cond = model.example_inputs(3)
    with torch.no_grad():
        whole = model(x, t, cond)
        monkeypatch.setattr(attention, "SCORES_SLICE_BYTES", 1)  # one (image, head) pair at a time
        sliced = model(x, t, cond)
    torch.testing.assert_close(sliced, whole, rtol=0, atol=1e-6)


def _mean_errors(model, calib):
    """Each quantized layer's mean output error per channel over ``calib``."""
    from accel.quant.bias_correction import _ErrorMean

    layers = [m for m in model.module.modules() if isinstance(m, QuantLayer) and m.bias is not None]
    means = [_ErrorMean() for _ in layers]
    hooks = [layer.register_forward_hook(mean) for layer, mean in zip(layers, means)]
    with torch.no_grad():
        for x, t, cond in calib.batches(64):
            model(x, t, model.to_model(cond))
    for hook in hooks:
        hook.remove()
    return [mean.mean() for mean in means]


def test_bias_correction_removes_each_layers_mean_error_on_the_calibration_set():
    original = accel.load(make_tiny_unet())
    calib = tiny_calib(original)
    corrected, kept = accel.load(make_tiny_unet()), accel.load(make_tiny_unet())
    config = QuantConfig(w_bits=4, a_bits=8, rounding="nearest")  # bias correction alone
    record = quantize_(corrected, config, calib, progress=False)
    quantize_(kept, replace(config, bias_correction=False), calib, progress=False)
    assert "bias_correction" in record and record["bias_correction"]["layers"] > 0
    before = _mean_errors(kept, calib)
    # the hooks compare with each layer's own bias; the corrected layers' error is against the
    # bias they started from: measured error minus the shift subtracted from it
    shifts = [
        k.bias - c.bias
        for k, c in zip(kept.module.modules(), corrected.module.modules())
        if isinstance(c, QuantLayer) and c.bias is not None
    ]
    after = [e - s for e, s in zip(_mean_errors(corrected, calib), shifts)]
    assert max(s.abs().max().item() for s in shifts) > 0
    # each layer's input moves once the layers before it are corrected: a remainder, not zero
    assert sum(e.abs().sum() for e in after) < 0.5 * sum(e.abs().sum() for e in before)
    reconstructed = quantize_(
        accel.load(make_tiny_unet()),
        QuantConfig(w_bits=4, a_bits=8, recon_iters=1),
        calib,
        progress=False,
    )
    assert "bias_correction" not in reconstructed  # reconstruction fits the same error itself
