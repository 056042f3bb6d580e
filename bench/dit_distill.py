"""Guidance distillation on the class-conditional transformer, ``digits-dit``: at 8, 4, 2 and 1
steps, the guided teacher's own DDIM at that step count (two network evaluations per step), the
guidance-distilled student (the weight w is its input: one evaluation per step) and, as the
ablation, a student distilled without the w input that keeps the null class (label dropout) and is
sampled with two-call guidance; then whether the student follows w as the teacher does.

    python -m bench.dit_distill          # full: 2,000 samples per row -> bench/results/
                                         #   dit_distill_digits_cpu.json and .md
    python -m bench.dit_distill --quick  # CI: a few samples, a few training steps, same code

Every student is trained first; then each table is one ``evaluate_many`` run (batches of every
model interleaved), so each speedup is a ratio from one run. The students of every step count come
from one chain of progressive stages (16 -> 8 -> 4 -> 2 -> 1), each run reusing the stages of the
one before; the guidance-distilled chain starts with stage one (two guided calls -> one call with
w, Meng et al. 2023).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import accel
from accel.distillation.config import PROGRESSIVE
from accel.evaluate import evaluate_many
from accel.measure.distill import teacher_ddim
from accel.report import table
from accel.train.data import DataConfig, training_images
from bench.common import HERE, RESULTS, goal, write_results

MODEL = "digits-dit"
# The guided teacher: DiT's FID setting. On digits-dit guidance trades FID for class accuracy
# (bench/results/dit_digits_cpu.md), so the teacher here is the guided model a user would run,
# not the best-FID one.
TEACHER_GUIDANCE = 1.5
GUIDANCE_RANGE = (1.0, 3.0)  # the weights the student takes
FOLLOW_WEIGHTS = (1.0, 1.5, 2.0, 3.0)  # the student against the teacher at each
STEP_COUNTS = (8, 4, 2, 1)
TEACHER_STEPS = 16  # the first progressive teacher's DDIM steps

COLUMNS = {
    "steps": "steps",
    "model": "model",
    "evaluations_per_image": "evaluations/image",
    "fid": "FID",
    "fid_ratio": "FID ratio to guided DDIM 50",
    "class_accuracy": "class accuracy",
    "accuracy_points": "accuracy vs teacher (points)",
    "ms_per_image": "ms/image",
    "speedup": "speedup vs guided DDIM 50 (time/image)",
    "train_s": "training (s)",
}
FOLLOW_COLUMNS = {
    "guidance": "w",
    "teacher_fid": "teacher FID (DDIM 50)",
    "teacher_accuracy": "teacher class accuracy",
    "student_fid": "4-step student FID",
    "student_accuracy": "4-step student class accuracy",
}


@dataclass(frozen=True)
class Settings:
    n: int  # samples per row of the step table
    follow_n: int  # samples per row of the w table
    stage_steps: int  # training steps per stage
    train_batch: int
    batch_size: int  # samples per call
    ablation: bool  # also train the student without a w input
    judged: bool


# 500 training steps per stage (accel distill's default is 600): five stages of the guided chain and
# four of the ablation's take about 45 minutes on 2 CPU cores
FULL = Settings(
    n=2000,
    follow_n=500,
    stage_steps=500,
    train_batch=PROGRESSIVE.batch_size,
    batch_size=500,
    ablation=True,
    judged=True,
)
QUICK = Settings(
    n=40, follow_n=20, stage_steps=4, train_batch=8, batch_size=40, ablation=True, judged=False
)


def _teacher(guidance: float = TEACHER_GUIDANCE):
    return accel.load(MODEL, sampling={"guidance": guidance})


def with_sampler(model, spec):
    """The same network with another sampler (a shallow copy: the weights are shared)."""
    other = copy.copy(model)
    other.sampling = spec
    return other


def students(data, settings: Settings, work: Path, **distill) -> list[tuple[int, object, float]]:
    """(steps, student, training seconds so far) for every step count, from one chain of stages.
    ``distill``: DistillConfig fields; a ``teacher_guidance`` key sets the teacher's weight."""
    train = replace(PROGRESSIVE, steps=settings.stage_steps, batch_size=settings.train_batch)
    teacher_guidance = distill.pop("teacher_guidance", TEACHER_GUIDANCE)
    found = []
    for steps in STEP_COUNTS:
        student = accel.distill(
            _teacher(teacher_guidance),
            accel.DistillConfig(steps=steps, teacher_steps=TEACHER_STEPS, **distill),
            data.images,
            train,
            work_dir=work,
            progress=False,
            labels=data.labels,
        )
        seconds = sum(stage["seconds"] for stage in student.transforms[-1]["stages"])
        found.append((steps, student, seconds))
    return found


def step_rows(teacher, entries: list[tuple[dict, object]], settings: Settings) -> list[dict]:
    """The teacher at guided DDIM 50 and every entry, sampled and timed in one run."""
    evaluations = evaluate_many(
        [teacher, *(model for _, model in entries)],
        accel.EvalConfig(n=settings.n, batch_size=settings.batch_size),
        command="bench",
        model_name=MODEL,
    )
    first = evaluations[0].report
    rows = [{"steps": 50, "model": "teacher, guided DDIM", **_measured(first, "original")}]
    for (entry, _), evaluation in zip(entries, evaluations):
        rows.append({**entry, **_measured(evaluation.report, "compressed")})
    for row in rows:
        row["accuracy_points"] = 100 * (row["class_accuracy"] - rows[0]["class_accuracy"])
    return rows


