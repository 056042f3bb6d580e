"""Distill a model and measure the student against its teacher: what ``accel distill`` runs.

The teacher is measured with its own sampler (DDIM 50 for the built-in model), the student with the sampler it
was distilled for, from the same seeds and initial noise. The report adds what the same step count costs without
distillation (the teacher's own DDIM at the student's steps) and the training record of every stage.

Training happens in ``<out>.partial`` (each stage's checkpoints and finished student, the teacher samples of
``--data teacher``); ``resume`` continues an interrupted run of the same settings. Under ``accelerate launch``
every process trains its share; the main process measures and returns the result, the others return None.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from accel.core import registry
from accel.core.errors import AccelError
from accel.core.files import read_json_object, write_text
from accel.core.processes import SINGLE
from accel.core.sampling_spec import SamplingSpec
from accel.distillation import DISTILL
from accel.distillation.apply import check_distillable, default_training
from accel.distillation.config import DistillConfig
from accel.distillation.schedule import Schedule, student_timesteps
from accel.evaluate import EvalConfig, Evaluation, evaluate
from accel.metrics.digits_cnn import to_uint8
from accel.metrics.quality import fid_setup
from accel.models.loading import load
from accel.sampling import sample
from accel.train import TrainConfig, work_dir_for
from accel.train.data import data_identity, training_images
from accel.train.loop import check_same_run

RUN = "run.json"
# The goals on digits: FID ratio to the teacher's DDIM 50 by student steps, and time per image at 4 steps
FID_GOALS = {1: 2.0, 2: 1.5, 4: 1.25}
SPEEDUP_GOAL = 10.0


@dataclass
class DistillResult:
    model: object
    evaluation: Evaluation


def teacher_ddim(teacher, steps: int) -> SamplingSpec:
    """What the same step count gives without distillation: the teacher's DDIM at the student's timesteps."""
    return SamplingSpec("ddim", steps, prediction_type=teacher.sampling.prediction_type,
                        options={"timestep_spacing": "trailing"})


def distill_and_evaluate(source, config: DistillConfig, train_config: TrainConfig | None, eval_config: EvalConfig,
                         out, device=None, data: str | None = None, resume: bool = False, teacher_samples: int = 1000,
                         progress: bool = True) -> DistillResult | None:
    teacher = load(source, device)
    _check_teacher(teacher)
    check_distillable(teacher, config)
    train_config = train_config or default_training(config.method)
    run = {"model": str(source), "distill": config.to_dict(), "train": train_config.to_dict(),
           "data": data_identity(data, teacher, teacher_samples, eval_config.seed)}
    work_dir = work_dir_for(out)
    _check_leftovers(work_dir, resume, run)
    images = training_images(data, teacher, teacher_samples=teacher_samples, seed=eval_config.seed,
                             batch_size=eval_config.batch_size, progress=progress,
                             cache=work_dir / "teacher-samples.safetensors")
    work_dir.mkdir(parents=True, exist_ok=True)
    write_text(work_dir / RUN, json.dumps({"run": run}, indent=2) + "\n")
    student = load(source, device)
    registry.apply(student, DISTILL.name, config, images.images, train_config, work_dir, run, progress)
    if not _is_main():
        return None
    evaluation = evaluate(student, baseline=teacher, config=eval_config, command="distill", model_name=str(source),
                          transform_config=config.to_dict(), processes=SINGLE)  # the other processes are done
    free = _teacher_at_student_steps(teacher, config.steps, eval_config, progress)
    _add_sections(evaluation.report, student.transforms[-1], images.describe(), config, free)
    shutil.rmtree(work_dir, ignore_errors=True)  # the artifact is written next; the checkpoints are no longer needed
    return DistillResult(student, evaluation)


def _check_teacher(teacher) -> None:
    names = [record["name"] for record in teacher.transforms]
    if "quantize" in names or "optimize" in names:
        raise AccelError("this model is quantized or optimized: distill the full-precision model first, then "
                         "quantize the student (its calibration follows the student's own trajectory)")
    registry.check_can_follow(teacher.transforms, DISTILL.name)


def _check_leftovers(work_dir: Path, resume: bool, run: dict) -> None:
    """Refuse a leftover run unless resuming, and another run's leftovers even then."""
    if work_dir.exists() and not resume:
        raise AccelError(f"{work_dir} holds an interrupted run: pass --resume to continue it, or remove it to start "
                         "over")
    if (work_dir / RUN).is_file():
        check_same_run(read_json_object(work_dir / RUN), run, work_dir)


