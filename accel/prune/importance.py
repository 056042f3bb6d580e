"""Importance criteria: how much each channel (and each attention head) matters.

- ``random``: seeded uniform scores, the baseline every criterion must beat;
- ``magnitude``: L1 norm of the channel's weights over every layer that holds them;
- ``taylor``: first-order Taylor estimate of the loss change when the channel is removed, |sum(w *
  dL/dw)| (Torch-Pruning's ``TaylorImportance(multivariable=True)``), with gradients of the
  noise-prediction loss summed over timesteps spread evenly over the whole schedule;
- ``diff-pruning`` (Fang et al., NeurIPS 2023): sum(|w * dL/dw|) (``multivariable=False``, "the
  accumulated error of weight removal"), with gradients accumulated from t = 0 upward and stopped
  once the loss falls below ``threshold`` x its running maximum: the late, high-noise steps whose
  loss is small carry little about the content and are left out (``ddpm_prune.py``: one batch, fixed
  noise, no ``zero_grad`` between timesteps).

A channel's score sums its slices over the coupled layers (a concatenation maps the group's channel
to an offset column of the reading layer). Scores are compared only within a group, so no
normalization is needed.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from accel.prune.config import PruneConfig
from accel.prune.structure import Slice


def _rows(tensor: torch.Tensor, s: Slice, module: nn.Module) -> torch.Tensor:
    """The slice's channels of ``tensor`` (a weight, its gradient or a bias), one row per
    channel."""
    if tensor.ndim == 1:
        return tensor[s.idxs].unsqueeze(1)
    # weights (in, out, ...) and (rows, dim)
    transposed = isinstance(module, (nn.ConvTranspose2d, nn.Embedding))
    along_rows = (s.dim == "out") != transposed
    return (tensor[s.idxs] if along_rows else tensor.transpose(0, 1)[s.idxs]).flatten(1)


def _params(s: Slice) -> list[torch.Tensor]:
    """The slice's weight, and its bias where the bias is per channel of that dimension."""
    module = s.module
    norm = isinstance(module, (nn.GroupNorm, nn.LayerNorm))
    params = [module.weight, getattr(module, "bias", None) if s.dim == "out" or norm else None]
    return [p for p in params if p is not None]


def _slice_score(s: Slice, criterion: str) -> torch.Tensor:
    module, params = s.module, _params(s)
    if not params:
        return torch.zeros(len(s.idxs))
    if criterion == "magnitude":
        return sum(_rows(p.detach(), s, module).abs().sum(1) for p in params)
    products = [_rows(p.detach() * p.grad, s, module) for p in params if p.grad is not None]
    if not products:
        return torch.zeros(len(s.idxs))
    if criterion == "taylor":
        return sum(x.sum(1) for x in products).abs()
    return sum(x.abs().sum(1) for x in products)


def channel_scores(
    slices: list[Slice], channels: int, criterion: str, generator: torch.Generator
) -> torch.Tensor:
    if criterion == "random":
        return torch.rand(channels, generator=generator)
    scores = torch.zeros(channels, dtype=torch.float64)
    for s in slices:
        scores.index_add_(0, torch.tensor(s.root_idxs), _slice_score(s, criterion).double().cpu())
    return scores


def head_scores(
    slices: list[Slice], heads: int, criterion: str, generator: torch.Generator
) -> torch.Tensor:
    """One score per head: the mean of its channels' scores over q, k, v and the output
    projection."""
    width = len(slices[0].idxs)
    return channel_scores(slices, width, criterion, generator).view(heads, -1).mean(1)


def accumulate_gradients(denoiser, images: torch.Tensor, config: PruneConfig) -> dict:
    """Sum the noise-prediction loss gradients into ``.grad`` over the timestep grid (``taylor``:
    all of it; ``diff-pruning``: from t = 0 until the loss falls below threshold x max). Returns
    what was done."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_config(denoiser.scheduler_config)
    generator = torch.Generator().manual_seed(config.seed)
    pick = torch.randperm(len(images), generator=generator)[: config.importance_batch]
    clean = images[pick].to(denoiser.device, denoiser.dtype)
    noise = torch.randn(clean.shape, generator=generator).to(clean)
    cond = denoiser.to_model(denoiser.default_cond(len(clean), generator))
    grid = range(0, scheduler.config.num_train_timesteps, config.timestep_stride)
    stop = config.criterion == "diff-pruning" and config.threshold > 0
    module = denoiser.module
    module.zero_grad(set_to_none=True)
    losses, loss_max = [], 0.0
    for t in grid:
        timesteps = torch.full((len(clean),), t, device=clean.device, dtype=torch.long)
        noisy = scheduler.add_noise(clean, noise, timesteps)
        loss = nn.functional.mse_loss(denoiser(noisy, timesteps, cond), noise)
        loss.backward()
        losses.append(loss.item())
        loss_max = max(loss_max, losses[-1])
        if stop and losses[-1] < config.threshold * loss_max:
            break
    return {
        "timesteps": len(losses),
        "grid": len(grid),
        "last_t": grid[len(losses) - 1],
        "images": len(clean),
        "losses": [round(x, 5) for x in losses],
    }
