"""The built-in recipes on the built-in model: `accel compress --recipe R` for each, its stage table and times.

    python -m bench.compress                 # full: every built-in recipe, 2,000 samples
                                             #   -> bench/results/compress_digits_cpu.json and .md
    python -m bench.compress --quick         # CI: the quick recipe, 100 samples -> bench/compress_quick.json and .md
    python -m bench.compress --recipes fast --work runs   # one recipe; its run kept in runs/fast

Each recipe runs with ``--resume`` in ``--work``, so an interrupted benchmark continues where it stopped. A
recipe's time is the sum of its stages' wall times (each recorded when the stage ran, in OUT/compress.json) plus
the final side-by-side evaluation of this run.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

from accel.cli import main as accel_main
from accel.compress import builtin_recipes, load_recipe
from accel.compress.stage_table import table_markdown
from bench.run import write_results

HERE = Path(__file__).parent
FULL_N, QUICK_N = 2000, 100
# The goals for the fast recipe's final exported model, against the original in PyTorch at DDIM 50
GOAL_RECIPE = "fast"
GOALS = {"speedup": 15.0, "fid_ratio": 1.5, "size_ratio": 0.2}
MOONSHOT = {"speedup": 30.0, "fid_ratio": 1.25}


def run_recipe(name: str, n: int, work: Path) -> dict:
    start = time.perf_counter()
    stdout = io.StringIO()
    argv = ["compress", "--recipe", name, "--n", str(n), "--out", str(work / name), "--resume", "--json"]
    with contextlib.redirect_stdout(stdout):
        code = accel_main(argv)
    if code != 0:
        sys.exit(f"accel {' '.join(argv)} failed with status {code}")
    wall_s = time.perf_counter() - start
    report = json.loads(stdout.getvalue())
    rows = report["stages"]
    ran_now = sum(row["stage_seconds"] for row in rows[1:] if not row["reused"])
    chain_s = sum(row["stage_seconds"] for row in rows[1:])
    return {"recipe": name, "description": load_recipe(name).description, "command": f"accel {' '.join(argv[:3])}",
            "n": n, "rows": rows, "stages_s": chain_s, "evaluation_s": wall_s - ran_now,
            "total_s": chain_s + wall_s - ran_now, "goals": goal_lines(rows[-1]) if name == GOAL_RECIPE else []}


def goal_lines(final: dict) -> list[str]:
    measured = {"speedup": final["speedup"], "fid_ratio": final["fid_ratio"], "size_ratio": final["size_ratio"]}
    met = (measured["speedup"] >= GOALS["speedup"] and measured["fid_ratio"] <= GOALS["fid_ratio"]
           and measured["size_ratio"] <= GOALS["size_ratio"])
    moonshot = measured["speedup"] >= MOONSHOT["speedup"] and measured["fid_ratio"] <= MOONSHOT["fid_ratio"]
    summary = (f"{measured['speedup']:.1f}x less wall time per image, FID ratio {measured['fid_ratio']:.3f}, size "
               f"ratio {measured['size_ratio']:.3f} ({final['runtime']})")
    return [f"at least 15x, FID within 50%, file at most 0.2 of fp32: {'met' if met else 'MISSED'} ({summary})",
            f"moonshot, 30x at FID within 25%: {'met' if moonshot else 'not met'}"]


def markdown(results: list[dict]) -> str:
    parts = []
    for result in results:
        minutes = result["total_s"] / 60
        parts += [f"## `{result['command']}` ({result['n']} samples)", "", result["description"], "",
                  f"Whole recipe: {minutes:.1f} min ({result['stages_s'] / 60:.1f} min of stages, "
                  f"{result['evaluation_s'] / 60:.1f} min for the final evaluation of all of them).", "",
                  table_markdown(result["rows"]), "",
                  *[f"- Goal: {line}" for line in result["goals"]], ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI: the quick recipe at 100 samples")
    parser.add_argument("--recipes", help="comma-separated built-in recipes (default: all; quick: quick)")
    parser.add_argument("--work", type=Path, help="where the runs are kept (default: a temporary folder)")
    parser.add_argument("--out", type=Path, help="markdown report, a .json beside it")
    args = parser.parse_args(argv)
    names = args.recipes.split(",") if args.recipes else (["quick"] if args.quick else list(builtin_recipes()))
    n, mode = (QUICK_N, "quick") if args.quick else (FULL_N, "full")
    out = args.out or (HERE / "compress_quick.md" if args.quick else HERE / "results" / "compress_digits_cpu.md")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        results = [run_recipe(name, n, work) for name in names]
    command = f"python -m bench.compress{' --quick' if args.quick else ''}"
    print(write_results(out, f"Built-in recipes ({mode})", command, start, markdown(results),
                        {"mode": mode, "n": n, "recipes": results}))


if __name__ == "__main__":
    main()