def _measured(report, side: str) -> dict:
    measures = getattr(report, side)
    delta = report.delta if side == "compressed" else None
    return {
        "sampler": f"{measures.sampler['name']} {measures.sampler['steps']}",
        "guidance": measures.sampler["guidance"],
        "fid": measures.fid,
        "fid_ratio": delta.fid_ratio if delta else 1.0,
        "class_accuracy": measures.class_accuracy,
        "evaluations_per_image": measures.calls_per_image,
        "ms_per_image": measures.sampling_s_per_image * 1e3,
        "speedup": delta.speedup if delta else 1.0,
    }


def follow_rows(student, settings: Settings) -> list[dict]:
    """The 4-step student and the teacher's guided DDIM 50 at each weight, in one run."""
    models = []
    for w in FOLLOW_WEIGHTS:
        models += [_teacher(w), with_sampler(student, replace(student.sampling, guidance=w))]
    evaluations = evaluate_many(
        models,
        accel.EvalConfig(n=settings.follow_n, batch_size=settings.batch_size),
        command="bench",
        model_name=MODEL,
    )
    # evaluations[k] is models[k + 1] against models[0]
    measures = [evaluations[0].report.original] + [e.report.compressed for e in evaluations]
    return [
        {
            "guidance": w,
            "teacher_fid": measures[2 * index].fid,
            "teacher_accuracy": measures[2 * index].class_accuracy,
            "student_fid": measures[2 * index + 1].fid,
            "student_accuracy": measures[2 * index + 1].class_accuracy,
        }
        for index, w in enumerate(FOLLOW_WEIGHTS)
    ]


def goals(rows: list[dict], follow: list[dict]) -> list[dict]:
    def student(steps: int) -> dict:
        return next(r for r in rows if r["steps"] == steps and r["model"].startswith("guidance"))

    four, one = student(4), student(1)
    accuracies = [r["student_accuracy"] for r in follow]
    return [
        goal("4-step student FID ratio", four["fid_ratio"], 1.25),
        goal("4-step student accuracy lost, points", -four["accuracy_points"], 2.0),
        goal("4-step student speedup (time/image)", four["speedup"], 20.0, at_least=True),
        goal("1-step student FID ratio", one["fid_ratio"], 2.0),
        goal("1-step student accuracy lost, points", -one["accuracy_points"], 5.0),
        goal(
            "student accuracy rises with w (lowest w's minus highest w's, points)",
            100 * (accuracies[0] - accuracies[-1]),
            0.0,
        ),
    ]


def body(results: dict) -> str:
    settings = results["settings"]
    parts = [
        f"Teacher: {MODEL} at guidance {TEACHER_GUIDANCE:g}, DDIM 50 (two network evaluations "
        f"per step). Students: progressive distillation from its DDIM {TEACHER_STEPS}, "
        f"{settings['stage_steps']} training steps of batch {settings['train_batch']} per stage; "
        f"the guidance-distilled student takes w in {GUIDANCE_RANGE[0]:g}-{GUIDANCE_RANGE[1]:g} "
        f"and is sampled at w = {TEACHER_GUIDANCE:g}.\n",
        f"## Steps ({settings['n']} samples per row, seed 0, labels cycling over the classes; "
        "one run)\n",
        table(COLUMNS, results["rows"]),
        f"\n## Does the student follow w? ({settings['follow_n']} samples per row, one run)\n",
        table(FOLLOW_COLUMNS, results["follow"]),
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
    args = parser.parse_args(argv)
    settings, mode = (QUICK, "quick") if args.quick else (FULL, "full")
    out = args.out or (
        HERE / "dit_distill_quick.md" if args.quick else RESULTS / "dit_distill_digits_cpu.md"
    )
    start = time.perf_counter()
    teacher = _teacher()
    data = training_images(DataConfig(), teacher)
    entries = [
        (
            {"steps": steps, "model": "teacher, guided DDIM"},
            with_sampler(teacher, teacher_ddim(teacher, steps)),
        )
        for steps in STEP_COUNTS
    ]
    with tempfile.TemporaryDirectory() as work:
        guided = students(data, settings, Path(work) / "w", guidance_range=GUIDANCE_RANGE)
        entries += [
            ({"steps": s, "model": "guidance-distilled (w input)", "train_s": t}, m)
            for s, m, t in guided
        ]
        if settings.ablation:
            # the teacher unguided, the student keeps the null class and is guided by two calls
            plain = students(
                data, settings, Path(work) / "plain", label_dropout=0.1, teacher_guidance=1.0
            )
            entries += [
                (
                    {"steps": s, "model": "distilled without w (two-call guidance)", "train_s": t},
                    with_sampler(m, replace(m.sampling, guidance=TEACHER_GUIDANCE)),
                )
                for s, m, t in plain
            ]
    rows = step_rows(teacher, entries, settings)
    rows.sort(key=lambda row: -row["steps"])
    four_step = next(m for s, m, _ in guided if s == 4)
    follow = follow_rows(four_step, settings)
    results = {"mode": mode, "settings": vars(settings), "rows": rows, "follow": follow}
    results["goals"] = goals(rows, follow) if settings.judged else []
    command = f"python -m bench.dit_distill{' --quick' if args.quick else ''}"
    title = f"Guidance distillation ({mode})"
    print(write_results(out, title, command, start, body(results), results, MODEL))


if __name__ == "__main__":
    main()
