"""SVDQuant's low-rank branch (Li et al. 2024, arXiv 2411.05007): W = L1 L2 + R.

After smoothing, a weight's outliers concentrate in a few singular directions. The top ``rank`` of
them, L1 L2 = U_r S_r V_r^T, run as a 16-bit branch on the unquantized input; only the residual R =
W - L1 L2 is quantized (4 bits), with a smaller range than W had. SVDQuant measured Flux W4A4 FID
20.1 against BF16's 20.3 with rank 32. A convolution's branch is two convolutions: ``down`` (rank
output channels, the layer's kernel, stride and padding) then ``up`` (1x1); a linear layer's, two
linear maps. The branch's values are rounded to fp16 when it is made, so the stored 16-bit branch
reproduces the in-memory model exactly.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def max_rank(weight: torch.Tensor) -> int:
    """The largest rank a branch of this weight can have: min(outputs, inputs x kernel)."""
    return min(weight.shape[0], weight[0].numel())


class LowRankBranch(nn.Module):
    """x -> up(down(x)) in floating point, beside a quantized layer."""

    def __init__(self, weight_shape: torch.Size, rank: int, conv_args: dict | None):
        super().__init__()
        out_channels, fan_in = weight_shape[0], weight_shape[1:]
        self.conv_args = conv_args  # None: a linear layer
        self.down = nn.Parameter(torch.zeros(rank, *fan_in), requires_grad=False)
        self.up = nn.Parameter(torch.zeros(out_channels, rank), requires_grad=False)

    @property
    def rank(self) -> int:
        return self.up.shape[1]

    @torch.no_grad()
    def take_from(self, weight: torch.Tensor) -> torch.Tensor:
        """Set the branch to ``weight``'s top singular directions; returns the residual."""
        matrix = weight.reshape(weight.shape[0], -1).double()
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        up = (u[:, : self.rank] * s[: self.rank]).to(torch.float16)
        down = vh[: self.rank].to(torch.float16)
        # contiguous, as a loaded branch is: SVD's factors come column-major, and a GEMM over
        # another layout sums in another order (6e-8 apart, enough to break exact reloading)
        self.up.data = up.to(weight.dtype).contiguous()
        self.down.data = down.to(weight.dtype).reshape(self.down.shape).contiguous()
        return weight - self.dense().to(weight.dtype)

    def dense(self) -> torch.Tensor:
        """L1 L2 as one weight of the layer's shape."""
        return (self.up @ self.down.reshape(self.rank, -1)).reshape(
            self.up.shape[0], *self.down.shape[1:]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv_args is None:
            return F.linear(F.linear(x, self.down), self.up)
        hidden = F.conv2d(x, self.down, **self.conv_args)
        return F.conv2d(hidden, self.up[:, :, None, None])

    def extra_repr(self) -> str:
        return f"rank {self.rank}, fp16 values"
