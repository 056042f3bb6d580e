"""Training-free feature caching across sampling steps (``accel cache``): DeepCache on diffusers
UNets (the deep levels' output reused between full steps; uniform or quadratic choice of full
steps), and on transformers the blocks' residual reused at a fixed interval or diffusers'
First-Block Cache. No weight changes: a step hook the sampler drives. Registered as the ``cache``
transform."""

from accel.cache import apply
from accel.cache.config import SCHEDULES, CacheConfig
from accel.cache.stage import CACHE_STAGE
from accel.core import registry

CACHE = registry.register(
    registry.Transform(
        name="cache",
        config=CacheConfig,
        apply=apply.cache,
        may_follow=(
            "prune",
            "distill",
        ),  # the chain's order: prune -> distill -> cache -> quantize -> optimize
        attach=apply.attach,
    )
)


def cache_(denoiser, config: CacheConfig = CacheConfig()) -> dict:
    """Cache ``denoiser``'s deep features across its sampler's steps, in place; returns the record
    kept in accel.json."""
    return registry.apply(denoiser, CACHE.name, config)


__all__ = ["CACHE_STAGE", "SCHEDULES", "CacheConfig", "cache_"]
