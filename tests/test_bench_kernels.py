"""``python -m bench.kernels`` cannot be timed without a GPU, but its whole path (ceilings,
correctness checks, rows, goals, JSON) must run: the smoke mode does that on CPU under the Triton
interpreter."""

import json

import pytest

from bench.kernels import GOALS, goals, main


@pytest.mark.slow
def test_smoke_run_writes_checked_rows(tmp_path, capsys):
    out = tmp_path / "kernels.json"
    assert main(["--smoke", "--no-unet", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["smoke"] and results["goals"] == {"status": "unmeasured: smoke run on CPU"}
    assert {r["layout"] for r in results["group_norm"]} == {"nchw", "channels_last"}
    assert all(r["rel_error"] < 1e-2 for r in results["group_norm"] + results["attention"])
    assert "GroupNorm+SiLU" in capsys.readouterr().out


def test_goals_take_the_worst_shape():
    rows = {
        "smoke": False,
        "group_norm": [
            {"speedup": 2.0, "copy_fraction": 0.8},
            {"speedup": 1.2, "copy_fraction": 0.9},
        ],
        "attention": [
            {"head_dim": 64, "ratio_vs_sdpa": 0.95},
            {"head_dim": 40, "ratio_vs_sdpa": 1.3},
            {"head_dim": 72, "ratio_vs_sdpa": 0.97},
        ],
        "unet": [
            {"variant": "eager", "ms_per_step": 10.0, "speedup_vs_eager": 1.0},
            {"variant": "torch.compile", "ms_per_step": 7.0, "speedup_vs_eager": 10 / 7},
            {"variant": "accel optimize", "ms_per_step": 5.0, "speedup_vs_eager": 2.0},
        ],
    }
    result = goals(rows)
    assert set(result) == set(GOALS)
    assert not result["group_norm_speedup"]["met"] and result["group_norm_copy_fraction"]["met"]
    assert result["attention_pow2_ratio"]["met"] and not result["attention_other_ratio"]["met"]
    assert result["unet_vs_eager"]["met"] and result["unet_vs_compile"]["measured"] == 1.4
