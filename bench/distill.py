"""The step-distillation benchmark: at 1, 2, 4 and 8 steps, the teacher's own DDIM at that step
count (what a user has without training), the progressive student and the consistency student, each
against the teacher's DDIM 50; every model trained first, then all sampled and timed in one run.

    python -m bench.distill          # full: 2,000 samples, `accel distill`'s training budgets, and
                                     #   the parameterization ablation (an eps student)
                                     #   -> bench/results/distill_digits_cpu.json and .md
    python -m bench.distill --quick  # CI: a few dozen samples, a few training steps, same code

The progressive students of every step count come from one chain of stages (32 -> 16 -> 8 -> 4 ->
2 -> 1: a stage's student does not depend on the final step count); the consistency student is
trained once and sampled at each step count, as consistency models are.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import accel
from accel.distillation.config import CONSISTENCY, PROGRESSIVE
from accel.evaluate import evaluate_many
from accel.measure.distill import teacher_ddim
from accel.report import table
from accel.train.data import DataConfig, training_images
from bench.common import HERE, RESULTS, write_results

STEP_COUNTS = (8, 4, 2, 1)
COLUMNS = {
    "steps": "steps",
    "model": "model",
    "sampler": "sampler",
    "fid": "FID",
    "fid_ratio": "FID ratio to DDIM 50",
    "calls_per_image": "calls/image",
    "ms_per_image": "ms/image",
    "speedup": "speedup vs DDIM 50 (time/image)",
    "train_s": "training (s)",
}


@dataclass(frozen=True)
class Settings:
    n: int  # samples per row
    progressive_steps: int  # training steps per progressive stage
    consistency_steps: int
    train_batch: int
    batch_size: int  # samples per call
    parameterization: bool  # also distill an eps-predicting progressive student


FULL = Settings(
    n=2000,
    progressive_steps=PROGRESSIVE.steps,
    consistency_steps=CONSISTENCY.steps,
    train_batch=PROGRESSIVE.batch_size,
    batch_size=500,
    parameterization=True,
)
# CI: every row's code path at few samples and steps (at 200 samples and 60 / 150 training steps:
# 8 of CI's minutes on a 2-core AMD EPYC)
QUICK = Settings(
    n=60,
    progressive_steps=20,
    consistency_steps=50,
    train_batch=32,
    batch_size=60,
    parameterization=False,
)


def with_sampler(model, spec):
    """The same network with another sampler (a shallow copy: the weights are shared)."""
    other = copy.copy(model)
    other.sampling = spec
    return other


def progressive_students(
    images, settings: Settings, prediction: str, work: Path
) -> list[tuple[dict, object]]:
    train = replace(PROGRESSIVE, steps=settings.progressive_steps, batch_size=settings.train_batch)
    students = []
    for steps in STEP_COUNTS:  # each run reuses the stages of the one before and trains one more
        student = accel.distill(
            accel.load("digits"),
            accel.DistillConfig(steps=steps, prediction_type=prediction),
            images,
            train,
            work_dir=work,
            progress=False,
        )
        seconds = sum(stage["seconds"] for stage in student.transforms[-1]["stages"])
        students.append(
            (
                {
                    "steps": steps,
                    "model": f"progressive ({_name(prediction)} student)",
                    "train_s": seconds,
                },
                student,
            )
        )
    return students


def consistency_students(images, settings: Settings) -> list[tuple[dict, object]]:
    train = replace(CONSISTENCY, steps=settings.consistency_steps, batch_size=settings.train_batch)
    student = accel.distill(
        accel.load("digits"),
        accel.DistillConfig(method="consistency", steps=1),
        images,
        train,
        progress=False,
    )
    seconds = student.transforms[-1]["stages"][0]["seconds"]
    return [
        (
            {"steps": steps, "model": "consistency (v student)", "train_s": seconds},
            with_sampler(student, replace(student.sampling, steps=steps)),
        )
        for steps in STEP_COUNTS
    ]


def _name(prediction: str) -> str:
    return {"v_prediction": "v", "epsilon": "eps", "sample": "x"}[prediction]


def measured_rows(teacher, entries: list[tuple[dict, object]], settings: Settings) -> list[dict]:
    """The teacher at DDIM 50 and every entry's model, sampled and timed in one run."""
    evaluations = evaluate_many(
        [teacher, *(model for _, model in entries)],
        accel.EvalConfig(n=settings.n, batch_size=settings.batch_size),
        command="bench",
        model_name="digits",
    )
    rows = [{"steps": 50, "model": "teacher", **_measured(evaluations[0].report, "original")}]
    for (entry, _), evaluation in zip(entries, evaluations):
        rows.append({**entry, **_measured(evaluation.report, "compressed")})
    return rows


def _measured(report, side: str) -> dict:
    measures = getattr(report, side)
    delta = report.delta if side == "compressed" else None
    return {
        "sampler": f"{measures.sampler['name']} {measures.sampler['steps']}",
        "fid": measures.fid,
        "fid_ratio": delta.fid_ratio if delta else 1.0,
        "calls_per_image": measures.calls_per_image,
        "ms_per_image": measures.sampling_s_per_image * 1e3,
        "speedup": delta.speedup if delta else 1.0,
    }


def body(results: dict) -> str:
    return "\n".join(
        [
            f"{results['settings']['n']} samples per row, seed 0, FID on the "
            "digits-CNN features; every row sampled in one run with the teacher's "
            "DDIM 50 (batches interleaved), so each speedup is a ratio from that run.",
            "",
            table(COLUMNS, results["rows"]),
            "",
            "PSNR to the teacher is left out: a few-step student and the teacher's 50-step DDIM "
            "follow different paths from the same noise (and consistency sampling draws fresh "
            "noise at every step), so pixel distance would measure the path, not the quality. "
            "Training seconds: progressive rows count every stage up to that step count.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="CI settings")
    parser.add_argument(
        "--out",
        type=Path,
        help="markdown report, a .json beside it (default: full settings to "
        "bench/results/distill_digits_cpu.md; quick ones to bench/distill_quick.md)",
    )
    args = parser.parse_args(argv)
    settings, mode = (QUICK, "quick") if args.quick else (FULL, "full")
    out = args.out or (
        HERE / "distill_quick.md" if args.quick else RESULTS / "distill_digits_cpu.md"
    )
    start = time.perf_counter()
    teacher = accel.load("digits")
    images = training_images(DataConfig(), teacher).images
    entries = [
        (
            {"steps": steps, "model": "teacher, plain DDIM"},
            with_sampler(teacher, teacher_ddim(teacher, steps)),
        )
        for steps in STEP_COUNTS
    ]
    predictions = ("v_prediction", "epsilon") if settings.parameterization else ("v_prediction",)
    with tempfile.TemporaryDirectory() as work:
        for prediction in predictions:
            entries += progressive_students(images, settings, prediction, Path(work) / prediction)
    entries += consistency_students(images, settings)
    rows = measured_rows(teacher, entries, settings)
    rows.sort(key=lambda row: -row["steps"])
    command = f"python -m bench.distill{' --quick' if args.quick else ''}"
    results = {"mode": mode, "settings": vars(settings), "rows": rows}
    print(
        write_results(
            out, f"Step distillation benchmark ({mode})", command, start, body(results), results
        )
    )


if __name__ == "__main__":
    main()
