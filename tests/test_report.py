import json

import numpy as np
import pytest

import accel
from accel.report import delta, markdown, sample_grid, to_json, write_report
from accel.sampling import SamplerConfig

GUIDE_KEYS = {"command", "model", "seed", "device", "versions", "sampler", "fid_features", "fid_samples",
              "original", "compressed", "delta", "config", "fid_floor"}
MEASURE_KEYS = {"fid", "latency_ms_per_step", "params", "macs", "size_bytes"}


def test_delta_ratios():
    original = {"fid": 10.0, "latency_ms_per_step": 4.0, "size_bytes": 800}
    compressed = {"fid": 12.0, "latency_ms_per_step": 2.0, "size_bytes": 100}
    assert delta(original, compressed, 30.0) == {"fid": 2.0, "fid_ratio": 1.2, "speedup": 2.0, "size_ratio": 0.125,
                                                "psnr_db_vs_original": 30.0}


def test_side_by_side_evaluation_report(tmp_path):
    """Two copies of the digits model: identical samples, infinite PSNR, FID ratio 1, equal sizes."""
    model = accel.load("digits")
    twin = accel.load("digits")
    config = accel.EvalConfig(n=24, sampler=SamplerConfig(steps=2, batch_size=24), latency_repeats=2)
    evaluation = accel.evaluate(twin, baseline=model, config=config, command="eval")
    report = evaluation.report
    assert GUIDE_KEYS <= report.keys()
    assert MEASURE_KEYS <= report["original"].keys() and MEASURE_KEYS <= report["compressed"].keys()
    assert report["delta"]["psnr_db_vs_original"] == float("inf")
    assert report["delta"]["fid_ratio"] == pytest.approx(1.0)
    assert report["delta"]["size_ratio"] == 1.0
    assert report["fid_features"] == "digits-cnn" and report["fid_samples"] == 24
    write_report(tmp_path, report, evaluation.images)
    parsed = json.loads((tmp_path / "report.json").read_text())
    assert parsed["delta"]["psnr_db_vs_original"] == "inf"
    text = (tmp_path / "report.md").read_text()
    assert "| fid |" in text and "psnr_db_vs_original" in text and "floor" in text
    from PIL import Image
    # two 8-wide grids of 16 px cells with 1 px lines, a 4 px gap; 24 samples make 3 rows; scaled 4x
    assert Image.open(tmp_path / "samples.png").size == ((2 * (8 * 17 - 1) + 4) * 4, (3 * 17 - 1) * 4)


def test_single_model_markdown_has_no_compressed_column():
    report = {"command": "eval", "model": "m", "seed": 0, "device": "cpu", "device_name": "cpu",
              "versions": {"accel": "0"}, "sampler": {"name": "ddim", "steps": 5, "batch_size": 2},
              "fid_features": None, "fid_unavailable": "no weights", "latency": {"batch_size": 1, "repeats": 3},
              "original": {"fid": None, "latency_ms_per_step": 1.5, "params": 1234, "macs": 2_500_000,
                           "size_bytes": 4096}, "compressed": None, "delta": None}
    text = markdown(report)
    assert "compressed" not in text and "not computed (no weights)" in text and "2.50M" in text
    assert json.loads(to_json(report))["original"]["fid"] is None


def test_sample_grid_places_images_in_rows():
    images = np.stack([np.full((1, 2, 2), 10 * i, dtype=np.uint8) for i in range(6)])
    grid = np.asarray(sample_grid([images], columns=4, scale=1, pad=1))
    assert grid.shape == (2 * 3 - 1, 4 * 3 - 1)
    assert grid[0, 3] == 10 and grid[3, 0] == 40  # image 1 at row 0 col 1, image 4 at row 1 col 0
    assert grid[0, 2] == 128 and grid[3, 9] == 128  # a grid line, and an empty cell
