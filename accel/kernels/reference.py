"""The PyTorch definitions the Triton kernels are tested against, and what the model runs where a
kernel cannot.

Importing this module needs no Triton (machines without it still run ``accel optimize``'s reference
path).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def group_norm_reference(
    x: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
    *,
    silu: bool = False,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """The PyTorch definition the kernel is tested against (statistics in fp32, output in x's
    dtype)."""
    h = x.float()
    if residual is not None:
        h = h + as_broadcast(residual, x).float()
    y = F.group_norm(
        h,
        num_groups,
        None if weight is None else weight.float(),
        None if bias is None else bias.float(),
        eps,
    )
    if silu:
        y = F.silu(y)
    return y.to(x.dtype)


def as_broadcast(residual: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``residual`` as a (possibly stride-0) view of x's shape; (N, C) means one value per sample
    and channel."""
    if residual.ndim == 2 and x.ndim > 2:
        residual = residual.view(*residual.shape, *([1] * (x.ndim - 2)))
    return residual.expand_as(x)


def attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None
) -> torch.Tensor:
    """The PyTorch definition the kernel is tested against: softmax in fp32, output in q's dtype."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    return torch.matmul(scores.softmax(dim=-1), v.float()).to(q.dtype)
