"""SmoothQuant's migration of activation outliers into the weights (Xiao et al. 2023), as SVDQuant
uses it before 4-bit activations (Li et al. 2024, arXiv 2411.05007).

A layer computes x W^T = (x / s)(W s)^T for any positive per-input-channel s. Dividing the inputs by
s flattens the few channels whose values are far larger than the rest (4 bits leave 15 levels for
the whole range), and the weights, multiplied by s, take the outliers instead; SVDQuant's low-rank
branch then absorbs the weights' outliers (low_rank.py). SmoothQuant's eq. 4 balances the two:
s_j = max|X_j|^alpha / max|W_j|^(1 - alpha), alpha = 0.5 by default.
"""

from __future__ import annotations

import torch
import torch.nn as nn

_FLOOR = 1e-5  # channels that never fire (or all-zero weight columns) keep a finite factor


def smoothing_factors(input_absmax: torch.Tensor, weight: torch.Tensor, alpha: float):
    """s per input channel (dim 1 of ``weight``) from the inputs' per-channel max |x|."""
    weight_absmax = weight.detach().abs().movedim(1, 0).reshape(weight.shape[1], -1).amax(dim=1)
    factors = input_absmax.clamp_min(_FLOOR).pow(alpha) / weight_absmax.clamp_min(_FLOOR).pow(
        1 - alpha
    )
    return factors.clamp_min(_FLOOR).to(weight.dtype)


def along_inputs(factors: torch.Tensor, like: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """``factors`` shaped to broadcast along ``channel_dim`` of ``like``."""
    shape = [1] * like.ndim
    shape[channel_dim] = -1
    return factors.reshape(shape)


class _ChannelAbsMax:
    def __init__(self):
        self.value: torch.Tensor | None = None

    def __call__(self, layer: nn.Module, inputs: tuple, output) -> None:
        x = inputs[0].detach()
        x = x.movedim(1, -1) if isinstance(layer, nn.Conv2d) else x
        peak = x.abs().reshape(-1, x.shape[-1]).amax(dim=0).float()
        self.value = peak if self.value is None else torch.maximum(self.value, peak)


@torch.no_grad()
def input_channel_absmax(
    denoiser, names: list[str], calib, batch_size: int = 64, progress: bool = True
) -> dict[str, torch.Tensor]:
    """{layer name: max |input| per input channel} of the float layers ``names``, over the
    calibration set."""
    peaks = {name: _ChannelAbsMax() for name in names}
    hooks = [
        denoiser.module.get_submodule(name).register_forward_hook(peak)
        for name, peak in peaks.items()
    ]
    try:
        calib.run_through(denoiser, "smoothing statistics", batch_size, progress)
    finally:
        for hook in hooks:
            hook.remove()
    return {name: peak.value for name, peak in peaks.items()}
