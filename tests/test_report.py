import json
from dataclasses import fields

import numpy as np
import pytest

import accel
from accel.report import SCHEMA_VERSION, Delta, Measures, Report, sample_grid, to_json, write_report

# The report keys the design promises (README, "How things are measured"), top level and per model.
PROMISED_KEYS = {
    "command",
    "model",
    "seed",
    "device",
    "versions",
    "sampler",
    "fid_features",
    "fid_samples",
    "original",
    "compressed",
    "delta",
    "config",
    "fid_floor",
    "schema",
}
MEASURE_KEYS = {
    "fid",
    "latency_ms_per_step",
    "params",
    "macs",
    "size_bytes",
    "sampler",
    "calls_per_image",
    "macs_per_image",
    "sampling_s_per_image",
}


def measures(**changes) -> Measures:
    base = dict(
        fid=10.0,
        fid_at_floor_size=None,
        latency_ms_per_step=4.0,
        sampling_s_per_image=0.2,
        calls_per_image=50,
        macs_per_image=50_000,
        params=10,
        macs=1000,
        size_bytes=800,
        sampler={"name": "ddim", "steps": 50, "eta": 0.0},
    )
    return Measures(**{**base, **changes})


def test_delta_speedup_is_time_per_image_and_the_step_ratio_has_its_own_key():
    """A 4-step model with a slower step is still faster per image: "speedup" counts the steps."""
    original = measures()
    student = measures(
        fid=12.0,
        latency_ms_per_step=8.0,
        sampling_s_per_image=0.032,
        calls_per_image=4,
        macs_per_image=4_000,
        size_bytes=100,
    )
    delta = Delta.between(original, student, 30.0)
    assert delta == Delta(
        fid=2.0,
        fid_ratio=1.2,
        speedup=pytest.approx(6.25),
        step_speedup=0.5,
        macs_ratio=0.08,
        size_ratio=0.125,
        psnr_db_vs_original=30.0,
    )


@pytest.mark.slow
def test_side_by_side_evaluation_report(tmp_path):
    """Two copies of the digits model: identical samples, infinite PSNR, FID ratio 1, equal
    sizes."""
    model = accel.load("digits", sampling={"steps": 2})
    twin = accel.load("digits", sampling={"steps": 2})
    config = accel.EvalConfig(n=24, batch_size=24, latency_repeats=2)
    evaluation = accel.evaluate(twin, baseline=model, config=config, command="eval")
    report = evaluation.report.to_dict()
    assert report.keys() >= PROMISED_KEYS and report["schema"] == SCHEMA_VERSION
    assert report["original"].keys() >= MEASURE_KEYS and report["compressed"].keys() >= MEASURE_KEYS
    assert report["compressed"]["calls_per_image"] == 2
    assert (
        report["compressed"]["macs_per_image"] == 2 * report["compressed"]["macs"]
    )  # counted over a trajectory
    assert report["delta"]["psnr_db_vs_original"] == float("inf")
    assert report["delta"]["fid_ratio"] == pytest.approx(1.0)
    assert report["delta"]["size_ratio"] == 1.0 and report["delta"]["macs_ratio"] == 1.0
    assert report["fid_features"] == "digits-cnn" and report["fid_samples"] == 24
    write_report(tmp_path, evaluation.report, evaluation.images)
    parsed = json.loads((tmp_path / "report.json").read_text())
    assert parsed["delta"]["psnr_db_vs_original"] == "inf"
    text = (tmp_path / "report.md").read_text()
    assert (
        "| fid |" in text
        and "psnr_db_vs_original" in text
        and "floor" in text
        and "calls_per_image" in text
    )
    from PIL import Image

    from accel.report.pictures import CAPTION_PX

    # two 8-wide grids of 16 px cells with 1 px lines, a 4 px gap; 24 samples make 3 rows; scaled
    # 4x; a caption band above, with each grid's caption written over it (dark pixels over each
    # grid, none over the gap)
    picture = np.asarray(Image.open(tmp_path / "samples.png").convert("L"))
    grid = (8 * 17 - 1) * 4
    assert picture.shape == ((3 * 17 - 1) * 4 + CAPTION_PX, 2 * grid + 4 * 4)
    band = picture[:CAPTION_PX]
    assert (
        band[:, :grid].min() < 100
        and band[:, grid + 16 :].min() < 100
        and band[:, grid : grid + 16].min() == 255
    )


@pytest.mark.slow
def test_fewer_steps_show_in_calls_macs_and_time_per_image():
    fifty, five = (
        accel.load("digits", sampling={"steps": 10}),
        accel.load("digits", sampling={"steps": 5}),
    )
    report = accel.evaluate(five, fifty, accel.EvalConfig(n=16, latency_repeats=2)).report
    assert (report.original.calls_per_image, report.compressed.calls_per_image) == (10, 5)
    assert report.delta.macs_ratio == 0.5 and report.original.macs == report.compressed.macs
    # two DDIM runs of one ODE: the same trajectory family
    assert report.delta.psnr_db_vs_original is not None


@pytest.mark.slow
def test_psnr_is_left_out_with_a_reason_where_trajectories_differ():
    ddpm = accel.load("digits", sampling={"name": "ddpm", "steps": 5})
    ddim = accel.load("digits", sampling={"steps": 5})
    report = accel.evaluate(ddpm, ddim, accel.EvalConfig(n=4, latency_repeats=1)).report
    assert report.delta.psnr_db_vs_original is None
    assert any("no PSNR to the original" in note for note in report.notes)


def _single(**changes) -> Report:
    base = dict(
        command="eval",
        model="m",
        seed=0,
        device="cpu",
        device_name="cpu",
        sampler={"name": "ddim", "steps": 5, "batch_size": 2},
        fid_features=None,
        fid_samples=4,
        fid_reference_samples=None,
        fid_floor=None,
        fid_floor_samples=None,
        fid_unavailable="no weights",
        latency={"batch_size": 1, "repeats": 3},
        original=measures(fid=None, macs=2_500_000),
        compressed=None,
        delta=None,
        config={},
        eval_config={},
        notes=[],
    )
    return Report(**{**base, **changes})


def test_single_model_markdown_has_no_compressed_column():
    report = _single()
    text = report.to_markdown()
    assert "compressed" not in text and "not computed (no weights)" in text and "2.50M" in text
    assert json.loads(to_json(report.to_dict()))["original"]["fid"] is None


def test_sections_are_added_through_one_call_and_cannot_overwrite_the_schema():
    report = _single()
    report.add_section("ablation", {"rows": [1]}, "## Ablation\n")
    assert report.to_dict()["ablation"] == {"rows": [1]} and report.to_markdown().endswith(
        "## Ablation\n"
    )
    for taken in ("delta", "ablation", *(f.name for f in fields(Report))):
        with pytest.raises(ValueError, match="overwrite"):
            report.add_section(taken, {})


def test_sample_grid_places_images_in_rows():
    images = np.stack([np.full((1, 2, 2), 10 * i, dtype=np.uint8) for i in range(6)])
    grid = np.asarray(sample_grid([images], columns=4, scale=1, pad=1))
    assert grid.shape == (2 * 3 - 1, 4 * 3 - 1)
    assert grid[0, 3] == 10 and grid[3, 0] == 40  # image 1 at row 0 col 1, image 4 at row 1 col 0
    assert grid[0, 2] == 128 and grid[3, 9] == 128  # a grid line, and an empty cell
