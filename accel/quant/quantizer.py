"""Uniform integer fake-quantization with static scales, range search, and a straight-through
estimator.

A quantizer maps x to s * (clamp(round(x / s) + z, q_min, q_max) - z). Symmetric quantizers have z =
0 and the signed grid [-2^(b-1), 2^(b-1) - 1], which is what runtimes execute (TensorRT and ONNX
Q/DQ need zero point 0); asymmetric ones use [0, 2^b - 1] with a zero point and stay in PyTorch.
Scales are per tensor or per output channel (dim 0), optionally in groups of ``group_size`` along
the input dimension of a linear weight.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from accel.core.errors import AccelError

RANGE_METHODS = ("minmax", "mse", "percentile")
UINT8_LEVELS = 255
_MSE_CANDIDATES = 100  # clipping ratios tried between _MSE_LOWEST and 1 of the observed range
_MSE_LOWEST = 0.01
_PERCENTILE = 0.9999
_MAX_OBSERVED = 1 << 20  # activation values kept for range search (a random subset beyond this)
_GAMMA, _ZETA = -0.1, 1.1  # AdaRound's rectified-sigmoid stretch


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward, identity backward (Bengio et al. 2013), so step sizes and rounding can be
    trained."""
    return x + (x.round() - x).detach()


def grid(bits: int, symmetric: bool) -> tuple[int, int]:
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if symmetric else (0, (1 << bits) - 1)


