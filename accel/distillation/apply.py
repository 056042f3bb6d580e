"""Distill a denoiser in place: its network becomes the student, its sampler the student's.

Progressive distillation runs stage after stage, each student becoming the next stage's teacher;
consistency distillation is one run. Training happens in ``work_dir``: each stage checkpoints there
as it trains and leaves its finished student there, so an interrupted run resumes in the stage it
was in.
"""

from __future__ import annotations

import copy
import functools
import shutil
from pathlib import Path

import torch

from accel.core.checkpoint import load_checkpoint, save_checkpoint
from accel.core.errors import ConfigError
from accel.core.guidance_input import add_guidance_input
from accel.core.processes import current_processes
from accel.core.sampling_checks import refuse_without_null_class
from accel.core.sampling_spec import SamplingSpec
from accel.distillation.config import CONSISTENCY, PROGRESSIVE, DistillConfig
from accel.distillation.schedule import Schedule
from accel.distillation.tasks import (
    ConsistencyDistillation,
    Guidance,
    GuidanceStage,
    ProgressiveStage,
)
from accel.train import TrainConfig, loss_curve, train
from accel.train.loop import CHECKPOINT
from accel.train.runs import check_same_run, work_folder

STUDENT = "student"  # a finished stage's folder: its student's weights and record
GUIDANCE_STAGE = "guidance"  # the folder of stage one of guidance distillation


def default_training(method: str) -> TrainConfig:
    return PROGRESSIVE if method == "progressive" else CONSISTENCY


def teacher_prediction(denoiser) -> str:
    return denoiser.sampling.prediction_type or denoiser.scheduler_config.get(
        "prediction_type", "epsilon"
    )


