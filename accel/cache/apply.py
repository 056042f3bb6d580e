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
    if isinstance(hook, transformer.FirstBlockCacheHook):
        return {"method": "first-block-cache", "threshold": config.threshold}
    method = "deepcache" if isinstance(hook.splitter, UNetSplitter) else "block-residual"
    return {"method": method, "full_steps": list(full_steps(steps, config))}


def attach(denoiser, record: dict) -> None:
    """The cache of a loaded model (artifact or exported runtime), as its record says."""
    denoiser.add_hook(HOOK_NAME, hook_for(denoiser, CacheConfig.from_dict(record["config"])))


def hook_for(denoiser, config: CacheConfig):
    """DeepCache for a diffusers UNet (or a runtime that splits its steps itself: an exported
    model); block-residual reuse or First-Block Cache for a transformer; refused otherwise."""
    network = denoiser.module
    if config.method == "first-block":
        if not transformer.is_cacheable_transformer(network):
            raise ConfigError(
                "CacheConfig",
                "method",
                f"first-block decides on a transformer's first block; {type(network).__name__} "
                "has none (use the interval method)",
            )
        return transformer.FirstBlockCacheHook(network, config)
    if callable(getattr(network, "capturing", None)):
        return DeepCacheHook(config, network)
    if unet.is_cacheable_unet(network):
        unet.check_branch(network, config.branch)
        return DeepCacheHook(config, UNetSplitter(network, config.branch))
    if transformer.is_cacheable_transformer(network):
        transformer.check_config(network, config)
        return DeepCacheHook(config, transformer.BlockResidualSplitter(network, config.branch))
    raise AccelError(
        f"{type(network).__name__} is not supported by the cache yet: it covers "
        f"{' and '.join(unet.UNET_CLASSES)} and transformers with {transformer.BLOCKS}"
    )
