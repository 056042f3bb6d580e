"""The prune stage (``accel prune``, a recipe's ``prune`` stage): prune, then fine-tune on training
data.

Fine-tuning checkpoints into the context's work folder: ``resume`` continues an interrupted run of
the same settings, and a leftover run is refused otherwise. Under ``accelerate launch`` every
process prunes identically and trains its share.
"""

from __future__ import annotations

import copy
from dataclasses import replace

from accel.core import registry, stages
from accel.core.errors import ConfigError
from accel.core.sampling_spec import SamplerChange
from accel.core.stages import SAMPLER_KEYS, Context, Key, Settings, StageResult, change_sampler
from accel.prune.config import FINETUNE, FinetuneConfig, PruneConfig
from accel.prune.finetune import finetune
from accel.train import TRAINING_KEYS, loss_curve
from accel.train.data import TEACHER, DataConfig, data_identity, given_images, training_images
from accel.train.runs import check_leftovers, record_run, work_folder


def run(model, settings: Settings, context: Context) -> StageResult:
    change_sampler(model, settings)
    # a quantized input: refused before any work
    registry.check_can_follow(model.transforms, "prune")
    data, tuning = settings["data"], settings["finetune"]
    train_config = replace(settings["train"], steps=tuning.steps) if tuning.steps else None
    # a weight criterion without fine-tuning reads no images: none are drawn or asked for
    needs_images = settings["prune"].needs_gradients or train_config is not None
    identity = (
        given_images(context.images, model).identity
        if context.images is not None
        else _data_identity(data, model, settings["prune"].seed)
        if needs_images
        else None
    )
    run_id = {
        "model": model.source,
        "prune": settings["prune"].to_dict(),
        "train": train_config and train_config.to_dict(),
        "data": identity,
        "distill_weight": tuning.distill_weight,
        "label_dropout": tuning.label_dropout,
    }
    with work_folder(context.work_dir, "accel-prune-") as work_dir:
        check_leftovers(work_dir, context.resume, run_id)
        images = _images(model, data, context, settings["prune"].seed) if needs_images else None
        original = copy.deepcopy(model) if train_config else None  # the fine-tuning's teacher
        record = registry.apply(
            model, "prune", settings["prune"], None if images is None else images.images
        )
        context.observe("pruned", model)
        if train_config:
            record_run(work_dir, run_id)
            trained = finetune(
                model,
                original,
                images,
                train_config,
                work_dir,
                run_id,
                tuning.distill_weight,
                context.progress,
                tuning.label_dropout,
            )
            record["finetune"] = {
                "config": train_config.to_dict(),
                "data": images.describe(),
                "distill_weight": tuning.distill_weight if images.source != TEACHER else None,
                "label_dropout": tuning.label_dropout if images.labels is not None else None,
                "loss_per_tenth": loss_curve(trained.losses),
                "seconds": round(trained.elapsed_s, 1),
                "processes": trained.processes,
                "resumed_at_step": trained.resumed_at,
            }
    return StageResult(model, record)


def _data_identity(data: DataConfig, model, seed: int) -> dict:
    try:
        return data_identity(data, model, seed)
    except ConfigError as error:  # no images: say which pruning needs none
        raise ConfigError(
            error.owner,
            error.field,
            f"{error.problem}; or prune by --criterion magnitude with --finetune-steps 0, "
            "which reads no images",
        )


def _images(model, data: DataConfig, context: Context, seed: int):
    if context.images is not None:
        return given_images(context.images, model)
    return training_images(
        data, model, seed=seed, batch_size=context.batch_size, progress=context.progress
    )


PRUNE_STAGE = stages.register(
    stages.Stage(
        name="prune",
        roles={
            "prune": PruneConfig(),
            "finetune": FinetuneConfig(),
            "train": FINETUNE,
            "data": DataConfig(),
            "sampling": SamplerChange(),
        },
        run=run,
        keys={"finetune-steps": Key("finetune", "steps"), **TRAINING_KEYS, **SAMPLER_KEYS},
        open_roles=("prune", "finetune"),
        trains=lambda settings: settings["finetune"].steps > 0,
    )
)
