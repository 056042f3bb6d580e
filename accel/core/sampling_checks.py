"""What a sampler may ask of a model: labels only of a class-conditional one and within its classes,
a guidance weight within a guidance-distilled student's range, or, for two-call guidance, a model
trained with a null class (a text model: the empty prompt's states); and the text states a model
can attend to."""

from __future__ import annotations

from accel.core.errors import AccelError, ConfigError


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
    elif spec.guided and denoiser.cond_kind == "text":
        if denoiser.null_text_states is None:
            raise ConfigError(
                "SamplingSpec",
                "guidance",
                "needs the empty prompt's text states (the unconditional half); "
                f"{denoiser.source} has none: give --prompts as a text file through its "
                "pipeline, or an embeddings file with 'null_text_states'",
            )
    elif spec.guided and denoiser.null_class is None:
        raise ConfigError(
            "SamplingSpec",
            "guidance",
            f"needs a model trained with a null class "
            f"(classifier-free guidance); {denoiser.source} has none: use guidance 1",
        )


def refuse_text_states(denoiser, states, null, source: str) -> None:
    """Raise AccelError for prompts' states (P x tokens x width) ``denoiser`` cannot attend to, or
    empty-prompt states (``null``) not shaped as one prompt's."""
    denoiser.require_text(source)
    if states.ndim != 3 or len(states) == 0 or states.shape[-1] != denoiser.text_width:
        raise AccelError(
            f"{source} are {tuple(states.shape)}; {denoiser.source} attends to prompts x tokens "
            f"x {denoiser.text_width} (its cross-attention width)"
        )
    if null is not None and (
        null.numel() != states[0].numel() or null.shape[-1] != states.shape[-1]
    ):
        raise AccelError(
            f"{source}: the empty prompt's states are {tuple(null.shape)}; one prompt's are "
            f"{tuple(states.shape[1:])}"
        )


def refuse_without_null_class(denoiser, owner: str, field: str) -> None:
    """Raise ConfigError where ``denoiser`` has no null class: the label guidance distillation and
    label dropout train the unconditional model with."""
    if denoiser.null_class is None:
        why = {
            "class": "has none",
            "text": "is text-conditioned: its guidance runs on the empty prompt's states, which "
            "distillation does not take yet",
        }.get(denoiser.cond_kind, "is not class-conditional")
        raise ConfigError(
            owner,
            field,
            "needs a teacher with a null class (classifier-free guidance); "
            f"{denoiser.source} {why}",
        )
