"""The distill stage (``accel distill``, a recipe's ``distill`` stage): training images, then a
few-step student.

Training happens in the context's work folder (each progressive stage's checkpoints and finished
student, the teacher samples of data-free training): ``resume`` continues an interrupted run of the
same settings, and a leftover run is refused otherwise. Under ``accelerate launch`` every process
trains its share.
"""

from __future__ import annotations

from accel.core import registry, stages
from accel.core.errors import AccelError
from accel.core.stages import Context, Key, Settings, StageResult
from accel.distillation.apply import check_distillable, default_training
from accel.distillation.config import DistillConfig, parse_range
from accel.train import TRAINING_KEYS
from accel.train.data import DataConfig, data_identity, given_images, training_images
from accel.train.runs import check_leftovers, record_run, work_folder

# data-free training: drawn once, kept for a resumed run
TEACHER_SAMPLES = "teacher-samples.safetensors"


def run(model, settings: Settings, context: Context) -> StageResult:
    config, train_config, data = settings["distill"], settings["train"], settings["data"]
    _check_teacher(model)
    check_distillable(model, config)
    identity = (
        given_images(context.images, model).identity
        if context.images is not None
        else data_identity(data, model, config.seed)
    )
    run_id = {
        "model": model.source,
        "distill": config.to_dict(),
        "train": train_config.to_dict(),
        "data": identity,
    }
    with work_folder(context.work_dir, "accel-distill-") as work_dir:
        check_leftovers(work_dir, context.resume, run_id)
        images = (
            given_images(context.images, model)
            if context.images is not None
            else training_images(
                data,
                model,
                seed=config.seed,
                batch_size=context.batch_size,
                progress=context.progress,
                cache=work_dir / TEACHER_SAMPLES,
            )
        )
        record_run(work_dir, run_id)
        record = registry.apply(
            model,
            "distill",
            config,
            images.images,
            train_config,
            work_dir,
            run_id,
            context.progress,
            images.labels,
        )
    record["data"] = images.describe()
    return StageResult(model, record)


def _check_teacher(teacher) -> None:
    names = [record["name"] for record in teacher.transforms]
    if "quantize" in names or "optimize" in names:
        raise AccelError(
            "this model is quantized or optimized: distill the full-precision model first, then "
            "quantize the student (its calibration follows the student's own trajectory)"
        )
    registry.check_can_follow(teacher.transforms, "distill")


DISTILL_STAGE = stages.register(
    stages.Stage(
        name="distill",
        # the training budget is per stage for progressive distillation, in all for consistency
        roles={
            "distill": DistillConfig(),
            "train": lambda built: default_training(built["distill"].method),
            "data": DataConfig(),
        },
        run=run,
        keys={
            "prediction": Key("distill", "prediction_type"),
            "train-steps": Key("train", "steps"),
            "guidance-range": Key("distill", "guidance_range", convert=parse_range),
            **TRAINING_KEYS,
        },
        open_roles=("distill",),
        trains=lambda settings: True,
    )
)
