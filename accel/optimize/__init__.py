"""Run a model faster without changing its weights: fused Triton GroupNorm(+SiLU) and attention,
fp16/bf16, channels-last, CUDA graphs (``accel optimize``). Registered as the ``optimize``
transform. Its modules (diffusers, and Triton for the kernels) are imported on first use, not with
``accel``."""

from accel.core import registry
from accel.optimize.config import OptimizeConfig
from accel.optimize.stage import OPTIMIZE_STAGE


def _optimize(denoiser, config: OptimizeConfig) -> dict:
    from accel.optimize.apply import optimize

    return optimize(denoiser, config)


def _rebuild(denoiser, record: dict) -> None:
    from accel.optimize.apply import rebuild

    rebuild(denoiser, record)


OPTIMIZE = registry.register(
    registry.Transform(
        name="optimize",
        config=OptimizeConfig,
        apply=_optimize,
        may_follow=("prune", "distill", "cache", "quantize"),  # the last in-place step of the chain
        rebuild=_rebuild,
    )
)


def optimize_(denoiser, config: OptimizeConfig = OptimizeConfig()) -> dict:
    """Optimize ``denoiser`` in place; returns the record kept in accel.json."""
    return registry.apply(denoiser, OPTIMIZE.name, config)


__all__ = ["OPTIMIZE_STAGE", "OptimizeConfig", "optimize_"]
