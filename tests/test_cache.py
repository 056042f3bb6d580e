"""Feature caching (accel.cache_): the full-step schedules, DeepCache's split of diffusers UNets (a
cached step from its own input's feature is the full step exactly; from another step's feature it is
not), the step hook the sampler drives, the artifact, composing with quantization and ONNX export,
diffusers' attention cache on transformers, and refusals."""

import copy

import pytest
import torch

import accel
from accel.cache.schedule import full_steps
from accel.cache.unet import capturing, reusing
from accel.core.errors import AccelError
from accel.core.sampling_spec import SamplingSpec
from accel.metrics.size import count_macs, counted_macs, macs_per_image
from conftest import make_tiny_dit, make_tiny_text_unet, make_tiny_unet


def _digits(steps: int = 10):
    model = accel.load("digits")
    model.sampling = SamplingSpec(steps=steps)
    return model


@pytest.mark.parametrize("interval", [1, 2, 3, 5, 10])
@pytest.mark.parametrize("steps", [10, 50])
def test_both_schedules_run_the_same_number_of_full_steps_starting_at_step_0(interval, steps):
    uniform = full_steps(steps, accel.CacheConfig(interval=interval, schedule="uniform"))
    quadratic = full_steps(steps, accel.CacheConfig(interval=interval, schedule="quadratic"))
    assert uniform == tuple(range(0, steps, interval))
    assert len(quadratic) == len(uniform) and quadratic[0] == 0
    assert list(quadratic) == sorted(set(quadratic)) and quadratic[-1] < steps


def test_the_quadratic_schedule_crowds_its_full_steps_around_the_center():
    steps = full_steps(50, accel.CacheConfig(interval=5, schedule="quadratic", center=0.4))
    near = [s for s in steps if abs(s - 0.4 * 49) <= 5]
    far = [s for s in steps if abs(s - 0.4 * 49) > 15]
    assert len(near) >= 3 and len(near) > len(far) - 1
    gaps = [b - a for a, b in zip(steps, steps[1:])]
    assert min(gaps) == 1 and max(gaps) >= 8  # uniform would be 5 everywhere


@pytest.mark.parametrize("make, cond", [(make_tiny_unet, None), (make_tiny_text_unet, "text")])
def test_a_cached_step_is_the_full_step_given_its_own_feature_and_differs_given_another(make, cond):
    model = accel.load(make(), "cpu")
    x, t, c = model.example_inputs(2, t=500)
    x2, t2, c2 = model.example_inputs(2, t=300, seed=1)
    network = model.module
    full_macs = count_macs(model)
    with torch.inference_mode():
        full = model(x, t, c)
        for branch in range(len(network.down_blocks)):
            with capturing(network, branch) as own:
                assert torch.equal(model(x, t, c), full)
            with capturing(network, branch) as other:
                model(x2, t2, c2)
            with reusing(network, branch, own.feature):
                # the stand-ins keep every live skip feature in place
                assert torch.equal(model(x, t, c), full)
            with reusing(network, branch, other.feature):
                assert (model(x, t, c) - full).abs().max() > 1e-4
            with reusing(network, branch, own.feature[:1]):
                assert (
                    counted_macs(lambda: model(x[:1], t[:1], None if c is None else c[:1]))
                    < full_macs
                )


def test_the_network_is_unchanged_at_rest_even_after_an_error_inside_a_cached_call():
    model = _digits()
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    x, t, _ = model.example_inputs(2)
    with capturing(model.module, 0) as captured:
        model(x, t)
    with pytest.raises(RuntimeError), reusing(model.module, 0, captured.feature):
        model(x[:, :0], t)  # no channels: the shallow path fails midway
    assert not any("forward" in vars(m) for m in model.module.modules())
    assert all(torch.equal(before[k], v) for k, v in model.module.state_dict().items())


def test_caching_changes_samples_and_costs_what_its_schedule_says():
    plain, cached = _digits(), _digits()
    record = accel.cache_(cached, accel.CacheConfig(interval=3, schedule="uniform"))
    assert record["full_steps"] == [0, 3, 6, 9] and [t["name"] for t in cached.transforms] == [
        "cache"
    ]
    a, b = (
        accel.sample(plain, 4, progress=False).images,
        accel.sample(cached, 4, progress=False).images,
    )
    assert (a - b).abs().max() > 1e-3
    assert cached.hooks["cache"].counts == {"full": 4, "cached": 6}
    with capturing(cached.module, 0) as captured:
        cached(*cached.example_inputs(1)[:2])
    with reusing(cached.module, 0, captured.feature):
        cached_macs = count_macs(cached)
    assert macs_per_image(cached) == 4 * count_macs(plain) + 6 * cached_macs
    interval_one = _digits()
    accel.cache_(interval_one, accel.CacheConfig(interval=1))
    # every step full: no change
    assert torch.equal(accel.sample(interval_one, 4, progress=False).images, a)