class Quantizer(nn.Module):
    """Fake-quantizes a tensor on a fixed grid. ``per_channel`` scales along dim 0 (weights)."""

    holds_weights = False  # its step sizes are bookkeeping: parameter counts leave them out

    def __init__(
        self,
        bits: int,
        symmetric: bool = True,
        per_channel: bool = False,
        group_size: int | None = None,
        range_method: str = "mse",
    ):
        super().__init__()
        if not 2 <= bits <= 16:
            raise AccelError(f"quantizer bits must be in 2..16, got {bits}")
        if range_method not in RANGE_METHODS:
            raise AccelError(
                f"range_method must be one of {', '.join(RANGE_METHODS)}, got {range_method}"
            )
        self.bits, self.symmetric, self.per_channel = bits, symmetric, per_channel
        self.group_size, self.range_method = group_size, range_method
        self.q_min, self.q_max = grid(bits, symmetric)
        self.scale = nn.Parameter(torch.ones(()), requires_grad=False)
        self.register_buffer("zero_point", torch.zeros(()))
        self.observed: list[torch.Tensor] | None = None  # activation samples while calibrating

    # --- shapes -----------------------------------------------------------------------------------
    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        """x as rows that share one scale: (channels[*groups], values) or (1, values)."""
        if not self.per_channel:
            return x.reshape(1, -1)
        if self.group_size:
            return x.reshape(x.shape[0] * (x.shape[1] // self.group_size), -1)
        return x.reshape(x.shape[0], -1)

    def _shaped(self, values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Per-row values broadcastable against ``like``."""
        if not self.per_channel:
            return values.reshape(())
        if self.group_size:
            return (
                values.reshape(like.shape[0], like.shape[1] // self.group_size, 1)
                .expand(-1, -1, self.group_size)
                .reshape(like.shape[0], like.shape[1], *([1] * (like.ndim - 2)))
            )
        return values.reshape(-1, *([1] * (like.ndim - 1)))

    # --- ranges -----------------------------------------------------------------------------------
    def _scale_zero(
        self, low: torch.Tensor, high: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.symmetric:
            scale = torch.maximum(low.abs(), high.abs()) / self.q_max
            return scale.clamp_min(1e-12), torch.zeros_like(scale)
        low, high = low.clamp(max=0), high.clamp(min=0)  # the grid must contain 0 exactly
        scale = ((high - low) / (self.q_max - self.q_min)).clamp_min(1e-12)
        return scale, (self.q_min - low / scale).round()

    def _quantize_rows(self, rows, scale, zero):
        codes = torch.clamp(
            torch.round(rows / scale[:, None]) + zero[:, None], self.q_min, self.q_max
        )
        return (codes - zero[:, None]) * scale[:, None]

    def _search_rows(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = rows.min(dim=1).values, rows.max(dim=1).values
        if self.range_method == "minmax":
            return self._scale_zero(low, high)
        if self.range_method == "percentile":
            subset = torch.randperm(rows.shape[1], generator=torch.Generator().manual_seed(0))[
                :_MAX_OBSERVED
            ]
            sample = rows if rows.shape[1] <= _MAX_OBSERVED else rows[:, subset]
            low = torch.quantile(sample.float(), 1 - _PERCENTILE, dim=1)
            high = torch.quantile(sample.float(), _PERCENTILE, dim=1)
            return self._scale_zero(low, high)
        best_error = torch.full_like(low, float("inf"))
        best_scale, best_zero = self._scale_zero(low, high)
        for ratio in torch.linspace(_MSE_LOWEST, 1.0, _MSE_CANDIDATES).tolist():
            scale, zero = self._scale_zero(low * ratio, high * ratio)
            error = (self._quantize_rows(rows, scale, zero) - rows).pow(2).mean(dim=1)
            better = error < best_error
            best_error = torch.where(better, error, best_error)
            best_scale = torch.where(better, scale, best_scale)
            best_zero = torch.where(better, zero, best_zero)
        return best_scale, best_zero

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        """Set the scale (and zero point) from ``x`` by the range method (MSE-optimal clipping by
        default)."""
        scale, zero = self._search_rows(self._rows(x.detach().float()))
        self.scale.data = scale if self.per_channel else scale.reshape(())
        self.zero_point = zero if self.per_channel else zero.reshape(())

    # --- activation calibration -------------------------------------------------------------------
    def start_observing(self) -> None:
        self.observed = []
        # Subsampling is seeded so the same calibration set always gives the same scales.
        self._subsample = torch.Generator().manual_seed(0)

    @torch.no_grad()
    def finish_observing(self) -> None:
        """Fit the scale to everything seen since ``start_observing`` (extremes always kept)."""
        if not self.observed:
            raise AccelError(
                "an activation quantizer saw no data during calibration (empty calibration set?)"
            )
        values = torch.cat(self.observed)
        self.observed = None
        self.fit(values)

    def _observe(self, x: torch.Tensor) -> None:
        flat = x.detach().float().reshape(-1)
        keep = max(1, _MAX_OBSERVED // 16)
        if flat.numel() > keep:
            flat = torch.cat(
                [
                    flat[torch.randint(0, flat.numel(), (keep,), generator=self._subsample)],
                    flat.min()[None],
                    flat.max()[None],
                ]
            )
        self.observed.append(flat.cpu())

    # --- learned rounding (AdaRound, Nagel et al. 2020) -------------------------------------------
    def rounding_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits V whose rectified sigmoid h(V) starts at the fractional part of x / s (rounding
        unchanged on average), as AdaRound initialises them."""
        scaled = x.detach() / self._shaped(self.scale, x)
        rest = (scaled - scaled.floor()).clamp(1e-4, 1 - 1e-4)
        return -torch.log((_ZETA - _GAMMA) / (rest - _GAMMA) - 1)

    @staticmethod
    def soft_rounding(logits: torch.Tensor) -> torch.Tensor:
        """h(V) = clip(sigmoid(V) * (zeta - gamma) + gamma, 0, 1): 0 rounds down, 1 rounds up."""
        return (torch.sigmoid(logits) * (_ZETA - _GAMMA) + _GAMMA).clamp(0, 1)

    def adaround(self, x: torch.Tensor, logits: torch.Tensor, hard: bool = False) -> torch.Tensor:
        """x quantized with floor(x / s) + h(V) instead of round(x / s); ``hard`` takes h(V) >=
        0.5."""
        scale, zero = self._shaped(self.scale, x), self._shaped(self.zero_point, x)
        up = (logits >= 0).to(x.dtype) if hard else self.soft_rounding(logits)
        codes = torch.clamp(torch.floor(x.detach() / scale) + up + zero, self.q_min, self.q_max)
        return (codes - zero) * scale

    # --- forward ----------------------------------------------------------------------------------
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The integer grid values of ``x`` (as int32)."""
        scale, zero = self._shaped(self.scale, x), self._shaped(self.zero_point, x)
        return torch.clamp(torch.round(x / scale) + zero, self.q_min, self.q_max).to(torch.int32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observed is not None:
            self._observe(x)
            return x
        scale, zero = self._shaped(self.scale, x), self._shaped(self.zero_point, x)
        rounded = round_ste(x / scale) if torch.is_grad_enabled() else torch.round(x / scale)
        return (torch.clamp(rounded + zero, self.q_min, self.q_max) - zero) * scale

    def extra_repr(self) -> str:
        kind = "per-channel" if self.per_channel else "per-tensor"
        group = f", groups of {self.group_size}" if self.group_size else ""
        return (
            f"int{self.bits}, {'symmetric' if self.symmetric else 'asymmetric'}, "
            f"{kind}{group}, {self.range_method}"
        )


class DynamicQuantizer(nn.Module):
    """Symmetric fake quantization whose scales come from the tensor itself at run time: one per
    token (a pixel of a feature map, a position of a sequence) and group of ``group_size`` channels,
    absmax / q_max. 4-bit activations need it: SVDQuant and QuaRot quantize them per token in groups
    of 64, as one static per-tensor scale cannot cover a diffusion model's activations in 15 levels.
    Nothing to calibrate; ``channel_dim`` is 1 for a convolution's input, -1 for a linear layer's.
    A group size that does not divide the channels (or None: torchao's int8 dynamic scheme at 8
    bits) means one group per token."""

    holds_weights = False

    def __init__(self, bits: int, group_size: int | None, channel_dim: int):
        super().__init__()
        self.bits, self.group_size, self.channel_dim = bits, group_size, channel_dim
        self.q_min, self.q_max = grid(bits, symmetric=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.movedim(self.channel_dim, -1)
        channels = tokens.shape[-1]
        group = self.group_size if self.group_size and channels % self.group_size == 0 else channels
        groups = tokens.reshape(*tokens.shape[:-1], channels // group, group)
        scale = groups.detach().abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / self.q_max
        scaled = groups / scale
        rounded = round_ste(scaled) if torch.is_grad_enabled() else torch.round(scaled)
        quantized = torch.clamp(rounded, self.q_min, self.q_max) * scale
        return quantized.reshape(tokens.shape).movedim(-1, self.channel_dim)

    def extra_repr(self) -> str:
        groups = f", groups of {self.group_size}" if self.group_size else ""
        return f"int{self.bits}, symmetric, dynamic per token{groups}"


class TensorDynamicQuantizer(nn.Module):
    """8-bit fake quantization with one scale for the whole tensor, taken from it at run time:
    ONNX's DynamicQuantizeLinear (uint8, the range widened to hold 0, zero point rounded, round half
    to even), which ONNX Runtime fuses with the matmul after it into DynamicQuantizeMatMul on CPUs.
    In sampling one call is one timestep, so the scale follows the timestep's range: on digits-dit
    W8A8 the per-step eps error is 0.0062 against static scales' 0.0080 and per-token scales' 0.0046
    (measured, 2-core AMD EPYC)."""

    holds_weights = False
    bits = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = x.detach().min().clamp(max=0)
        high = x.detach().max().clamp(min=0)
        scale = ((high - low) / UINT8_LEVELS).clamp_min(1e-12)
        zero = torch.clamp(torch.round(-low / scale), 0, UINT8_LEVELS)
        scaled = x / scale
        rounded = round_ste(scaled) if torch.is_grad_enabled() else torch.round(scaled)
        return (torch.clamp(rounded + zero, 0, UINT8_LEVELS) - zero) * scale

    def extra_repr(self) -> str:
        return "uint8, asymmetric, dynamic per tensor"


DYNAMIC = (DynamicQuantizer, TensorDynamicQuantizer)  # input quantizers with run-time scales


def input_quantizer(
    bits: int, symmetric: bool, range_method: str, group: int | None, dynamic, is_conv: bool
) -> nn.Module:
    """Static (a calibrated scale), dynamic per tensor, or dynamic per token (in groups below 8
    bits)."""
    if dynamic == "tensor":
        return TensorDynamicQuantizer()
    if group or dynamic:
        return DynamicQuantizer(bits, group, channel_dim=1 if is_conv else -1)
    return Quantizer(bits, symmetric, range_method=range_method)
