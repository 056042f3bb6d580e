"""Bit budgets: per-layer costs, the allocation path, and ``accel quantize --target-size`` /
``--max-fid-ratio`` choosing each layer's weight bits."""

import json

import pytest
import torch

import accel
from accel.quant.budget import allocation_path, changeable_layers, for_size, layer_costs
from accel.quant.layers import QuantLayer
from conftest import make_tiny_unet, tiny_calib
from conftest import run_cli as run

TINY = ["--n", "24", "--steps", "3", "--batch-size", "24", "--calib-samples", "2"]
TINY += ["--calib-every", "1"]


@pytest.fixture(autouse=True)
def calib_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCEL_CACHE_DIR", str(tmp_path / "cache"))


def test_the_path_gives_up_the_cheapest_error_per_byte_first():
    costs = {
        "robust": {8: 0.0, 4: 0.01, 2: 0.02},
        "fragile": {8: 0.0, 4: 0.5, 2: 2.0},
    }
    counts = {"robust": 1000, "fragile": 1000}
    path = allocation_path(costs, counts, base_error=0.1)
    assert path[0].bits == {"robust": 8, "fragile": 8} and path[0].predicted_error == 0.1
    assert path[-1].bits == {"robust": 2, "fragile": 2}
    # robust goes all the way down before fragile moves
    assert [p.bits["fragile"] for p in path[:3]] == [8, 8, 8]
    sizes = [p.weight_bytes for p in path]
    errors = [p.predicted_error for p in path]
    assert sizes == sorted(sizes, reverse=True) and errors == sorted(errors)
    assert path[-1].predicted_error == pytest.approx(0.1 + 0.02 + 2.0)
    # 2,000 bytes at 8 bits; robust at 2 bits packs four codes a byte: 1,250
    assert for_size(path, 1250).bits == {"robust": 2, "fragile": 8}
    assert for_size(path, 100) is None


@pytest.mark.slow
def test_layer_costs_grow_as_bits_fall_and_leave_the_model_as_it_was():
    model = accel.load(make_tiny_unet())
    calib = tiny_calib(model)
    base = accel.load(make_tiny_unet())
    accel.quantize_(base, accel.QuantConfig(w_bits=8, a_bits=8), calib, progress=False)
    layers = changeable_layers(base.module, fixed=set())
    before = {k: v.clone() for k, v in base.state_dict().items()}
    base_error, costs = layer_costs(base, model, calib, layers, progress=False)
    assert base_error > 0 and set(costs) == set(layers)
    assert all(c[8] == 0 and c[2] >= 0 and c[4] >= 0 for c in costs.values())
    assert sum(c[2] for c in costs.values()) > sum(c[4] for c in costs.values()) > 0
    after = base.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())


def _weight_bits(artifact) -> dict[str, int]:
    model = accel.load(artifact)
    return {n: m.w_bits for n, m in model.module.named_modules() if isinstance(m, QuantLayer)}


@pytest.mark.slow
def test_target_size_mixes_widths_within_the_size(tmp_path, capsys):
    common = ["--act-bits", "8", "--recon-iters", "0", *TINY, "--json"]
    code, stdout, _ = run(capsys, "quantize", "--bits", "8", *common, "--out", str(tmp_path / "q8"))
    size_w8 = json.loads(stdout)["compressed"]["size_bytes"]
    code, stdout, _ = run(capsys, "quantize", "--bits", "4", *common, "--out", str(tmp_path / "q4"))
    size_w4 = json.loads(stdout)["compressed"]["size_bytes"]
    target_mb = (size_w8 + size_w4) / 2 / 1e6
    code, stdout, _ = run(
        capsys, "quantize", "--target-size", f"{target_mb}", *common, "--out", str(tmp_path / "b")
    )
    report = json.loads(stdout)
    assert code == 0 and report["compressed"]["size_bytes"] <= target_mb * 1e6 * 1.01
    budget = report["bit_budget"]
    assert budget["chosen"]["predicted_mb"] <= target_mb and budget["measured"] == []
    widths = set(_weight_bits(tmp_path / "b").values())
    assert 8 in widths and len(widths) > 1  # below 8 bits where it costs least, not uniform
    saved = json.loads((tmp_path / "b" / "accel.json").read_text())
    assert saved["transforms"][0]["config"]["layer_bits"]


@pytest.mark.slow
def test_max_fid_ratio_takes_the_smallest_model_measured_to_meet_it(tmp_path, capsys):
    code, stdout, _ = run(
        capsys,
        "quantize",
        "--max-fid-ratio",
        "1000",
        "--budget-samples",
        "24",
        *TINY,
        "--out",
        str(tmp_path / "b"),
        "--json",
    )
    budget = json.loads(stdout)["bit_budget"]
    sizes = [m["predicted_mb"] for m in budget["measured"]]
    assert code == 0 and len(sizes) >= 2 and all(m["fid_ratio"] > 0 for m in budget["measured"])
    # every candidate meets a ratio of 1000: the smallest one measured is chosen
    assert budget["chosen"]["predicted_mb"] == min(sizes)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--max-fid-ratio", "0.9"], "must be at least 1"),
        (["--max-fid-ratio", "1.1", "--target-size", "1"], "two budgets"),
        (["--target-size", "0"], "must be above 0 MB"),
        (["--target-size", "0.001"], "below the smallest this model can be"),
        (["--target-size", "1", "--layer-bits", "conv_in=8"], "give one of them"),
        (["--target-size", "1", "--act-bits", "4", "--low-rank", "4"], "8-bit"),
    ],
)
@pytest.mark.slow
def test_bad_budgets_are_refused_with_nothing_written(argv, message, tmp_path, capsys):
    code, out, err = run(capsys, "quantize", *argv, *TINY, "--out", str(tmp_path / "q"))
    # one error line (a size below the smallest is known after the sensitivity pass's progress)
    last = err.strip().splitlines()[-1]
    assert code == 2 and out == "" and err.count("error") == 1 and message in last
    assert not (tmp_path / "q").exists()


def test_a_small_model_past_a_failing_larger_one_is_not_trusted():
    from accel.quant.bit_search import _smallest_meeting
    from accel.quant.budget import Allocation

    def point(size):
        return Allocation({"layer": 8}, size, 0.0)

    big, middle, small = point(300), point(200), point(100)
    # the smallest meets 1.1 only by a lucky draw: the larger model before it missed
    assert _smallest_meeting([(big, 1.05), (middle, 1.2), (small, 1.08)], 1.1) is big
    assert _smallest_meeting([(big, 1.05), (middle, 1.09), (small, 1.3)], 1.1) is middle
    assert _smallest_meeting([(big, 1.2)], 1.1) is None
