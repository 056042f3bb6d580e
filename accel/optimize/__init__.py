"""Run a model faster without changing its weights: fused Triton GroupNorm(+SiLU) and attention, fp16/bf16,
channels-last, CUDA graphs (``accel optimize``). Triton is imported on first use, not with ``accel``."""
from accel.optimize.config import OptimizeConfig


def optimize_(denoiser, config: OptimizeConfig = OptimizeConfig()) -> dict:
    """Optimize ``denoiser`` in place (see :func:`accel.optimize.apply.optimize_`); returns its transform record."""
    from accel.optimize.apply import optimize_ as apply

    return apply(denoiser, config)


__all__ = ["OptimizeConfig", "optimize_"]
