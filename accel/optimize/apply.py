"""Optimization as the registry applies it: swap a diffusers model's GroupNorm(+SiLU) and attention
for accel's kernels, cast and re-layout it, and replay its steps as CUDA graphs, in place."""

from __future__ import annotations

from collections import Counter

import torch
import torch.nn as nn
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

from accel.core.errors import ConfigError
from accel.optimize.config import OptimizeConfig
from accel.optimize.cuda_graph import HOOK_NAME, CudaGraphHook
from accel.optimize.modules import FusedAttnProcessor, FusedGroupNorm, FusedResnetBlock2D

# diffusers' defaults; others (quantized) stay
REPLACEABLE_PROCESSORS = (
    AttnProcessor,
    AttnProcessor2_0,
)


def optimize(denoiser, config: OptimizeConfig) -> dict:
    """Optimize ``denoiser`` in place (the registry records it); returns what the artifact keeps."""
    if config.cuda_graph and any(hook.splitter is not None for hook in denoiser.hooks.values()):
        raise ConfigError(
            "OptimizeConfig",
            "cuda_graph",
            "replays one captured call for every step, and this "
            "model's steps run two ways (feature caching): optimize it without CUDA graphs",
        )
    if config.cuda_graph and denoiser.device.type != "cuda":
        raise ConfigError(
            "OptimizeConfig",
            "cuda_graph",
            f"needs the model on a CUDA device (it is on {denoiser.device})",
        )
    dtype = config.torch_dtype(denoiser.device)
    swaps = swap_modules(denoiser.module, config.backend)
    convert(denoiser.module, dtype, config.channels_last)
    if config.cuda_graph:
        denoiser.add_hook(HOOK_NAME, CudaGraphHook())
    return {"dtype": str(dtype).removeprefix("torch."), "swaps": swaps}


def rebuild(denoiser, record: dict) -> None:
    """Give a fresh base network the optimized structure, precision, layout and CUDA-graph replay an
    artifact was saved with (replay starts when the model is on a GPU)."""
    config = OptimizeConfig.from_dict(record["config"])
    swap_modules(denoiser.module, config.backend)
    convert(denoiser.module, getattr(torch, record["dtype"]), config.channels_last)
    if config.cuda_graph:
        denoiser.add_hook(HOOK_NAME, CudaGraphHook())


def convert(network: nn.Module, dtype: torch.dtype, channels_last: bool) -> None:
    """Cast to ``dtype`` except the submodules a diffusers class asks to keep in fp32 (none for
    UNets and DiT)."""
    nn.Module.to(network, dtype)
    keep = getattr(network, "_keep_in_fp32_modules", None) or []
    for name, module in network.named_modules():
        if any(part in keep for part in name.split(".")):
            module.float()
    if channels_last:
        network.to(memory_format=torch.channels_last)


def swap_modules(network: nn.Module, backend: str) -> dict[str, int]:
    """Fuse resnet blocks and the output norm with their SiLU, then every remaining GroupNorm, then
    attention."""
    swaps: Counter = Counter()
    for block in list(network.modules()):
        if FusedResnetBlock2D.can_fuse(block):
            block.norm1 = FusedGroupNorm.replacing(block.norm1, silu=True, backend=backend)
            block.norm2 = FusedGroupNorm.replacing(block.norm2, silu=True, backend=backend)
            block.__class__ = FusedResnetBlock2D
            swaps["resnet_blocks"] += 1
    if _fuse_output_norm(network, backend):
        swaps["output_norm_silu"] += 1
    for parent in list(network.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.GroupNorm:
                setattr(parent, name, FusedGroupNorm.replacing(child, silu=False, backend=backend))
                swaps["group_norms"] += 1
    for module in network.modules():
        if isinstance(module, Attention):
            if isinstance(module.processor, REPLACEABLE_PROCESSORS):
                module.set_processor(FusedAttnProcessor(backend))
                swaps["attention"] += 1
            else:
                swaps["attention_left_alone"] += 1
    return dict(swaps)


def _fuse_output_norm(network: nn.Module, backend: str) -> bool:
    """UNets end in conv_norm_out -> conv_act (SiLU, used nowhere else) -> conv_out: fuse the first
    two."""
    norm, act = getattr(network, "conv_norm_out", None), getattr(network, "conv_act", None)
    if type(norm) is not nn.GroupNorm or not isinstance(act, nn.SiLU):
        return False
    network.conv_norm_out = FusedGroupNorm.replacing(norm, silu=True, backend=backend)
    network.conv_act = nn.Identity()
    return True


def kernel_usage(network: nn.Module) -> dict[str, dict[str, int]]:
    """How many GroupNorm and attention calls ran through the Triton kernels and how many through
    PyTorch."""
    usage = {"group_norm": Counter(), "attention": Counter()}
    for module in network.modules():
        if isinstance(module, FusedGroupNorm):
            usage["group_norm"].update(module.calls)
        if isinstance(getattr(module, "processor", None), FusedAttnProcessor):
            usage["attention"].update(module.processor.calls)
    return {kind: {"triton": c["triton"], "torch": c["torch"]} for kind, c in usage.items()}


def reset_kernel_usage(network: nn.Module) -> None:
    for module in network.modules():
        if isinstance(module, FusedGroupNorm):
            module.calls.clear()
        if isinstance(getattr(module, "processor", None), FusedAttnProcessor):
            module.processor.calls.clear()