def test_the_same_trajectory_twice_gives_the_same_samples_each_batch_starting_fresh():
    model = _digits()
    accel.cache_(model, accel.CacheConfig(interval=3))
    one = accel.sample(model, 6, batch_size=6, progress=False).images
    again = accel.sample(model, 6, batch_size=3, progress=False).images
    assert torch.allclose(one, again, atol=1e-5)


@pytest.mark.slow
def test_a_cached_artifact_loads_with_its_cache(tmp_path):
    model = _digits()
    accel.cache_(model, accel.CacheConfig(interval=2, branch=1, schedule="quadratic"))
    accel.save(model, tmp_path / "c2")
    loaded = accel.load(tmp_path / "c2")
    assert [t["name"] for t in loaded.transforms] == ["cache"] and "cache" in loaded.hooks
    assert torch.equal(
        accel.sample(loaded, 3, progress=False).images,
        accel.sample(model, 3, progress=False).images,
    )
    assert macs_per_image(loaded) == macs_per_image(model) < 10 * count_macs(loaded)


@pytest.mark.slow
def test_caching_then_quantizing_keeps_the_cache_and_exports_two_graphs(tmp_path):
    from accel.export.onnx import export_onnx
    from conftest import tiny_calib

    model = _digits(6)
    accel.cache_(model, accel.CacheConfig(interval=3, schedule="uniform"))
    accel.quantize_(
        model,
        accel.QuantConfig(w_bits=8, a_bits=8, recon_iters=0),
        tiny_calib(model),
        progress=False,
    )
    assert [t["name"] for t in model.transforms] == ["cache", "quantize"]
    record = export_onnx(model, tmp_path / "cq.onnx")
    assert (
        record["form"] == "qdq"
        and record["parity"]["met"]
        and record["cached_graph"]["parity"]["met"]
    )
    assert (tmp_path / "cq.cached.onnx").is_file()
    exported = accel.load(tmp_path / "cq.onnx")
    assert type(exported.module).__name__ == "OrtCachedModule" and "cache" in exported.hooks
    assert macs_per_image(exported) == macs_per_image(model)
    counts = exported.hooks["cache"].counts
    counts.update(full=0, cached=0)
    images = accel.sample(exported, 2, progress=False).images
    assert counts == {"full": 2, "cached": 4}
    assert (
        images - accel.sample(model, 2, progress=False).images
    ).abs().max() < 0.2  # Q/DQ rounding, 6 steps


@pytest.mark.slow
def test_a_float_export_samples_in_onnx_runtime_as_pytorch_does(tmp_path):
    from accel.export.onnx import export_onnx

    model = _digits()
    accel.cache_(model, accel.CacheConfig(interval=3))
    export_onnx(model, tmp_path / "c3.onnx")
    exported = accel.load(tmp_path / "c3.onnx")
    torch_images, ort_images = (
        accel.sample(m, 3, progress=False).images for m in (model, exported)
    )
    assert (torch_images - ort_images).abs().max() < 1e-4  # float graphs: operator order only
    with pytest.raises(AccelError, match="cached-step graph of a cached model: load .*/c3.onnx,"):
        accel.load(tmp_path / "c3.cached.onnx")
    (tmp_path / "c3.cached.onnx").unlink()
    with pytest.raises(AccelError, match="missing"):
        accel.load(tmp_path / "c3.onnx")


def test_what_cannot_be_cached_is_refused_before_anything_changes():
    with pytest.raises(accel.ConfigError, match="interval"):
        accel.CacheConfig(interval=0)
    with pytest.raises(accel.ConfigError, match="schedule"):
        accel.CacheConfig(schedule="cubic")
    model = _digits()
    with pytest.raises(AccelError, match="CacheConfig.branch 3 does not exist.*branches 0-2"):
        accel.cache_(model, accel.CacheConfig(branch=3))
    student = _digits(steps=2)
    with pytest.raises(
        AccelError,
        match="CacheConfig.interval 3 is more than the 2 "
        "steps this model samples in.*caching gives nothing",
    ):
        accel.cache_(student, accel.CacheConfig(interval=3))
    dit = accel.load(make_tiny_dit(), "cpu")
    with pytest.raises(AccelError, match="2 blocks cannot stay live.*with 2 blocks: give 0-1"):
        accel.cache_(dit, accel.CacheConfig(branch=2))
    with pytest.raises(AccelError, match="first-block decides on a transformer's first block"):
        accel.cache_(model, accel.CacheConfig(method="first-block"))
    assert model.transforms == [] and model.hooks == {} and student.hooks == {} and dit.hooks == {}


def test_cuda_graphs_and_tensorrt_refuse_a_cached_model(tmp_path):
    from accel.export.trt import export_trt
    from accel.optimize.apply import optimize

    model = _digits()
    accel.cache_(model, accel.CacheConfig())
    with pytest.raises(AccelError, match="two graphs"):
        export_trt(model, tmp_path / "c.plan")
    with pytest.raises(AccelError, match="two ways"):
        optimize(model, accel.OptimizeConfig(cuda_graph=True))


def _dit(steps: int = 12, guidance: float = 3.0):
    return accel.load(make_tiny_dit(), "cpu", sampling={"steps": steps, "guidance": guidance})


