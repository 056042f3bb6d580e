"""Structured pruning of denoisers (Diff-Pruning-style): importance criteria over the diffusion
timesteps, Torch-Pruning's dependency graph for the coupled channels, whole-head attention pruning,
the diffusers attribute fix-ups, and the widths record an artifact is rebuilt from. Registered as
the ``prune`` transform and stage (prune, then fine-tune on ``accel.train``)."""

from accel.core import registry
from accel.prune import apply
from accel.prune.config import CRITERIA, FinetuneConfig, PruneConfig
from accel.prune.stage import PRUNE_STAGE

PRUNE = registry.register(
    registry.Transform(
        name="prune",
        config=PruneConfig,
        apply=apply.prune,
        # first in the chain: a distilled, cached, quantized or optimized model is pruned from its
        # original
        may_follow=(),
        rebuild=apply.rebuild,
    )
)


def prune_(denoiser, config: PruneConfig, images=None) -> dict:
    """Prune ``denoiser`` in place with ``config``; ``images`` (N x C x H x W in [-1, 1]) feed the
    gradient criteria (taylor, diff-pruning). Returns the record kept in accel.json."""
    return registry.apply(denoiser, PRUNE.name, config, images)


__all__ = ["CRITERIA", "PRUNE_STAGE", "FinetuneConfig", "PruneConfig", "prune_"]
