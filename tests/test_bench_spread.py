"""``python -m bench.spread`` reports the worst of its runs against the issue's goals: the summary
must take the extremes of each recipe's runs, not one run's."""

from bench.spread import spread


def _row(recipe, ratio, psnr, seconds):
    return {"recipe": recipe, "fid_ratio": ratio, "psnr_db": psnr, "quantize_s": seconds}


def test_spread_takes_each_recipes_extremes():
    rows = [
        _row("W8A8", 1.02, 38.0, 20.0),
        _row("W4A8", 1.41, 27.9, 300.0),
        _row("W8A8", 1.16, 36.9, 25.0),
        _row("W4A8", 0.88, 31.1, 280.0),
    ]
    by_recipe = {s["recipe"]: s for s in spread(rows)}
    assert list(by_recipe) == ["W8A8", "W4A8"]  # in the order they ran
    assert by_recipe["W8A8"] == {
        "recipe": "W8A8",
        "runs": 2,
        "fid_ratio_min": 1.02,
        "fid_ratio_max": 1.16,
        "psnr_db_min": 36.9,
        "psnr_db_max": 38.0,
        "quantize_s_max": 25.0,
    }
    assert by_recipe["W4A8"]["fid_ratio_max"] == 1.41
