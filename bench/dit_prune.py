"""Pruning the class-conditional transformer, ``digits-dit``: heads, MLP width, the conditioning
embedding's width and the residual width, fine-tuned on each image's own label with the null
class in a tenth of them, so guidance keeps working. The original and the pruned model in PyTorch
and exported to ONNX Runtime, unguided (the model's own sampler) in one run, then both guided.

    python -m bench.dit_prune          # full -> bench/results/dit_prune_digits_cpu.json and .md
    python -m bench.dit_prune --quick  # CI: a few samples, a few fine-tuning steps, same code
    python -m bench.dit_prune --finetune-steps 2000   # a longer fine-tuning
                                       #   -> bench/results/dit_prune_2000_digits_cpu.json and .md
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import accel
from accel.evaluate import evaluate_many
from accel.metrics.size import count_macs
from accel.prune.config import FINETUNE
from accel.report import table
from bench.common import HERE, RESULTS, goal, write_results
from bench.dit import row

MODEL = "digits-dit"
RATIO = 0.3
GUIDED = 1.5  # the guided rows' weight: DiT's FID setting

COLUMNS = {
    "model": "model",
    "runtime": "runs in",
    "sampler": "sampler",
    "fid": "FID",
    "fid_ratio": "FID ratio",
    "class_accuracy": "class accuracy",
    "worst_class_accuracy": "worst class",
    "ms_per_image": "ms/image",
    "speedup": "speedup (time/image)",
    "latency_ms": "ms/step",
    "macs_per_image": "MACs/image",
}


@dataclass(frozen=True)
class Settings:
    n: int  # samples per row, unguided table
    guided_n: int
    steps: int  # DDIM steps (the model's own: 50)
    finetune_steps: int
    train_batch: int
    batch_size: int
    judged: bool


# 1,000 samples (not 2,000) to leave the fine-tuning its full budget within about 25 minutes
FULL = Settings(
    n=1000,
    guided_n=500,
    steps=50,
    finetune_steps=FINETUNE.steps,
    train_batch=FINETUNE.batch_size,
    batch_size=500,
    judged=True,
)
QUICK = Settings(
    n=20, guided_n=20, steps=10, finetune_steps=3, train_batch=8, batch_size=20, judged=False
)


def pruned_model(original, settings: Settings):
    prune = accel.stage_settings(
        "prune",
        ratio=RATIO,
        finetune_steps=settings.finetune_steps,
        train_batch=settings.train_batch,
    )
    return accel.run_stage("prune", original, prune, progress=False)


def _rows(names: list[str], models: list, n: int, batch_size: int) -> list[dict]:
    evaluations = evaluate_many(
        models, accel.EvalConfig(n=n, batch_size=batch_size), command="bench", model_name=MODEL
    )
    return [row(names[0], evaluations[0].report, "original")] + [
        row(name, evaluation.report) for name, evaluation in zip(names[1:], evaluations)
    ]


def measured(settings: Settings, work: Path) -> dict:
    original = accel.load(MODEL, sampling={"steps": settings.steps})
    result = pruned_model(original, settings)
    pruned = result.model
    graphs = [
        accel.run_stage(
            "export", model, format="onnx", out=work / f"{name}.onnx", progress=False
        ).model
        for name, model in (("original", original), ("pruned", pruned))
    ]
    name = f"pruned {RATIO:g}"
    unguided = _rows(
        ["original", name, "original", name],
        [original, pruned, *graphs],
        settings.n,
        settings.batch_size,
    )
    guided = _rows(
        ["original", name],
        [_guided(original), _guided(pruned)],
        settings.guided_n,
        settings.batch_size,
    )
    return {
        "unguided": unguided,
        "guided": guided,
        "macs_removed": 1 - count_macs(pruned) / count_macs(original),
        "finetune_s": result.record.get("finetune", {}).get("seconds"),
    }


def _guided(model):
    guided = copy.copy(model)
    guided.sampling = replace(model.sampling, guidance=GUIDED)
    return guided


def goals(results: dict) -> list[dict]:
    torch_row, ort_original, ort_pruned = (results["unguided"][i] for i in (1, 2, 3))
    points = 100 * (torch_row["class_accuracy"] - results["unguided"][0]["class_accuracy"])
    return [
        goal("MACs removed at ratio 0.3", results["macs_removed"], 0.40, at_least=True),
        goal("FID ratio", torch_row["fid_ratio"], 1.25),
        goal("class accuracy lost, points", -points, 2.0),
        goal(
            "faster per step in PyTorch",
            results["unguided"][0]["latency_ms"] / torch_row["latency_ms"],
            1.0,
            at_least=True,
        ),
        goal(
            "faster per image in ONNX Runtime",
            ort_original["ms_per_image"] / ort_pruned["ms_per_image"],
            1.0,
            at_least=True,
        ),
    ]


def body(results: dict) -> str:
    settings = results["settings"]
    parts = [
        f"{MODEL} pruned at {RATIO:g} (heads, MLP width, the conditioning width and the residual "
        f"width), {settings['finetune_steps']} fine-tuning steps of batch "
        f"{settings['train_batch']} on each image's own label, a tenth of them the null class "
        f"({results['finetune_s']} s). {100 * results['macs_removed']:.1f}% fewer MACs per call.\n",
        f"## Unguided, DDIM {settings['steps']} ({settings['n']} samples, one run)\n",
        "Rows 3-4 run in ONNX Runtime; each row's FID ratio and speedup are against row 1.\n",
        table(COLUMNS, results["unguided"]),
        f"\n## Guided, w = {GUIDED:g} ({settings['guided_n']} samples, one run)\n",
        table(COLUMNS, results["guided"]),
    ]
    if results["goals"]:
        parts += ["\n## Goals\n", "\n".join(f"- {g['line']}" for g in results["goals"])]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="CI settings")
    parser.add_argument("--out", type=Path, help="markdown report (a .json beside it)")
    parser.add_argument(
        "--finetune-steps", type=int, help=f"fine-tuning steps (default {FULL.finetune_steps})"
    )
    args = parser.parse_args(argv)
    settings, mode = (QUICK, "quick") if args.quick else (FULL, "full")
    steps = args.finetune_steps
    name = "dit_prune" + (f"_{steps}" if steps else "")
    if steps:
        settings = replace(settings, finetune_steps=steps)
    out = args.out or (
        HERE / f"{name}_quick.md" if args.quick else RESULTS / f"{name}_digits_cpu.md"
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        results = {"mode": mode, "settings": vars(settings), **measured(settings, Path(work))}
    results["goals"] = goals(results) if settings.judged else []
    command = f"python -m bench.dit_prune{' --quick' if args.quick else ''}"
    command += f" --finetune-steps {steps}" if steps else ""
    title = f"Pruning the transformer ({mode})"
    print(write_results(out, title, command, start, body(results), results, MODEL))


if __name__ == "__main__":
    main()
