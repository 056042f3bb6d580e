"""W4A4 (SVDQuant's recipe) on both references, one ingredient at a time, beside W4A8 and W8A8.

    python -m bench.w4a4                     # full: digits and digits-dit, 2,000 samples, DDIM 50
                                             #   -> bench/results/w4a4_cpu.md and .json
    python -m bench.w4a4 --model digits      # one reference
    python -m bench.w4a4 --recon-iters 100   # adds "+ reconstruction" (that many iterations/block)
    python -m bench.w4a4 --samples 1000      # fewer samples (FID is biased upward, ratios less so)
    python -m bench.w4a4 --quick             # CI: 32 samples, DDIM 6

Rows: W4A8 as calibration only with bias correction (the W4A4 rows' footing); W4A4 naive
(activations per token in groups of 64, the only 4-bit form worth a row: one static scale gives 15
levels for a whole layer); + smoothing (SmoothQuant, alpha 0.5); + a rank-R 16-bit branch
(SVDQuant's recipe); + a Hadamard rotation of the 4-bit inputs (QuaRot's); + GPTQ rounding of the
residual (accel's W4A4); + reconstruction where asked. One calibration set per reference (the
model's own sampler); every row sampled beside the original in one run from the same noise. At 4
bits FID moves little while the distance to the original's samples still separates methods, so each
row also has PSNR and the LPIPS-like feature distance (accel/metrics/quality.py).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import accel
from accel.calib.collect import CalibConfig, calibrate
from accel.evaluate import evaluate_many
from accel.quant import quantize_
from accel.quant.config import W4A4, W4A8
from accel.report import table
from bench.common import HERE, RESULTS, goal, quality_row, reference_model, write_results

MODELS = ("digits", "digits-dit")
GOAL, MOONSHOT = 1.25, 1.10  # issue 26: W4A4 FID ratio on both references
COLUMNS = {
    "model": "model",
    "name": "recipe",
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
    calib_samples: int  # sampler trajectories of the calibration set
    batch_size: int


FULL = Settings(n=2000, steps=None, calib_samples=CalibConfig().samples, batch_size=500)
QUICK = Settings(n=32, steps=6, calib_samples=4, batch_size=32)


def recipes(rank: int, recon_iters: int) -> list[tuple[str, object]]:
    """(row name, QuantConfig), from W4A8 to accel's W4A4 one ingredient at a time."""
    full = replace(W4A4, low_rank=rank)
    # rounded to nearest until the GPTQ row, as SVDQuant's low-rank rows are, so that one thing
    # changes a row
    branch = replace(full, rotate=False, rounding="nearest")
    naive = replace(branch, smooth_alpha=None, low_rank=0)
    rows = [
        ("W4A8 (calibration, bias correction)", replace(W4A8, rounding="nearest")),
        ("W4A4 naive (per-token groups of 64)", naive),
        ("+ smoothing (alpha 0.5)", replace(naive, smooth_alpha=full.smooth_alpha)),
        (f"+ low-rank branch (rank {rank})", branch),
        ("+ Hadamard rotation (blocks of 64)", replace(branch, rotate=True)),
        ("+ GPTQ: accel's W4A4", full),
    ]
    if recon_iters:
        rows.append(
            (
                f"+ reconstruction ({recon_iters} iters/block)",
                replace(full, recon_iters=recon_iters, rounding="gptq-adaround"),
            )
        )
    return rows


def model_rows(name: str, settings: Settings, rank: int, recon_iters: int, seed: int) -> list[dict]:
    """Every recipe on reference ``name``, sampled beside its original in one run."""
    with tempfile.TemporaryDirectory() as work:
        calib = calibrate(
            reference_model(name, settings.steps),
            CalibConfig(samples=settings.calib_samples),
            Path(work) / "calib.safetensors",
            progress=False,
        )
    rows, models = recipes(rank, recon_iters), []
    for _, config in rows:
        model, start = reference_model(name, settings.steps), time.perf_counter()
        quantize_(model, replace(config, seed=seed), calib, progress=False)
        models.append((model, time.perf_counter() - start))
    evaluations = evaluate_many(
        [reference_model(name, settings.steps)] + [model for model, _ in models],
        accel.EvalConfig(n=settings.n, seed=seed, batch_size=settings.batch_size),
        command="bench",
        model_name=name,
    )
    return [
        {
            "model": name,
            "name": row_name,
            "config": config.to_dict(),
            "quantize_s": seconds,
            **quality_row(e.report),
        }
        for (row_name, config), (_, seconds), e in zip(rows, models, evaluations)
    ]


def goals(rows: list[dict]) -> list[dict]:
    found = []
    for name in dict.fromkeys(row["model"] for row in rows):
        w4a4 = next(r for r in rows if r["model"] == name and "accel's W4A4" in r["name"])
        found.append(goal(f"{name} W4A4 FID ratio", w4a4["fid_ratio"], GOAL))
        found.append(goal(f"{name} W4A4 FID ratio, moonshot", w4a4["fid_ratio"], MOONSHOT))
    return found


def body(results: dict) -> str:
    settings = results["settings"]
    originals = "; ".join(
        f"{name} {row['original_fid']:.2f}"
        for name, row in {r["model"]: r for r in results["rows"]}.items()
    )
    lines = [
        f"## Rows ({settings['n']} samples, DDIM {settings['steps'] or 50}, seed "
        f"{results['seed']}; original's FID: {originals})",
        "",
        table(COLUMNS, results["rows"]),
    ]
    if results["goals"]:
        lines += ["", "## Goals", ""] + [f"- {g['line']}" for g in results["goals"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="CI settings")
    parser.add_argument(
        "--model", action="append", choices=MODELS, help="repeatable (default: both)"
    )
    parser.add_argument("--rank", type=int, default=W4A4.low_rank, help="low-rank branch rank")
    parser.add_argument("--recon-iters", type=int, default=0, help="adds a reconstruction row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, help=f"samples per model (default {FULL.n})")
    parser.add_argument("--out", type=Path, help="markdown report (a .json beside it)")
    args = parser.parse_args(argv)
    settings, mode = (QUICK, "quick") if args.quick else (FULL, "full")
    settings = replace(settings, n=args.samples or settings.n)
    out = args.out or (HERE / "w4a4_quick.md" if args.quick else RESULTS / "w4a4_cpu.md")
    start = time.perf_counter()
    models = args.model or list(MODELS)
    rows = [
        row
        for name in models
        for row in model_rows(name, settings, args.rank, args.recon_iters, args.seed)
    ]
    results = {
        "mode": mode,
        "settings": vars(settings),
        "seed": args.seed,
        "rank": args.rank,
        "rows": rows,
        # quick runs' few samples say nothing about FID: no goals
        "goals": [] if args.quick else goals(rows),
    }
    flags = "".join(f" --model {m}" for m in args.model or []) + "".join(
        f" --{flag} {value}"
        for flag, value, default in (
            ("rank", args.rank, W4A4.low_rank),
            ("recon-iters", args.recon_iters, 0),
            ("seed", args.seed, 0),
            ("samples", args.samples, None),
        )
        if value != default
    )
    command = f"python -m bench.w4a4{' --quick' if args.quick else ''}{flags}"
    print(
        write_results(
            out, f"W4A4 ({mode})", command, start, body(results), results, ", ".join(models)
        )
    )


if __name__ == "__main__":
    main()