def student_sampler(
    config: DistillConfig, schedule: Schedule, teacher: SamplingSpec
) -> SamplingSpec:
    """The sampler the student was trained for: DDIM with trailing timesteps (progressive), or
    multistep consistency sampling (diffusers' LCMScheduler on the solver's timestep grid); the
    teacher's labels, and its guidance weight where the student takes one as input (moved into
    the student's range), else none (a baked-in weight is in the network)."""
    guidance = 1.0
    if config.guidance_range:
        low, high = config.guidance_range
        guidance = min(max(teacher.guidance, low), high)
    common = {"guidance": guidance, "labels": teacher.labels}
    if config.method == "progressive":
        return SamplingSpec(
            "ddim", config.steps, options={"timestep_spacing": "trailing"}, **common
        )
    return SamplingSpec(
        "LCMScheduler",
        config.steps,
        options={"original_inference_steps": schedule.train_steps // config.solver_skip},
        **common,
    )


def teacher_guidance(denoiser, config: DistillConfig) -> Guidance | None:
    """The guidance the first target carries: the student's range (it takes w as input), or the
    teacher's own sampler weight baked in (None where the teacher samples unguided)."""
    if config.guidance_range:
        low, high = config.guidance_range
        return Guidance(low, high, denoiser.null_class, teacher_input=False, student_input=True)
    weight = denoiser.sampling.guidance
    if weight == 1.0:
        return None
    return Guidance(weight, weight, denoiser.null_class, teacher_input=False, student_input=False)


def check_distillable(denoiser, config: DistillConfig) -> Schedule:
    """Refuse, before any work, a teacher accel cannot step or a step count its solver grid cannot
    give."""
    schedule = Schedule(denoiser.scheduler_config)
    needs_null = {
        "guidance_range": config.guidance_range,
        "label_dropout": config.label_dropout,
        # a guided text teacher's unconditional half is the empty prompt's states: not distilled yet
        "teacher guidance": denoiser.sampling.guided,
    }
    for field in (field for field, given in needs_null.items() if given):
        refuse_without_null_class(denoiser, "DistillConfig", field)
    if config.method == "consistency" and config.steps > schedule.train_steps // config.solver_skip:
        raise ConfigError(
            "DistillConfig",
            "steps",
            f"{config.steps} is more than the consistency solver's grid has "
            f"({schedule.train_steps} // {config.solver_skip} = "
            f"{schedule.train_steps // config.solver_skip} timesteps)",
        )
    return schedule


def distill(
    denoiser,
    config: DistillConfig,
    images: torch.Tensor,
    train_config: TrainConfig | None = None,
    work_dir: str | Path | None = None,
    run: dict | None = None,
    progress: bool = True,
    labels: torch.Tensor | None = None,
) -> dict:
    """``images``: N x C x H x W clean training images in [-1, 1] (``labels``: their classes, for a
    class-conditional model); ``run``: what identifies this run (a checkpoint in ``work_dir`` is
    resumed only for the same ``run``). Returns what accel.json records."""
    schedule = check_distillable(denoiser, config)
    train_config = train_config or default_training(config.method)
    run = {"distill": config.to_dict(), "train": train_config.to_dict(), **(run or {})}
    teacher = {
        "sampler": denoiser.sampling.to_dict(),
        "prediction_type": teacher_prediction(denoiser),
        "evaluations_per_step": denoiser.evaluations_per_step(),
    }
    guidance = teacher_guidance(denoiser, config)
    with work_folder(work_dir, "accel-distill-") as folder:
        stages = (_progressive if config.method == "progressive" else _consistency)(
            denoiser, config, (images, labels), train_config, folder, run, progress
        )
    denoiser.scheduler_config["prediction_type"] = config.prediction_type
    denoiser.sampling = student_sampler(config, schedule, denoiser.sampling)
    record = {"teacher": teacher, "sampler": denoiser.sampling.to_dict(), "stages": stages}
    if guidance is not None:
        record["guidance"] = (
            {"input": True, "range": list(config.guidance_range)}
            if guidance.student_input
            else {"input": False, "baked_in": guidance.low}
        )
    return record


def rebuild(denoiser, record: dict) -> None:
    """A guidance-distilled student's network takes w: a fresh base gets that input back."""
    if record.get("guidance", {}).get("input"):
        add_guidance_input(denoiser.module, *record["guidance"]["range"])


def _progressive(denoiser, config, data, train_config, folder, run, progress) -> list[dict]:
    teacher, prediction = copy.deepcopy(denoiser.module), teacher_prediction(denoiser)
    # a stage's student does not depend on the final step count: a run to 2 steps reuses the stages
    # of one to 4
    stage_run = {**run, "distill": {k: v for k, v in run["distill"].items() if k != "steps"}}
    guidance, records = teacher_guidance(denoiser, config), []
    if guidance is not None and guidance.student_input:
        # stage one (Meng et al. 2023): one call with w learns the two guided evaluations; the
        # progressive stages then halve the steps of that student, w still an input
        add_guidance_input(denoiser.module, guidance.low, guidance.high)
        stage_one = GuidanceStage(
            teacher,
            prediction,
            *_common(denoiser, teacher_prediction(denoiser), data),
            guidance=guidance,
            **_labels(denoiser, config, data),
        )
        records.append(
            _stage(
                denoiser,
                stage_one,
                train_config,
                folder / GUIDANCE_STAGE,
                {**stage_run, "stage": GUIDANCE_STAGE},
                "guidance: two calls -> one with w",
                progress,
            )
        )
        records[-1]["stage"] = GUIDANCE_STAGE
        teacher = copy.deepcopy(denoiser.module)
        guidance = Guidance(
            guidance.low, guidance.high, guidance.null_class, teacher_input=True, student_input=True
        )
    for steps in config.stages():
        task = functools.partial(
            ProgressiveStage,
            student_steps=steps,
            guidance=guidance,
            **_labels(denoiser, config, data),
        )
        records.append(
            _stage(
                denoiser,
                task(teacher, prediction, *_common(denoiser, config.prediction_type, data)),
                train_config,
                folder / f"stage-{steps:02d}",
                {**stage_run, "stage": steps},
                f"progressive {2 * steps}->{steps} steps",
                progress,
            )
        )
        records[-1]["student_steps"] = steps
        teacher, prediction = copy.deepcopy(denoiser.module), config.prediction_type
        if guidance is not None and not guidance.student_input:
            guidance = None  # the weight is baked into this stage's student: its own output
    return records


def _consistency(denoiser, config, data, train_config, folder, run, progress) -> list[dict]:
    teacher, guidance = copy.deepcopy(denoiser.module), teacher_guidance(denoiser, config)
    if guidance is not None and guidance.student_input:
        # as LCM: the w-conditioned student learns from the two-call guided teacher directly
        add_guidance_input(denoiser.module, guidance.low, guidance.high)
    task = ConsistencyDistillation(
        teacher,
        teacher_prediction(denoiser),
        *_common(denoiser, config.prediction_type, data),
        guidance=guidance,
        **_labels(denoiser, config, data),
        student=denoiser.module,
        skip=config.solver_skip,
        target_ema=config.target_ema,
        loss=config.loss,
    )
    return [
        _stage(
            denoiser,
            task,
            train_config,
            folder / "consistency",
            run,
            "consistency distillation",
            progress,
        )
    ]


def _common(denoiser, student_prediction: str, data) -> tuple:
    """The arguments every task takes after (teacher, its prediction type); ``data``: (images,
    their labels or None)."""
    cond_fn = denoiser.default_cond if denoiser.cond_kind else None
    images, _ = data
    return (
        denoiser.eps_of,
        Schedule(denoiser.scheduler_config),
        images,
        cond_fn,
        student_prediction,
    )


def _labels(denoiser, config: DistillConfig, data) -> dict:
    """How a task draws its labels: each image's own, and the null class's share."""
    dropout = (denoiser.null_class, config.label_dropout) if config.label_dropout else None
    return {"labels": data[1], "null_dropout": dropout}


def _stage(
    denoiser, task, train_config, stage_dir: Path, run: dict, desc: str, progress: bool
) -> dict:
    """Train one stage (or load its finished student from an interrupted run); the denoiser's
    network becomes the stage's student (its EMA weights)."""
    done = stage_dir / STUDENT
    if done.exists():
        tensors, record = load_checkpoint(done)
        check_same_run(record, run, done)
        del record["run"]
        denoiser.module.load_state_dict(tensors)
        return record
    result = train(
        denoiser.module,
        task,
        train_config,
        stage_dir,
        run=run,
        desc=desc,
        progress=progress,
        forward_of=lambda module: functools.partial(denoiser.eps_of, module),
    )
    denoiser.module = result.network
    record = {
        "train_steps": train_config.steps,
        "seconds": round(result.elapsed_s, 1),
        "loss_per_tenth": loss_curve(result.losses),
        "processes": result.processes,
        "resumed_at_step": result.resumed_at,
    }
    current_processes().on_main(lambda: _keep_student(done, denoiser.module, record, run))
    return record


def _keep_student(done: Path, network, record: dict, run: dict) -> None:
    """The finished stage's student, kept in place of its checkpoint (a resumed run starts after
    it)."""
    save_checkpoint(done, network.state_dict(), {**record, "run": run})
    shutil.rmtree(done.parent / CHECKPOINT, ignore_errors=True)
