"""Step distillation: progressive distillation (halving the steps stage by stage) and consistency distillation
(LCM-style skipping-step solver, EMA target, multistep consistency sampling) into a 1-64 step student that
carries its own sampler. Registered as the ``distill`` transform; training runs on ``accel.train``."""
from accel.core import registry
from accel.distillation import apply
from accel.distillation.config import METHODS, DistillConfig

DISTILL = registry.register(registry.Transform(
    name="distill", config=DistillConfig, apply=apply.distill,
    may_follow=("prune",)))  # quantize after distilling: the student's trajectory is what calibration must see


def distill(denoiser, config: DistillConfig, data=None, train_config=None, work_dir=None, progress: bool = True):
    """Distill ``denoiser`` in place into a ``config.steps``-step student and return it. ``data``: clean training
    images (a tensor, N x C x H x W in [-1, 1]), or what ``--data`` takes: None (the digits set, for ``digits``),
    ``"teacher"`` (the teacher's own samples) or an .npz path; ``train_config``: the budget (default: per stage
    for progressive, in all for consistency, as ``accel distill``); ``work_dir``: where checkpoints go (default: a
    temporary folder)."""
    import torch

    from accel.train.data import training_images

    images = data if isinstance(data, torch.Tensor) else training_images(data, denoiser, progress=progress).images
    registry.apply(denoiser, DISTILL.name, config, images, train_config, work_dir, None, progress)
    return denoiser


__all__ = ["METHODS", "DistillConfig", "distill"]
