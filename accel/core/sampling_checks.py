"""What a sampler may ask of a model: labels only of a class-conditional one and within its classes,
a guidance weight within a guidance-distilled student's range, or, for two-call guidance, a model
trained with a null class."""

from __future__ import annotations

from accel.core.errors import ConfigError


def refuse_sampling(denoiser, spec) -> None:
    """Raise ConfigError for labels or guidance ``denoiser`` cannot take under ``spec``."""
    if spec.labels is not None:
        if denoiser.cond_kind != "class":
            raise ConfigError(
                "SamplingSpec",
                "labels",
                f"apply to class-conditional models; {denoiser.source} is not one",
            )
        if max(spec.labels) >= denoiser.classes:
            raise ConfigError(
                "SamplingSpec",
                "labels",
                f"must be classes 0-{denoiser.classes - 1} of "
                f"{denoiser.source}, got {max(spec.labels)}",
            )
    if denoiser.guidance_range:
        low, high = denoiser.guidance_range
        if not low <= spec.guidance <= high:
            raise ConfigError(
                "SamplingSpec",
                "guidance",
                f"must be within {low:g}-{high:g}, the weights {denoiser.source} was "
                f"guidance-distilled for, got {spec.guidance:g}",
            )
    elif spec.guided and denoiser.null_class is None:
        raise ConfigError(
            "SamplingSpec",
            "guidance",
            f"needs a model trained with a null class "
            f"(classifier-free guidance); {denoiser.source} has none: use guidance 1",
        )
