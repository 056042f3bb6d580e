"""Caching as the registry applies it: a step hook on the denoiser, no weight changed. The artifact
records the config; loading (an artifact, or an exported model's runtime) attaches the hook
again."""

from __future__ import annotations

from accel.cache import transformer, unet
from accel.cache.config import CacheConfig
from accel.cache.hook import HOOK_NAME, DeepCacheHook, UNetSplitter
from accel.cache.schedule import full_steps
from accel.core.errors import AccelError, ConfigError


def cache(denoiser, config: CacheConfig) -> dict:
    """Attach the cache to ``denoiser`` (the registry records it); returns what the artifact
    keeps."""
    steps = len(denoiser.sampling.scheduler(denoiser.scheduler_config).timesteps)
    if steps < config.interval:
        raise ConfigError(
            "CacheConfig",
            "interval",
            f"{config.interval} is more than the {steps} steps this model samples in "
            f"({denoiser.sampling.describe()}): caching gives nothing there (one full step and "
            "the rest from its cache); cache a many-step sampler, or use a smaller interval",
        )
    hook = hook_for(denoiser, config)
    denoiser.add_hook(HOOK_NAME, hook)
    if isinstance(hook, DeepCacheHook):
        return {"method": "deepcache", "full_steps": list(full_steps(steps, config))}
    return {
        "method": "pyramid-attention-broadcast",
        "schedule": "every interval-th call inside timesteps (100, 800)",
    }


def attach(denoiser, record: dict) -> None:
    """The cache of a loaded model (artifact or exported runtime), as its record says."""
    denoiser.add_hook(HOOK_NAME, hook_for(denoiser, CacheConfig.from_dict(record["config"])))


def hook_for(denoiser, config: CacheConfig):
    """DeepCache for a diffusers UNet (or a runtime that splits its steps itself: an exported
    model), diffusers' attention cache for a transformer class that has ``enable_cache``; refused
    otherwise."""
    network = denoiser.module
    if callable(getattr(network, "capturing", None)):
        return DeepCacheHook(config, network)
    if unet.is_cacheable_unet(network):
        unet.check_branch(network, config.branch)
        return DeepCacheHook(config, UNetSplitter(network, config.branch))
    if transformer.has_diffusers_cache(network):
        transformer.check_config(config)
        return transformer.DiffusersCacheHook(network, config)
    raise AccelError(
        f"{type(network).__name__} is not supported by the cache yet: "
        f"accel's DeepCache covers {' and '.join(unet.UNET_CLASSES)}, "
        "and this class has no diffusers cache hooks (enable_cache)"
    )