def _is_main() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def _teacher_at_student_steps(teacher, steps: int, eval_config: EvalConfig, progress: bool) -> dict:
    spec = teacher_ddim(teacher, steps)
    fid = fid_setup(teacher.sample_shape, eval_config.inception_weights, eval_config.fid_ref, str(teacher.device))
    samples = sample(teacher, eval_config.n, eval_config.seed, spec, eval_config.batch_size, progress=progress)
    return {"sampler": spec.to_dict(), "fid": fid.scores(to_uint8(samples.images))["fid"],
            "seconds_per_image": samples.seconds_per_image,
            "timesteps": student_timesteps(Schedule(teacher.scheduler_config), steps)}


def goal_checks(report, steps: int) -> list[str]:
    """The issue's goals for the student's step count, each met or MISSED with the number measured."""
    lines = []
    bound = FID_GOALS[max(k for k in FID_GOALS if k <= steps)]
    ratio = report.delta.fid_ratio
    if ratio is not None:
        lines.append(f"FID within {bound - 1:.0%} of the teacher's: {'met' if ratio <= bound else 'MISSED'} "
                     f"(FID ratio {ratio:.3f})")
    speedup = report.delta.speedup
    if steps <= 4 and speedup is not None:
        lines.append(f"time per image at least {SPEEDUP_GOAL:g}x lower: "
                     f"{'met' if speedup >= SPEEDUP_GOAL else 'MISSED'} ({speedup:.1f}x)")
    return lines


def _add_sections(report, record: dict, data: str, config: DistillConfig, free: dict) -> None:
    o, c = report.original, report.compressed
    section = {"method": config.method, "student_sampler": record["sampler"],
               "student_prediction": config.prediction_type, "teacher": record["teacher"],
               "data": data, "stages": record["stages"],
               "calls_per_image": [o.calls_per_image, c.calls_per_image],
               "seconds_per_image": [o.sampling_s_per_image, c.sampling_s_per_image],
               "teacher_at_student_steps": free}
    report.add_section("distillation", section, _markdown(section, o, c))
    checks = goal_checks(report, config.steps)
    free_ratio = free["fid"] / o.fid if o.fid else None
    if c.fid is not None and free["fid"] is not None:
        ahead = c.fid < free["fid"]
        checks.append(f"ahead of the teacher's own DDIM at {config.steps} steps: {'met' if ahead else 'MISSED'} "
                      f"(FID {c.fid:.2f} vs {free['fid']:.2f}"
                      + (f", ratio {free_ratio:.2f} to DDIM {o.calls_per_image})" if free_ratio else ")"))
    report.add_section("goals", checks, "".join(f"Goal: {line}\n" for line in checks) if checks else None)


def _markdown(section: dict, o, c) -> str:
    free = section["teacher_at_student_steps"]
    lines = ["## Distillation", "",
             f"- {section['method']} distillation on {section['data']}; the student samples with "
             f"{SamplingSpec.from_dict(section['student_sampler']).describe()} and predicts "
             f"{section['student_prediction']}",
             f"- denoiser calls per image: teacher {o.calls_per_image}, student {c.calls_per_image}; wall time per "
             f"image {o.sampling_s_per_image * 1e3:.2f} ms vs {c.sampling_s_per_image * 1e3:.2f} ms "
             f"({o.sampling_s_per_image / c.sampling_s_per_image:.1f}x)",
             f"- without distillation, the teacher's DDIM at {len(free['timesteps'])} steps (timesteps "
             f"{free['timesteps']}): FID {free['fid']:.2f}, {free['seconds_per_image'] * 1e3:.2f} ms per image", "",
             "| stage | training steps | seconds | loss, first tenth -> last |", "|---|---|---|---|"]
    for stage in section["stages"]:
        name = f"{2 * stage['student_steps']} -> {stage['student_steps']} steps" if "student_steps" in stage \
            else "consistency"
        losses = stage["loss_per_tenth"]
        lines.append(f"| {name} | {stage['train_steps']} | {stage['seconds']:.0f} | {losses[0]:.4f} -> "
                     f"{losses[-1]:.4f} |")
    return "\n".join(lines) + "\n"

