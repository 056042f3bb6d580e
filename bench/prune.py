"""The pruning benchmark: the criterion/ratio ablation, and the pruned model's speed in PyTorch and
ONNX Runtime.

    python -m bench.prune          # full: 2,000 samples, DDIM 50, 1,000 fine-tuning steps per row
                                   #   -> bench/results/prune_digits_cpu.json and .md
    python -m bench.prune --quick  # CI: a few dozen samples, a few fine-tuning steps, same code

Ablation rows are `accel prune --ablation`'s: every criterion at 0.3 and diff-pruning at 0.2 and
0.5, each pruned and fine-tuned alike, then all sampled in one run with the original. The runtime
rows sample the original and the default recipe's model (diff-pruning at 0.3, not fine-tuned:
fine-tuning does not change the architecture) in PyTorch and exported to fp32 ONNX in ONNX Runtime,
all four in one run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import accel
from accel.evaluate import evaluate_many
from accel.measure.prune import ablation_markdown, run_ablation
from accel.prune.config import FINETUNE
from accel.report import table
from bench.common import HERE, RESULTS, write_results
from bench.run import row

RUNTIME_COLUMNS = {
    "model": "model",
    "runtime": "runs in",
    "fid": "FID",
    "ms_per_image": "ms/image",
    "speedup": "speedup vs original in PyTorch",
    "speedup_same_runtime": "speedup vs original in the same runtime",
    "latency_ms": "ms/step (batch 1)",
}


@dataclass(frozen=True)
class Settings:
    n: int  # samples per row
    steps: int  # DDIM steps
    finetune_steps: int
    train_batch: int
    importance_batch: int
    timestep_stride: int
    batch_size: int  # samples per call


FULL = Settings(
    n=2000,
    steps=50,
    finetune_steps=FINETUNE.steps,
    train_batch=FINETUNE.batch_size,
    importance_batch=64,
    timestep_stride=10,
    batch_size=500,
)
# CI: every row's code path at few samples and steps (at 200 samples and 30 fine-tuning steps: 4 of
# CI's minutes on a 2-core AMD EPYC)
QUICK = Settings(
    n=60,
    steps=20,
    finetune_steps=10,
    train_batch=32,
    importance_batch=16,
    timestep_stride=50,
    batch_size=60,
)


def prune_settings(settings: Settings, finetune: bool = True):
    return accel.stage_settings(
        "prune",
        importance_batch=settings.importance_batch,
        timestep_stride=settings.timestep_stride,
        train_batch=settings.train_batch,
        finetune_steps=settings.finetune_steps if finetune else 0,
    )


def runtime_rows(settings: Settings, work: Path) -> list[dict]:
    """The original and the pruned model, in PyTorch and in ONNX Runtime, sampled in one run."""
    original = accel.load("digits", sampling={"steps": settings.steps})
    pruned = accel.run_stage(
        "prune", original, prune_settings(settings, finetune=False), progress=False
    ).model
    graphs = [
        accel.run_stage(
            "export", model, format="onnx", out=work / f"{name}.onnx", progress=False
        ).model
        for name, model in (("original", original), ("pruned", pruned))
    ]
    evaluations = evaluate_many(
        [original, pruned, *graphs],
        accel.EvalConfig(n=settings.n, batch_size=settings.batch_size),
        command="bench",
        model_name="digits",
    )
    rows = [
        row("original", evaluations[0].report, "original"),
        row("pruned 0.3", evaluations[0].report),
        row("original", evaluations[1].report),
        row("pruned 0.3", evaluations[2].report),
    ]
    for own, reference in (
        (rows[0], rows[0]),
        (rows[1], rows[0]),
        (rows[2], rows[2]),
        (rows[3], rows[2]),
    ):
        own["speedup_same_runtime"] = reference["ms_per_image"] / own["ms_per_image"]
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="CI settings")
    parser.add_argument(
        "--out",
        type=Path,
        help="markdown report, a .json beside it (default: full settings to "
        "bench/results/prune_digits_cpu.md; quick ones to bench/prune_quick.md)",
    )
    args = parser.parse_args(argv)
    settings, mode = (QUICK, "quick") if args.quick else (FULL, "full")
    out = args.out or (HERE / "prune_quick.md" if args.quick else RESULTS / "prune_digits_cpu.md")
    start = time.perf_counter()
    ablation = run_ablation(
        lambda: accel.load("digits", sampling={"steps": settings.steps}),
        prune_settings(settings),
        accel.EvalConfig(n=settings.n, batch_size=settings.batch_size),
        progress=False,
    )
    with tempfile.TemporaryDirectory() as work:
        runtimes = runtime_rows(settings, Path(work))
    command = f"python -m bench.prune{' --quick' if args.quick else ''}"
    results = {"mode": mode, "settings": vars(settings), "ablation": ablation, "runtimes": runtimes}
    print(write_results(out, f"Pruning benchmark ({mode})", command, start, body(results), results))


def runtime_table(results: dict) -> str:
    settings = results["settings"]
    return (
        f"## Runtimes ({settings['n']} samples, DDIM {settings['steps']}, one run)\n\n"
        "The pruned model is not fine-tuned here: fine-tuning "
        "changes no width, so it changes no time.\n\n"
        + table(RUNTIME_COLUMNS, results["runtimes"])
        + "\n"
    )


def body(results: dict) -> str:
    return ablation_markdown(results["ablation"]) + "\n" + runtime_table(results)


if __name__ == "__main__":
    main()