def test_block_cache_reuses_the_blocks_residual_and_reproduces_a_full_step_from_its_own_feature():
    from accel.cache.transformer import BlockResidualSplitter

    model = _dit()
    x, t, c = model.example_inputs(3)
    for branch in (0, 1):
        splitter = BlockResidualSplitter(model.module, branch)
        with splitter.capturing() as captured:
            full = model(x, t, c)
        assert captured.feature.shape == (3, 16, 16)  # 16 tokens of width 16
        with splitter.reusing(captured.feature):
            again = model(x, t, c)
        # tolerance: the same float operations in another order (residual added once)
        torch.testing.assert_close(again, full, atol=1e-5, rtol=1e-5)
        with splitter.reusing(torch.zeros_like(captured.feature)):
            assert (model(x, t, c) - full).abs().max() > 1e-3  # the feature is really read
    assert torch.equal(model(x, t, c), full)  # nothing left patched


def test_guided_block_cache_skips_the_blocks_between_full_steps_and_restarts_per_trajectory():
    plain, cached = _dit(), _dit()
    record = accel.cache_(cached, accel.CacheConfig(interval=3))
    assert record["method"] == "block-residual" and len(record["full_steps"]) == 4
    calls = []
    cached.module.transformer_blocks[1].attn1.register_forward_hook(
        lambda m, a, o: calls.append(len(o))
    )
    a = accel.sample(plain, 2, progress=False).images
    b = accel.sample(cached, 2, progress=False).images
    assert calls == [4] * 4  # 4 full steps of 12, each one call on cond and uncond halves
    assert (a - b).abs().max() > 1e-4
    assert torch.equal(accel.sample(cached, 2, progress=False).images, b)
    every_step = _dit()
    accel.cache_(every_step, accel.CacheConfig(interval=1))
    assert torch.equal(accel.sample(every_step, 2, progress=False).images, a)


def test_first_block_cache_decides_on_block_zero_and_runs_whole_below_its_threshold():
    plain = _dit()
    reference = accel.sample(plain, 2, progress=False).images
    never = _dit()
    accel.cache_(never, accel.CacheConfig(method="first-block", threshold=1e-9))
    assert torch.equal(accel.sample(never, 2, progress=False).images, reference)
    assert never.hooks["cache"].counts == {"full": 12, "cached": 0}
    always = _dit()
    record = accel.cache_(always, accel.CacheConfig(method="first-block", threshold=1e9))
    assert record == {**record, "method": "first-block-cache", "threshold": 1e9}
    reused = accel.sample(always, 2, progress=False).images
    assert always.hooks["cache"].counts == {"full": 1, "cached": 11}
    assert (reused - reference).abs().max() > 1e-4
    accel.sample(always, 2, progress=False)  # a new trajectory starts with an empty cache
    assert always.hooks["cache"].counts == {"full": 2, "cached": 22}
    x, t, c = always.example_inputs(2)
    assert torch.equal(always(x, t, c), plain(x, t, c))  # outside a sampler: a whole call


def test_copies_cache_on_their_own_network():
    model = _digits()
    accel.cache_(model, accel.CacheConfig())
    twin = copy.deepcopy(model)
    assert twin.hooks["cache"].splitter.network is twin.module


def test_the_parity_gate_checks_the_cached_graph_too_and_writes_neither_file_when_it_fails(
    tmp_path, monkeypatch
):
    from accel.export import onnx as onnx_export
    from accel.export.steps import CachedStepGraph

    traced = CachedStepGraph.forward
    monkeypatch.setattr(CachedStepGraph, "forward", lambda self, *args: 1.01 * traced(self, *args))
    model = _digits()
    accel.cache_(model, accel.CacheConfig())
    with pytest.raises(
        AccelError, match="cached-step graph fed by the full step's: max relative error 1.0"
    ):
        onnx_export.export_onnx(model, tmp_path / "c.onnx")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_damaged_cache_records_are_one_line(tmp_path, capsys):
    import json

    import onnx

    from accel.export.onnx import export_onnx
    from conftest import refused

    model = accel.load(make_tiny_unet())
    accel.cache_(model, accel.CacheConfig(interval=2))
    accel.save(model, tmp_path / "c2")
    record = json.loads((tmp_path / "c2" / "accel.json").read_text())
    record["transforms"][0]["config"]["branch"] = 9
    (tmp_path / "c2" / "accel.json").write_text(json.dumps(record))
    assert "CacheConfig.branch 9 does not exist" in refused(
        capsys, tmp_path, "eval", "--model", str(tmp_path / "c2"), "--n", "2"
    )
    export_onnx(model, tmp_path / "c.onnx")
    graph = onnx.load(str(tmp_path / "c.onnx"))
    entry = next(p for p in graph.metadata_props if p.key == "accel")
    entry.value = json.dumps({**json.loads(entry.value), "step_graphs": ["c.cached.onnx"]})
    onnx.save(graph, str(tmp_path / "d.onnx"))
    assert "no valid 'step_graphs'" in refused(
        capsys, tmp_path, "eval", "--model", str(tmp_path / "d.onnx"), "--n", "2"
    )
