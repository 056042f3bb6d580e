"""Find split-shortcut sites: decoder ResNets whose input is ``cat([h, skip])`` (Q-Diffusion, Sec.
4.2).

In diffusers' UNet2DModel and UNet2DConditionModel every ResNet of an up block takes the running
hidden state concatenated with a skip connection from the encoder. Its ``conv1`` (after GroupNorm +
SiLU, which act per channel) and its 1x1 ``conv_shortcut`` read that joined tensor; the first
``h.shape[1]`` channels come from the decoder. For ResNet i of an up block, h is the block's input
for i = 0 and the previous ResNet's output otherwise; the block's input width is read from one
traced forward pass.
"""

from __future__ import annotations

import torch
import torch.nn as nn

SPLIT_LAYERS = ("conv1", "conv_shortcut")


@torch.no_grad()
def find_split_sites(denoiser) -> dict[str, int]:
    """{layer name in ``denoiser.module``: number of channels that come from h} for every split
    site."""
    network = denoiser.module
    up_blocks = getattr(network, "up_blocks", None)
    if not isinstance(up_blocks, nn.ModuleList):
        return {}
    entering: dict[int, int] = {}

    def record_width(index):
        def hook(module, args, kwargs):
            entering.setdefault(index, (args[0] if args else kwargs["hidden_states"]).shape[1])

        return hook

    hooks = [
        block.register_forward_pre_hook(record_width(j), with_kwargs=True)
        for j, block in enumerate(up_blocks)
    ]
    try:
        denoiser(*denoiser.example_inputs(1))
    finally:
        for hook in hooks:
            hook.remove()
    sites = {}
    for j, block in enumerate(up_blocks):
        for i, resnet in enumerate(getattr(block, "resnets", [])):
            from_h = entering[j] if i == 0 else block.resnets[i - 1].out_channels
            if not 0 < from_h < resnet.in_channels:
                continue  # no concatenation feeds this ResNet
            for layer in SPLIT_LAYERS:
                if isinstance(getattr(resnet, layer, None), nn.Conv2d):
                    sites[f"up_blocks.{j}.resnets.{i}.{layer}"] = from_h
    return sites
