"""``python -m bench.bit_budget`` judges each budgeted row against the uniform row beside it."""

from bench.bit_budget import goals


def test_goals_compare_each_budget_with_its_uniform_width():
    w8a8 = {"size_mb": 1.7, "fid_ratio": 1.05}
    by_fid = {"size_mb": 1.2, "fid_ratio": 1.08}
    w4a8 = {"size_mb": 0.98, "fid_ratio": 1.3}
    by_size = {"size_mb": 0.97, "fid_ratio": 1.2}
    met = [g["met"] for g in goals([w8a8, by_fid, w4a8, by_size])]
    # smaller than W8A8, but its full-count FID ratio above W8A8's; better than W4A8 at its size
    assert met == [True, False, True]
