"""The built-in recipes on the built-in models: `accel compress --recipe R` for each, its stage
table and times.

    python -m bench.compress             # full: every built-in UNet recipe, 2,000 samples
                                         #   -> bench/results/compress_digits_cpu.json and .md
    python -m bench.compress --quick     # CI: the quick recipe, 20 training steps, 40 samples
                                         #   -> bench/compress_quick.json and .md
    python -m bench.compress --recipes fast --work runs   # one recipe; its run kept in runs/fast
    python -m bench.compress --model digits-dit   # fast and training-free (their DiT variants) on
                                         #   the guided transformer at w = 1.5, 2,000 samples
                                         #   -> bench/results/compress_dit_digits_cpu.json and .md

Each recipe runs with ``resume`` in ``--work``, so an interrupted benchmark continues where it
stopped. A recipe's time is the sum of its stages' wall times (each recorded when the stage ran, in
OUT/compress.json) plus the final side-by-side evaluation of this run.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import accel
from accel.compress import builtin_recipes
from accel.compress.recipe import Recipe, load_recipe
from accel.compress.stage_table import table_markdown
from bench.common import HERE, RESULTS, goal, write_results

FULL_N, QUICK_N = 2000, 40
# CI trains a few steps: the quick recipe's 300 fine-tuning steps took 10 of CI's minutes on a
# 2-core AMD EPYC
QUICK_TRAINING_STEPS = 20
# The fast recipe's final exported model against the original in PyTorch at DDIM 50
GOAL_RECIPE = "fast"
DIT = "digits-dit"
DIT_GUIDANCE = 1.5  # DiT's FID setting: the teacher samples 50 steps x 2 calls
DIT_RECIPES = ("fast", "training-free")  # their dit- variants run


def _for_dit(recipe: str) -> bool:
    """The dit- recipes are the transformer's variants of the others (`fast` on digits-dit runs
    dit-fast)."""
    return recipe.startswith("dit-")


def _original(model: str):
    """digits samples as it comes; digits-dit with guidance, as its recipes are judged."""
    return accel.load(DIT, sampling={"guidance": DIT_GUIDANCE}) if model == DIT else model


def with_training_steps(name: str, model: str, steps: int) -> Recipe:
    """The built-in recipe (the model kind's variant) with every stage that trains cut to ``steps``
    steps."""
    recipe = load_recipe(name, accel.load(model).kind)
    trains = ("finetune-steps", "train-steps")  # prune's and distill's
    stages = tuple(
        dataclasses.replace(
            stage, settings={k: steps if k in trains else v for k, v in stage.settings.items()}
        )
        for stage in recipe.stages
    )
    description = f"{recipe.description} (CI: {steps} training steps per stage)"
    return dataclasses.replace(recipe, description=description, stages=stages)


def run_recipe(
    name: str, n: int, work: Path, model: str = "digits", training_steps: int | None = None
) -> dict:
    start = time.perf_counter()
    recipe = name if training_steps is None else with_training_steps(name, model, training_steps)
    result = accel.compress(
        _original(model),
        recipe,
        work / f"{model}-{name}",
        eval_config=accel.EvalConfig(n=n),
        resume=True,
        progress=False,
    )
    wall_s = time.perf_counter() - start
    rows = result.report.sections["stages"]
    stage_rows = [row for row in rows if row["stage_seconds"] is not None]  # not the original's
    ran_now = sum(row["stage_seconds"] for row in stage_rows if not row["reused"])
    chain_s = sum(row["stage_seconds"] for row in stage_rows)
    total_s = chain_s + wall_s - ran_now
    guided = f" --model {DIT} --guidance {DIT_GUIDANCE:g}" if model == DIT else ""
    judged = dit_goals(rows, total_s) if model == DIT else goals(rows[-1])
    ran = result.report.sections["recipe"]  # the model kind's variant where there is one
    return {
        "recipe": ran["name"],
        "model": model,
        "description": ran["description"],
        "command": f"accel compress{guided} --recipe {name}",
        "n": n,
        "rows": rows,
        "stages_s": chain_s,
        "evaluation_s": wall_s - ran_now,
        "total_s": total_s,
        "goals": judged if name == GOAL_RECIPE else [],
    }


def dit_goals(rows: list[dict], total_s: float) -> list[dict]:
    """`accel compress --model digits-dit --recipe fast` against the guided teacher at DDIM 50."""
    final, original = rows[-1], rows[0]
    points = 100 * (final["class_accuracy"] - original["class_accuracy"])
    return [
        goal("wall time per image, guided original / final", final["speedup"], 40.0, at_least=True),
        goal("FID ratio to the guided original", final["fid_ratio"], 1.5),
        goal("class accuracy lost, points", -points, 3.0),
        goal("whole recipe, minutes on this CPU", total_s / 60, 45.0),
    ]


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
    parser.add_argument(
        "--quick", action="store_true", help="CI: the quick recipe, few steps and samples"
    )
    parser.add_argument(
        "--recipes", help="comma-separated built-in recipes (default: all; quick: quick)"
    )
    parser.add_argument(
        "--work", type=Path, help="where the runs are kept (default: a temporary folder)"
    )
    parser.add_argument(
        "--model", default="digits", choices=("digits", DIT), help="the built-in model"
    )
    parser.add_argument("--out", type=Path, help="markdown report, a .json beside it")
    args = parser.parse_args(argv)
    dit = args.model == DIT
    names = (
        args.recipes.split(",")
        if args.recipes
        else (
            ["quick"]
            if args.quick
            else (list(DIT_RECIPES) if dit else [n for n in builtin_recipes() if not _for_dit(n)])
        )
    )
    n, mode = (QUICK_N, "quick") if args.quick else (FULL_N, "full")
    stem = "compress_dit" if dit else "compress"
    out = args.out or (
        HERE / f"{stem}_quick.md" if args.quick else RESULTS / f"{stem}_digits_cpu.md"
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        steps = QUICK_TRAINING_STEPS if args.quick else None
        recipes = [run_recipe(name, n, work, args.model, steps) for name in names]
    command = f"python -m bench.compress{' --quick' if args.quick else ''}"
    command += f" --model {DIT}" if dit else ""
    results = {"mode": mode, "n": n, "model": args.model, "recipes": recipes}
    if dit:
        results["guidance"] = DIT_GUIDANCE
    title = f"Built-in recipes ({mode})"
    print(write_results(out, title, command, start, body(results), results, args.model))


if __name__ == "__main__":
    main()
