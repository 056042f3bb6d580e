"""Hadamard rotation of a 4-bit layer's inputs (QuaRot, Ashkboos et al. 2024; for diffusion
transformers ConvRot, arXiv 2512.03673, and HadaNorm, arXiv 2506.09932).

A layer computes x W^T = (x H)(W H)^T for any orthogonal H. With H a Walsh-Hadamard matrix, every
rotated channel is a +-1/sqrt(n) mix of n input channels, so one channel far larger than the rest
(what 4-bit per-token scales cannot hold: the group's largest value sets the step for all 64) is
spread over the block, and the group's peak falls towards its RMS. H is block diagonal with blocks
of at most the activation group (SVDQuant's 64), so each rotated block stays inside one quantization
group; it is applied after smoothing and before the low-rank branch is taken (the branch's SVD sees
the rotated weight, whose singular values are the same). Nothing is stored: the block size, kept in
the plan, rebuilds H.
"""

from __future__ import annotations

import torch


def rotation_block(channels: int, group: int | None, split: int = 0) -> int:
    """The largest power of two at most ``group`` that divides ``channels`` (and a split-shortcut
    site's ``split``, whose two parts are quantized apart); 1 means no rotation."""
    block = 1
    limit = group or channels
    while block * 2 <= limit and channels % (block * 2) == 0 and split % (block * 2) == 0:
        block *= 2
    return block


def hadamard(block: int) -> torch.Tensor:
    """The orthonormal Walsh-Hadamard matrix of a power-of-two size (Sylvester's construction)."""
    matrix = torch.ones(1, 1, dtype=torch.float64)
    while matrix.shape[0] < block:
        matrix = torch.cat([torch.cat([matrix, matrix], 1), torch.cat([matrix, -matrix], 1)])
    return matrix / block**0.5


def rotate_channels(x: torch.Tensor, matrix: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """``x``'s channels along ``channel_dim`` mixed block by block: x H with H block diagonal of
    ``matrix``."""
    block = matrix.shape[0]
    # non-negative dims: the ONNX tracer writes movedim's -1 into a Transpose's perm as it is
    channel_dim, last = channel_dim % x.ndim, x.ndim - 1
    channels = x.movedim(channel_dim, last)
    blocks = channels.unflatten(last, (-1, block)) @ matrix.to(x.dtype)
    return blocks.flatten(last).movedim(last, channel_dim)
