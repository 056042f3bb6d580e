"""The cache stage (``accel cache``, a recipe's ``cache`` stage): attach the feature cache the
model's sampler obeys."""

from __future__ import annotations

from accel.cache.config import CacheConfig
from accel.core import registry, stages
from accel.core.sampling_spec import SamplerChange
from accel.core.stages import SAMPLER_KEYS, Context, Settings, StageResult, change_sampler


def run(model, settings: Settings, context: Context) -> StageResult:
    change_sampler(model, settings)  # caching follows the sampler's steps: change them first
    return StageResult(model, registry.apply(model, "cache", settings["cache"]))


CACHE_STAGE = stages.register(
    stages.Stage(
        name="cache",
        roles={"cache": CacheConfig(), "sampling": SamplerChange()},
        run=run,
        keys=SAMPLER_KEYS,
        open_roles=("cache",),
    )
)
