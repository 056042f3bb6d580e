"""bench.leaderboard gathers the committed benchmark results into one table: every family present, each row's ratio
against the original of its own run, and the recipe rows equal to what bench.compress measured."""
import json
from pathlib import Path

import pytest

from bench.leaderboard import RESULTS, collect, main

FAMILIES = {"original", "sampler", "quantization", "export", "pruning", "distillation", "caching", "recipe"}


def test_every_family_is_on_the_board_against_its_own_original():
    rows, missing = collect(quick=False)
    assert not missing and {row["family"] for row in rows} == FAMILIES
    compress = json.loads((RESULTS / "compress_digits_cpu.json").read_text())
    fast = next(r for r in compress["recipes"] if r["recipe"] == "fast")["rows"]
    row = next(r for r in rows if r["method"].startswith("recipe fast"))
    assert row["fid_ratio"] == pytest.approx(fast[-1]["fid"] / fast[0]["fid"])
    assert row["speedup"] == fast[-1]["speedup"] and row["runtime"].startswith("ONNX Runtime")
    distill = json.loads((RESULTS / "distill_digits_cpu.json").read_text())
    four = next(r for r in distill["rows"] if r["steps"] == 4 and r["model"] == "progressive (v student)")
    row = next(r for r in rows if r["method"] == "progressive (v student), 4 steps")
    assert row["speedup"] == pytest.approx(distill["teacher_ddim50"]["ms_per_image"] / four["ms_per_image"])


def test_missing_results_are_named_not_skipped_silently(tmp_path, monkeypatch):
    import bench.leaderboard as board

    monkeypatch.setattr(board, "HERE", tmp_path)
    (tmp_path / "results").mkdir()
    rows, missing = collect(quick=True)
    assert rows == [] and len(missing) == len(board.SOURCES) and "python -m bench.cache --quick" in missing[3]


def test_writes_the_table_and_the_plot(tmp_path, monkeypatch):
    import shutil

    import bench.leaderboard as board

    shutil.copytree(RESULTS, tmp_path / "results")
    monkeypatch.setattr(board, "HERE", tmp_path)
    main([])
    text = (tmp_path / "report.md").read_text()
    assert "| 0 | original, DDIM 50 |" in text and "report.png" in text
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert Path(tmp_path / "report.json").is_file()
