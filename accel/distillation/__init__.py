"""Step distillation: progressive distillation (halving the steps stage by stage) and consistency
distillation (LCM-style skipping-step solver, EMA target, multistep consistency sampling) into a
1-64 step student that carries its own sampler. Registered as the ``distill`` transform and stage;
training runs on ``accel.train``."""

from accel.core import registry
from accel.distillation import apply
from accel.distillation.config import METHODS, DistillConfig
from accel.distillation.stage import DISTILL_STAGE

DISTILL = registry.register(
    registry.Transform(
        name="distill",
        config=DistillConfig,
        apply=apply.distill,
        may_follow=("prune",),
        rebuild=apply.rebuild,
    )
)  # quantize after distilling: the student's trajectory is what calibration must see


def distill(
    denoiser,
    config: DistillConfig,
    images,
    train_config=None,
    work_dir=None,
    progress: bool = True,
    labels=None,
):
    """Distill ``denoiser`` in place into a ``config.steps``-step student on ``images`` (clean
    training images, N x C x H x W in [-1, 1]; ``labels``: their classes, for a class-conditional
    model) and return it. ``train_config``: the budget (default:
    per stage for progressive, in all for consistency, as ``accel distill``); ``work_dir``: where
    checkpoints go (default: a temporary folder). ``accel.run_stage("distill", ...)`` also draws the
    images (the digits set, an .npz, the teacher)."""
    registry.apply(
        denoiser, DISTILL.name, config, images, train_config, work_dir, None, progress, labels
    )
    return denoiser


__all__ = ["DISTILL_STAGE", "METHODS", "DistillConfig", "distill"]
