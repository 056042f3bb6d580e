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
from accel.core.processes import current_processes
from accel.core.sampling_spec import SamplingSpec
from accel.distillation.config import CONSISTENCY, PROGRESSIVE, DistillConfig
from accel.distillation.schedule import Schedule
from accel.distillation.tasks import ConsistencyDistillation, ProgressiveStage
from accel.train import TrainConfig, loss_curve, train
from accel.train.loop import CHECKPOINT
from accel.train.runs import check_same_run, work_folder

STUDENT = "student"  # a finished stage's folder: its student's weights and record


def default_training(method: str) -> TrainConfig:
    return PROGRESSIVE if method == "progressive" else CONSISTENCY


def teacher_prediction(denoiser) -> str:
    return denoiser.sampling.prediction_type or denoiser.scheduler_config.get(
        "prediction_type", "epsilon"
    )


def student_sampler(config: DistillConfig, schedule: Schedule) -> SamplingSpec:
    """The sampler the student was trained for: DDIM with trailing timesteps (progressive), or
    multistep consistency sampling (diffusers' LCMScheduler on the solver's timestep grid)."""
    if config.method == "progressive":
        return SamplingSpec("ddim", config.steps, options={"timestep_spacing": "trailing"})
    return SamplingSpec(
        "LCMScheduler",
        config.steps,
        options={"original_inference_steps": schedule.train_steps // config.solver_skip},
    )


def check_distillable(denoiser, config: DistillConfig) -> Schedule:
    """Refuse, before any work, a teacher accel cannot step or a step count its solver grid cannot
    give."""
    schedule = Schedule(denoiser.scheduler_config)
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
) -> dict:
    """``images``: N x C x H x W clean training images in [-1, 1]; ``run``: what identifies this run
    (a checkpoint in ``work_dir`` is resumed only for the same ``run``). Returns what accel.json
    records."""
    schedule = check_distillable(denoiser, config)
    train_config = train_config or default_training(config.method)
    run = {"distill": config.to_dict(), "train": train_config.to_dict(), **(run or {})}
    with work_folder(work_dir, "accel-distill-") as folder:
        stages = (_progressive if config.method == "progressive" else _consistency)(
            denoiser, config, images, train_config, folder, run, progress
        )
    teacher = {
        "sampler": denoiser.sampling.to_dict(),
        "prediction_type": teacher_prediction(denoiser),
    }
    denoiser.scheduler_config["prediction_type"] = config.prediction_type
    denoiser.sampling = student_sampler(config, schedule)
    return {"teacher": teacher, "sampler": denoiser.sampling.to_dict(), "stages": stages}


def _progressive(denoiser, config, images, train_config, folder, run, progress) -> list[dict]:
    teacher, prediction = copy.deepcopy(denoiser.module), teacher_prediction(denoiser)
    # a stage's student does not depend on the final step count: a run to 2 steps reuses the stages
    # of one to 4
    stage_run = {**run, "distill": {k: v for k, v in run["distill"].items() if k != "steps"}}
    records = []
    for steps in config.stages():
        task = functools.partial(ProgressiveStage, student_steps=steps)
        records.append(
            _stage(
                denoiser,
                task(teacher, prediction, *_common(denoiser, config, images)),
                train_config,
                folder / f"stage-{steps:02d}",
                {**stage_run, "stage": steps},
                f"progressive {2 * steps}->{steps} steps",
                progress,
            )
        )
        records[-1]["student_steps"] = steps
        teacher, prediction = copy.deepcopy(denoiser.module), config.prediction_type
    return records


def _consistency(denoiser, config, images, train_config, folder, run, progress) -> list[dict]:
    task = ConsistencyDistillation(
        copy.deepcopy(denoiser.module),
        teacher_prediction(denoiser),
        *_common(denoiser, config, images),
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


def _common(denoiser, config, images):
    """The arguments every task takes after (teacher, its prediction type)."""
    cond_fn = denoiser.default_cond if denoiser.cond_kind else None
    return (
        denoiser.eps_of,
        Schedule(denoiser.scheduler_config),
        images,
        cond_fn,
        config.prediction_type,
    )


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
