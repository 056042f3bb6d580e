"""``python -m bench.w4a4``'s rows add one ingredient at a time, and its goals judge accel's W4A4
row on each reference."""

from bench.w4a4 import goals, recipes


def test_rows_add_one_ingredient_each():
    rows = dict(recipes(rank=8, recon_iters=50))
    w4a8, naive, smooth, branch, rotated, full, recon = rows.values()
    assert (w4a8.a_bits, naive.a_bits) == (8, 4)
    assert naive.smooth_alpha is None and naive.low_rank == 0 and naive.a_group_size == 64
    assert not naive.rotates and naive.weight_rounding == "nearest"
    assert smooth.smooth_alpha == 0.5 and smooth.low_rank == 0
    assert branch.low_rank == 8 and not branch.rotates and branch.weight_rounding == "nearest"
    assert rotated.rotates and rotated.weight_rounding == "nearest"
    assert full.rotates and full.weight_rounding == "gptq" and full.recon_iters == 0
    assert recon.recon_iters == 50 and recon.low_rank == 8
    assert len(recipes(rank=8, recon_iters=0)) == 6


def test_goals_read_the_w4a4_row_of_each_model():
    rows = [
        {"model": m, "name": name, "fid_ratio": ratio}
        for m, ratios in (("digits", (1.3, 1.2)), ("digits-dit", (1.0, 1.05)))
        for name, ratio in zip(("W4A4 naive", "+ low-rank branch: accel's W4A4"), ratios)
    ]
    met = {g["goal"]: g["met"] for g in goals(rows)}
    assert met == {
        "digits W4A4 FID ratio": True,
        "digits W4A4 FID ratio, moonshot": False,
        "digits-dit W4A4 FID ratio": True,
        "digits-dit W4A4 FID ratio, moonshot": True,
    }
