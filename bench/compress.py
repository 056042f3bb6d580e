"""The built-in recipes on the built-in model: `accel compress --recipe R` for each, its stage table
and times.

    python -m bench.compress             # full: every built-in UNet recipe, 2,000 samples
                                         #   -> bench/results/compress_digits_cpu.json and .md
    python -m bench.compress --quick     # CI: the quick recipe, 100 samples
                                         #   -> bench/compress_quick.json and .md
    python -m bench.compress --recipes fast --work runs   # one recipe; its run kept in runs/fast

Each recipe runs with ``resume`` in ``--work``, so an interrupted benchmark continues where it
stopped. A recipe's time is the sum of its stages' wall times (each recorded when the stage ran, in
OUT/compress.json) plus the final side-by-side evaluation of this run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import accel
from accel.compress import builtin_recipes, load_recipe
from accel.compress.stage_table import table_markdown
from bench.common import HERE, RESULTS, goal, write_results

FULL_N, QUICK_N = 2000, 100
# The fast recipe's final exported model against the original in PyTorch at DDIM 50
GOAL_RECIPE = "fast"


def _for_dit(recipe: str) -> bool:
    """The dit- recipes are for class-conditional transformers, not for the built-in UNet (not
    measured by this benchmark yet)."""
    return recipe.startswith("dit-")


def run_recipe(name: str, n: int, work: Path) -> dict:
    start = time.perf_counter()
    result = accel.compress(
        "digits", name, work / name, eval_config=accel.EvalConfig(n=n), resume=True, progress=False
    )
    wall_s = time.perf_counter() - start
    rows = result.report.sections["stages"]
    stage_rows = [row for row in rows if row["stage_seconds"] is not None]  # not the original's
    ran_now = sum(row["stage_seconds"] for row in stage_rows if not row["reused"])
    chain_s = sum(row["stage_seconds"] for row in stage_rows)
    return {
        "recipe": name,
        "description": load_recipe(name).description,
        "command": f"accel compress --recipe {name}",
        "n": n,
        "rows": rows,
        "stages_s": chain_s,
        "evaluation_s": wall_s - ran_now,
        "total_s": chain_s + wall_s - ran_now,
        "goals": goals(rows[-1]) if name == GOAL_RECIPE else [],
    }


def goals(final: dict) -> list[dict]:
    return [
        goal("wall time per image, original / final", final["speedup"], 15.0, at_least=True),
        goal("FID ratio to the original", final["fid_ratio"], 1.5),
        goal("file size, final / fp32", final["size_ratio"], 0.2),
        goal(
            "moonshot: wall time per image, original / final", final["speedup"], 30.0, at_least=True
        ),
        goal("moonshot: FID ratio to the original", final["fid_ratio"], 1.25),
    ]


def body(results: dict) -> str:
    parts = []
    for result in results["recipes"]:
        minutes = result["total_s"] / 60
        parts += [
            f"## `{result['command']}` ({result['n']} samples)",
            "",
            result["description"],
            "",
            f"Whole recipe: {minutes:.1f} min ({result['stages_s'] / 60:.1f} min of stages, "
            f"{result['evaluation_s'] / 60:.1f} min for the final evaluation of all of them).",
            "",
            table_markdown(result["rows"]),
            "",
            *[f"- Goal: {judged['line']}" for judged in result["goals"]],
            "",
        ]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="CI: the quick recipe at 100 samples")
    parser.add_argument(
        "--recipes", help="comma-separated built-in recipes (default: all; quick: quick)"
    )
    parser.add_argument(
        "--work", type=Path, help="where the runs are kept (default: a temporary folder)"
    )
    parser.add_argument("--out", type=Path, help="markdown report, a .json beside it")
    args = parser.parse_args(argv)
    names = (
        args.recipes.split(",")
        if args.recipes
        else (
            ["quick"] if args.quick else [name for name in builtin_recipes() if not _for_dit(name)]
        )
    )
    n, mode = (QUICK_N, "quick") if args.quick else (FULL_N, "full")
    out = args.out or (
        HERE / "compress_quick.md" if args.quick else RESULTS / "compress_digits_cpu.md"
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        recipes = [run_recipe(name, n, work) for name in names]
    command = f"python -m bench.compress{' --quick' if args.quick else ''}"
    results = {"mode": mode, "n": n, "recipes": recipes}
    print(write_results(out, f"Built-in recipes ({mode})", command, start, body(results), results))


if __name__ == "__main__":
    main()
