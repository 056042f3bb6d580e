"""Budgeted bits against uniform widths: at the FID of uniform W8A8 a smaller model, at the size of
uniform W4A8 a lower FID.

    python -m bench.bit_budget               # digits, 2,000 samples, DDIM 50
                                             #   -> bench/results/bit_budget_digits_cpu.md, .json
    python -m bench.bit_budget --model digits-dit --samples 1000
    python -m bench.bit_budget --quick       # a smoke run: 32 samples, DDIM 6

Rows, every one calibration with bias correction on one calibration set (no reconstruction, so the
rows differ only in their widths): uniform W8A8; ``--max-fid-ratio`` set to W8A8's FID ratio as
measured here (the search measures its candidates at ``--budget-samples``); uniform W4A8;
``--target-size`` set to W4A8's size. The uniform rows are sampled beside the original in one run,
the budgeted rows in a second run from the same seed and noise (the original's FID is the same in
both: sampling is deterministic).
"""

from __future__ import annotations

import collections
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import accel
from accel.calib.collect import CalibConfig, calibrate
from accel.evaluate import evaluate_many
from accel.quant import quantize_
from accel.quant.bit_search import choose_bits
from accel.quant.config import W4A8, W8A8, BitBudget
from accel.quant.layers import QuantLayer
from accel.report import table
from bench.common import (
    goal,
    one_model_args,
    one_model_output,
    quality_row,
    reference_model,
    write_results,
)

MODELS = ("digits", "digits-dit")
COLUMNS = {
    "name": "recipe",
    "widths": "layers x weight bits",
    "quantize_s": "quantize (s)",
    "size_mb": "size (MB)",
    "fid": "FID",
    "fid_ratio": "FID ratio",
    "psnr_db": "PSNR to original (dB)",
    "feature_distance": "feature distance to original",
}


@dataclass(frozen=True)
class Settings:
    n: int
    steps: int | None  # the sampler's (None: the model's own, DDIM 50)
    calib_samples: int
    batch_size: int
    budget_samples: int  # per candidate of the --max-fid-ratio search


FULL = Settings(n=2000, steps=None, calib_samples=CalibConfig().samples, batch_size=500,
                budget_samples=BitBudget().fid_samples)  # fmt: skip
QUICK = Settings(n=32, steps=6, calib_samples=4, batch_size=32, budget_samples=16)


def _quantized(name, settings, config, calib, budget: BitBudget | None = None):
    """A quantized model and the seconds it took (the bit search included)."""
    model, start = reference_model(name, settings.steps), time.perf_counter()
    if budget is not None:
        bits, _ = choose_bits(model, config, calib, budget, progress=False)
        config = replace(config, layer_bits=bits)
    quantize_(model, config, calib, progress=False)
    return model, time.perf_counter() - start


def _widths(model) -> str:
    counts = collections.Counter(
        m.w_bits for m in model.module.modules() if isinstance(m, QuantLayer)
    )
    return ", ".join(f"{counts[b]}x{b}" for b in sorted(counts))


def _rows(names, quantized, evaluations) -> list[dict]:
    return [
        {
            "name": name,
            "widths": _widths(model),
            "quantize_s": seconds,
            **quality_row(e.report),
        }
        for name, (model, seconds), e in zip(names, quantized, evaluations)
    ]


def run_rows(name: str, settings: Settings, seed: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as work:
        calib = calibrate(
            reference_model(name, settings.steps),
            CalibConfig(samples=settings.calib_samples),
            Path(work) / "calib.safetensors",
            progress=False,
        )
    eval_config = accel.EvalConfig(n=settings.n, seed=seed, batch_size=settings.batch_size)
    # rounded to nearest, as the budget's candidates are (quant/stage.py)
    uniform = [
        _quantized(name, settings, replace(c, seed=seed, rounding="nearest"), calib)
        for c in (W8A8, W4A8)
    ]
    rows = _rows(
        ["uniform W8A8", "uniform W4A8"],
        uniform,
        evaluate_many(
            [reference_model(name, settings.steps)] + [m for m, _ in uniform], eval_config
        ),
    )
    w8a8, w4a8 = rows
    ratio = max(w8a8["fid_ratio"], 1.0)  # a budget is at least the original's own FID
    budgets = [
        BitBudget(max_fid_ratio=ratio, fid_samples=settings.budget_samples),
        BitBudget(target_size=w4a8["size_mb"]),
    ]
    budgeted = [
        _quantized(name, settings, replace(W4A8, seed=seed, rounding="nearest"), calib, b)
        for b in budgets
    ]
    rows += _rows(
        [
            f"--max-fid-ratio {ratio:.3f} (W8A8's)",
            f"--target-size {w4a8['size_mb']:.3f} (W4A8's)",
        ],
        budgeted,
        evaluate_many(
            [reference_model(name, settings.steps)] + [m for m, _ in budgeted], eval_config
        ),
    )
    return [rows[i] for i in (0, 2, 1, 3)]  # each uniform row beside its budgeted one


def goals(rows: list[dict]) -> list[dict]:
    w8a8, by_fid, w4a8, by_size = rows
    return [
        goal(
            "--max-fid-ratio model's size (MB), against W8A8's", by_fid["size_mb"], w8a8["size_mb"]
        ),
        goal(
            "--max-fid-ratio model's FID ratio at the full sample count, against W8A8's",
            by_fid["fid_ratio"],
            w8a8["fid_ratio"],
        ),
        goal(
            "--target-size model's FID ratio, against W4A8's",
            by_size["fid_ratio"],
            w4a8["fid_ratio"],
        ),
    ]


def body(results: dict) -> str:
    settings, rows = results["settings"], results["rows"]
    lines = [
        f"## Rows ({settings['n']} samples, DDIM {settings['steps'] or 50}, seed "
        f"{results['seed']}; original's FID {rows[0]['original_fid']:.2f})",
        "",
        table(COLUMNS, rows),
    ]
    if results["goals"]:
        lines += ["", "## Goals", ""] + [f"- {g['line']}" for g in results["goals"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = one_model_args(__doc__, MODELS, FULL.n, argv)
    settings, mode = (QUICK, "quick") if args.quick else (FULL, "full")
    settings = replace(settings, n=args.samples or settings.n)
    out, command = one_model_output("bit_budget", args)
    start = time.perf_counter()
    rows = run_rows(args.model, settings, args.seed)
    results = {
        "mode": mode,
        "settings": vars(settings),
        "seed": args.seed,
        "rows": rows,
        "goals": [] if args.quick else goals(rows),  # a quick run's FID says nothing
    }
    print(
        write_results(
            out, f"Bit budget ({mode})", command, start, body(results), results, args.model
        )  # fmt: skip
    )


if __name__ == "__main__":
    main()
