"""bench.leaderboard gathers the committed benchmark results into one table: every family present,
every source named with its machine and threads, missing results named, and the table and plot
written."""

import json
import shutil

from bench.leaderboard import SOURCES, collect, main, ranked

FAMILIES = {
    "original",
    "sampler",
    "quantization",
    "export",
    "pruning",
    "distillation",
    "caching",
    "recipe",
    "peer quantization",
}


def test_every_family_is_on_the_board_with_where_it_was_measured():
    rows, sources, missing = collect(quick=False)
    assert not missing and {row["family"] for row in rows} == FAMILIES
    assert len(sources) == len(SOURCES) and all(
        "threads torch" in line and "commit" in line for line in sources
    )
    timed = [row for row in rows if row["speedup"] is not None]
    # fake-quantized rows have no speed
    assert all(row["family"] != "quantization" for row in timed)
    assert ranked(rows)[0]["family"] == "original" and ranked(rows)[0]["speedup"] == 1.0
    # the integer graphs as ONNX Runtime runs them, timed per image on both references
    integer = [row for row in rows if "ort-cpu form" in row["method"] and row["speedup"]]
    assert {row["model"] for row in integer} == {"digits", "digits-dit"}


def test_missing_results_are_named_not_skipped_silently(tmp_path):
    (tmp_path / "results").mkdir()
    rows, sources, missing = collect(quick=True, here=tmp_path)
    assert rows == [] and sources == [] and len(missing) == 7
    assert any("python -m bench.cache --quick" in line for line in missing)


def test_writes_the_table_and_the_plot(tmp_path, monkeypatch):
    import bench.leaderboard as board
    from bench.common import RESULTS

    shutil.copytree(RESULTS, tmp_path / "results")
    monkeypatch.setattr(board, "HERE", tmp_path)
    main([])
    text = (tmp_path / "report.md").read_text()
    assert (
        "| 0 | digits | original, DDIM 50 |" in text
        and "report.png" in text
        and "Pareto front" in text
    )
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "report.json").read_text())["mode"] == "full"
