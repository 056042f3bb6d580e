"""The step-distillation benchmark: at 1, 2, 4 and 8 steps, the teacher's own DDIM at that step count (what a user
has without training), the progressive student and the consistency student, each against the teacher's DDIM 50,
sampled and timed in one run on this machine.

    python -m bench.distill            # full: 2,000 samples, `accel distill`'s training budgets, plus the
                                       #   parameterization ablation (an eps student beside the v one)
                                       #   -> bench/results/distill_digits_cpu.json and .md
    python -m bench.distill --quick    # CI: a few hundred samples and a few training steps, same code

The progressive students of every step count come from one chain of stages (32 -> 16 -> 8 -> 4 -> 2 -> 1: a
stage's student does not depend on the final step count); the consistency student is trained once and sampled
at each step count, as consistency models are.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import accel
from accel.distillation.config import CONSISTENCY, PROGRESSIVE
from accel.distillation.workflow import teacher_ddim
from accel.metrics.digits_cnn import to_uint8
from accel.metrics.quality import fid_setup
from accel.train.data import training_images
from bench.run import write_results

HERE = Path(__file__).parent
STEP_COUNTS = (8, 4, 2, 1)
GOALS = {4: 1.25, 2: 1.5, 1: 2.0}  # FID ratio to the teacher's DDIM 50 (the goals)


@dataclass(frozen=True)
class Settings:
    n: int                    # samples per row
    progressive_steps: int    # training steps per progressive stage
    consistency_steps: int
    train_batch: int
    sampling_batch: int
    parameterization: bool    # also distill an eps-predicting progressive student
    judged: bool              # mark rows against the goals (the full budgets only)


FULL = Settings(n=2000, progressive_steps=PROGRESSIVE.steps, consistency_steps=CONSISTENCY.steps,
                train_batch=PROGRESSIVE.batch_size, sampling_batch=500, parameterization=True, judged=True)
# CI: about 2 minutes on 2 cores
QUICK = Settings(n=200, progressive_steps=60, consistency_steps=150, train_batch=32, sampling_batch=200,
                 parameterization=False, judged=False)


class Measure:
    """FID and wall time per image of one model and sampler, from the same seed (noise) as every other row."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.fid = fid_setup((1, 16, 16))

    def __call__(self, model, spec) -> dict:
        samples = accel.sample(model, self.settings.n, seed=0, spec=spec, batch_size=self.settings.sampling_batch,
                               progress=False)
        return {"sampler": spec.describe(), "calls_per_image": samples.calls_per_image,
                "fid": self.fid.scores(to_uint8(samples.images))["fid"], "ms_per_image": samples.seconds_per_image * 1e3}


def progressive_rows(measure: Measure, images, settings: Settings, prediction: str, work: Path) -> list[dict]:
    train = replace(PROGRESSIVE, steps=settings.progressive_steps, batch_size=settings.train_batch)
    rows = []
    for steps in STEP_COUNTS:  # each run reuses the stages of the one before and trains one more
        student = accel.distill(accel.load("digits"), accel.DistillConfig(steps=steps, prediction_type=prediction),
                                images, train, work_dir=work, progress=False)
        seconds = sum(stage["seconds"] for stage in student.transforms[-1]["stages"])
        rows.append({"steps": steps, "model": f"progressive ({_name(prediction)} student)", "train_s": seconds,
                     **measure(student, student.sampling)})
    return rows


def consistency_rows(measure: Measure, images, settings: Settings) -> list[dict]:
    train = replace(CONSISTENCY, steps=settings.consistency_steps, batch_size=settings.train_batch)
    student = accel.distill(accel.load("digits"), accel.DistillConfig(method="consistency", steps=1), images, train,
                            progress=False)
    seconds = student.transforms[-1]["stages"][0]["seconds"]
    return [{"steps": steps, "model": "consistency (v student)", "train_s": seconds,
             **measure(student, replace(student.sampling, steps=steps))} for steps in STEP_COUNTS]


def _name(prediction: str) -> str:
    return {"v_prediction": "v", "epsilon": "eps", "sample": "x"}[prediction]


def markdown(reference: dict, rows: list[dict], settings: Settings) -> str:
    lines = [f"Teacher: DDIM 50 (its own sampler), FID {reference['fid']:.2f}, {reference['ms_per_image']:.2f} ms "
             f"per image. {settings.n} samples per row, seed 0; FID on the digits-CNN features.", "",
             "| steps | model | sampler | FID | FID ratio to DDIM 50 | ms per image | faster than DDIM 50 | "
             "training s |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        ratio = row["fid"] / reference["fid"]
        goal = GOALS.get(row["steps"])
        judged = settings.judged and goal is not None and not row["model"].startswith("teacher")
        mark = (" (met)" if ratio <= goal else " (MISSED)") if judged else ""
        train = f"{row['train_s']:.0f}" if "train_s" in row else "-"
        lines.append(f"| {row['steps']} | {row['model']} | {row['sampler']} | {row['fid']:.2f} | {ratio:.2f}{mark} | "
                     f"{row['ms_per_image']:.3f} | {reference['ms_per_image'] / row['ms_per_image']:.1f}x | {train} |")
    lines += ["", "Goals (FID ratio, judged on the full run only: quick budgets are a smoke test): 4 steps within "
              "1.25, 2 steps within 1.5, 1 step within 2.0. PSNR to the teacher "
              "is left out: a few-step student and the teacher's 50-step DDIM follow different paths from the same "
              "noise (and consistency sampling draws fresh noise at every step), so pixel distance would measure the "
              "path, not the quality. Training seconds: progressive rows count every stage up to that step count."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI settings")
    parser.add_argument("--out", type=Path, help="markdown report, a .json beside it (default: full settings to "
                        "bench/results/distill_digits_cpu.md; quick ones to bench/distill_quick.md)")
    args = parser.parse_args(argv)
    settings, mode = (QUICK, "quick") if args.quick else (FULL, "full")
    out = args.out or (HERE / "distill_quick.md" if args.quick else HERE / "results" / "distill_digits_cpu.md")
    start = time.perf_counter()
    teacher = accel.load("digits")
    measure = Measure(settings)
    images = training_images(None, teacher).images
    reference = measure(teacher, teacher.sampling)
    rows = [{"steps": steps, "model": "teacher, plain DDIM", **measure(teacher, teacher_ddim(teacher, steps))}
            for steps in STEP_COUNTS]
    predictions = ("v_prediction", "epsilon") if settings.parameterization else ("v_prediction",)
    with tempfile.TemporaryDirectory() as work:
        for prediction in predictions:
            rows += progressive_rows(measure, images, settings, prediction, Path(work) / prediction)
    rows += consistency_rows(measure, images, settings)
    rows.sort(key=lambda row: -row["steps"])
    command = f"python -m bench.distill{' --quick' if args.quick else ''}"
    text = write_results(out, f"Step distillation benchmark ({mode})", command, start,
                         markdown(reference, rows, settings),
                         {"mode": mode, "settings": vars(settings), "teacher_ddim50": reference, "rows": rows})
    print(text)


if __name__ == "__main__":
    main()
