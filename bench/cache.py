"""The feature-caching benchmark: DeepCache on the built-in model at intervals 2, 3, 5 and 10,
uniform and quadratic full steps, each beside the plain sampler with the same MACs per image (fewer
steps), all against the original's DDIM 50 from the same noise. Each row is what `accel cache`
measures: the original, the plain sampler and the cached model sampled batch by batch in turn (each
speedup is a ratio from that row's run), FID, PSNR to the original's samples.

    python -m bench.cache          # full: 2,000 samples -> bench/results/cache_digits_cpu.json, .md
    python -m bench.cache --quick  # CI: 40 samples, 2 of the rows
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import accel
from accel.measure import measure_stage
from bench.common import HERE, RESULTS, goal, write_results

INTERVALS = (2, 3, 5, 10)
# (interval, branch, schedule, quadratic centre): branch 0 (the shallowest level live) at every
# interval, uniform and quadratic from the start (the default); DeepCache's LDM centre (0.4 of the
# trajectory) at interval 3; and branch 1, what a deeper live level buys back in quality and costs
# in speed
ROWS = (
    [(interval, 0, "uniform", 0.0) for interval in INTERVALS]
    + [(interval, 0, "quadratic", 0.0) for interval in INTERVALS]
    + [(3, 0, "quadratic", 0.4)]
    + [(interval, 1, "quadratic", 0.0) for interval in (3, 5)]
)
# CI: both schedules and both branches, the same code (five rows took 210 s of CI on a 2-core AMD
# EPYC)
QUICK_ROWS = [
    (3, 0, "uniform", 0.0),
    (3, 1, "quadratic", 0.0),
]


# At interval 3 on DDIM 50: at least 1.5x less wall time per image, FID within 10% of the original's
GOAL_INTERVAL, SPEEDUP_GOAL, FID_RATIO_GOAL = 3, 1.5, 1.10


@dataclass(frozen=True)
class Settings:
    n: int
    batch_size: int
    judged: bool  # judge rows against the goals (the full sample count only)


FULL = Settings(n=2000, batch_size=500, judged=True)
# CI, with QUICK_ROWS
QUICK = Settings(n=40, batch_size=40, judged=False)


def measure_row(
    interval: int, branch: int, schedule: str, center: float, settings: Settings
) -> dict:
    config = accel.stage_settings(
        "cache", interval=interval, branch=branch, schedule=schedule, center=center
    )
    eval_config = accel.EvalConfig(n=settings.n, batch_size=settings.batch_size)
    report = measure_stage("cache", "digits", config, eval_config, progress=False).evaluation.report
    o, c, d = report.original, report.compressed, report.delta
    section = report.sections["cache"]
    plain = section["plain_sampler_at_equal_macs"]
    return {
        "interval": interval,
        "branch": branch,
        "schedule": schedule,
        "center": center,
        "full_steps": section["full_steps"],
        "original": {
            "fid": o.fid,
            "ms_per_image": o.sampling_s_per_image * 1e3,
            "macs_per_image": o.macs_per_image,
        },
        "cached": {
            "fid": c.fid,
            "fid_ratio": d.fid_ratio,
            "psnr_db": d.psnr_db_vs_original,
            "ms_per_image": c.sampling_s_per_image * 1e3,
            "speedup": d.speedup,
            "macs_per_image": c.macs_per_image,
        },
        "plain_at_equal_macs": {
            "steps": plain["steps"],
            "fid": plain["fid"],
            "fid_ratio": plain["fid"] / o.fid,
            "psnr_db": plain["psnr_db_vs_original"],
            "ms_per_image": plain["seconds_per_image"] * 1e3,
            "macs_per_image": plain["macs_per_image"],
        },
    }


def body(results: dict) -> str:
    rows = results["rows"]
    first = rows[0]["original"]
    lines = [
        f"Original: DDIM 50, {first['macs_per_image'] / 1e9:.2f} G MACs per image. "
        f"{results['settings']['n']} samples per row, seed 0, the same initial noise for every "
        "model; FID on the digits-CNN features. The original and the plain sampler are sampled "
        "again beside each cached row (their FID and time in that row's run give the ratios).",
        "",
        "| interval | branch | full steps | MACs per image | FID (original) | "
        "FID ratio | PSNR dB | ms per image | speedup (time/image) | plain "
        "DDIM at equal MACs: steps, FID ratio, PSNR dB, ms | caching ahead? |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        o, c, p = row["original"], row["cached"], row["plain_at_equal_macs"]
        lines.append(
            f"| {row['interval']} | {row['branch']} | {_schedule(row)}, {len(row['full_steps'])} "
            f"| {c['macs_per_image'] / 1e9:.2f} G | {c['fid']:.2f} ({o['fid']:.2f}) | "
            f"{c['fid_ratio']:.3f} | {c['psnr_db']:.1f} | {c['ms_per_image']:.2f} | "
            f"{c['speedup']:.2f}x | {p['steps']}, {p['fid_ratio']:.3f}, {p['psnr_db']:.1f}, "
            f"{p['ms_per_image']:.2f} | {'yes' if c['fid'] < p['fid'] else 'no'} |"
        )
    lines += [
        "",
        "Full steps: uniform runs steps 0, N, 2N, ...; quadratic runs as many, crowded "
        "around the centre (a fraction of the trajectory: 0 is the first step). "
        '"Caching ahead?": lower FID than the plain sampler at the same MACs per image.',
    ]
    lines += [f"- Goal: {judged['line']}" for judged in results["goals"]]
    return "\n".join(lines) + "\n"


def goals(rows: list[dict], settings: Settings) -> list[dict]:
    """The default row (interval 3, quadratic from the start) against the goals, on the full run
    only."""
    row = next(
        (
            r
            for r in rows
            if (r["interval"], r["branch"], r["schedule"], r["center"])
            == (GOAL_INTERVAL, 0, "quadratic", 0.0)
        ),
        None,
    )
    if row is None or not settings.judged:
        return []
    return [
        goal(
            f"interval {GOAL_INTERVAL}: wall time per image, original / cached",
            row["cached"]["speedup"],
            SPEEDUP_GOAL,
            at_least=True,
        ),
        goal(
            f"interval {GOAL_INTERVAL}: FID ratio to the original",
            row["cached"]["fid_ratio"],
            FID_RATIO_GOAL,
        ),
    ]


def _schedule(row: dict) -> str:
    return f"quadratic at {row['center']:g}" if row["schedule"] == "quadratic" else "uniform"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="CI settings")
    parser.add_argument(
        "--out",
        type=Path,
        help="markdown report, a .json beside it (default: full settings to "
        "bench/results/cache_digits_cpu.md; quick ones to bench/cache_quick.md)",
    )
    args = parser.parse_args(argv)
    settings, mode = (QUICK, "quick") if args.quick else (FULL, "full")
    out = args.out or (HERE / "cache_quick.md" if args.quick else RESULTS / "cache_digits_cpu.md")
    start = time.perf_counter()
    rows = []
    for interval, branch, schedule, center in QUICK_ROWS if args.quick else ROWS:
        rows.append(measure_row(interval, branch, schedule, center, settings))
        print(
            f"interval {interval} branch {branch} {_schedule(rows[-1])}: FID ratio "
            f"{rows[-1]['cached']['fid_ratio']:.3f}, {rows[-1]['cached']['speedup']:.2f}x",
            flush=True,
        )
    command = f"python -m bench.cache{' --quick' if args.quick else ''}"
    results = {
        "mode": mode,
        "settings": vars(settings),
        "rows": rows,
        "goals": goals(rows, settings),
    }
    text = write_results(
        out, f"Feature caching benchmark ({mode})", command, start, body(results), results
    )
    print(text)


if __name__ == "__main__":
    main()
