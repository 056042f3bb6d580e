"""Quantized stand-ins for Conv2d / Linear, swapped in place (the attention matmuls': attention.py).

A QuantLayer fake-quantizes its weight per output channel and its input per tensor with a static
scale. At a split-shortcut site (Q-Diffusion) the input is ``cat([h, skip])``: the two halves have
very different ranges, so each gets its own activation quantizer and the weight is split along its
input channels, each part with its own per-channel quantizer; one convolution still runs on the
joined tensor.

For 4-bit activations (SVDQuant) a layer may also divide its input by per-channel smoothing factors
(folded into its weight, smoothing.py), rotate it in Hadamard blocks (rotation.py), carry a 16-bit
low-rank branch that runs on the smoothed and rotated, unquantized input (its weight then being the
residual, low_rank.py), and quantize its input dynamically per token in groups of channels; at 8
bits, per token (``a_dynamic`` "token": torchao's int8 dynamic scheme) or per tensor ("tensor":
ONNX's DynamicQuantizeLinear)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from accel.quant.attention import QuantAttnProcessor
from accel.quant.low_rank import LowRankBranch
from accel.quant.quantizer import DYNAMIC, Quantizer, input_quantizer
from accel.quant.rotation import hadamard, rotate_channels
from accel.quant.smoothing import along_inputs


class QuantLayer(nn.Module):
    """A Conv2d or Linear with fake-quantized weight and input; ``split`` > 0 marks a split-shortcut
    site."""

    def __init__(
        self,
        layer: nn.Conv2d | nn.Linear,
        w_bits: int,
        a_bits: int | None,
        *,
        split: int = 0,
        w_symmetric: bool = True,
        a_symmetric: bool = True,
        group_size: int | None = None,
        w_range: str = "mse",
        a_range: str = "mse",
        a_group_size: int | None = None,
        a_dynamic: str | bool = False,  # "token" or "tensor" (True: "token", older artifacts)
        smooth: torch.Tensor | None = None,
        rotate: int = 1,  # Hadamard block size (rotation.py); 1: none
        rank: int = 0,
        fit_ranges: bool = True,
    ):
        super().__init__()
        self.is_conv = isinstance(layer, nn.Conv2d)
        conv_fields = ("stride", "padding", "dilation", "groups") if self.is_conv else ()
        self.conv_args = {name: getattr(layer, name) for name in conv_fields}
        # Frozen: post-training quantization learns rounding and step sizes, never the weights
        # themselves.
        self.weight = nn.Parameter(layer.weight.detach().clone(), requires_grad=False)
        self._migrate_outliers(smooth, rotate, rank, fit_ranges)
        self.bias = (
            None
            if layer.bias is None
            else nn.Parameter(layer.bias.detach().clone(), requires_grad=False)
        )
        self.w_bits, self.a_bits, self.split = w_bits, a_bits, split
        parts = 2 if split else 1
        group = None if self.is_conv else group_size
        self.weight_quantizers = nn.ModuleList(
            Quantizer(w_bits, w_symmetric, per_channel=True, group_size=group, range_method=w_range)
            for _ in range(parts)
        )
        self.input_quantizers = (
            nn.ModuleList(
                input_quantizer(a_bits, a_symmetric, a_range, a_group_size, a_dynamic, self.is_conv)
                for _ in range(parts)
            )
            if a_bits
            else None
        )
        # set only while reconstruction learns rounding
        self.rounding_logits: nn.ParameterList | None = None
        self._weight_cache: tuple[tuple, torch.Tensor] | None = None
        if fit_ranges:  # not when rebuilding a saved model: its stored scales are loaded next
            self.fit_weight_ranges()

    def _migrate_outliers(
        self, smooth: torch.Tensor | None, rotate: int, rank: int, fit: bool
    ) -> None:
        """Fold ``smooth`` and a Hadamard rotation of blocks of ``rotate`` inputs into the weight,
        and move its top ``rank`` singular directions into a low-rank branch (when ``fit`` is False,
        a saved model's values are loaded next: only the shapes are made)."""
        self.register_buffer("smooth", None if smooth is None else smooth.detach().clone())
        rotation = hadamard(rotate).to(self.weight.dtype) if rotate > 1 else None
        self.register_buffer("rotation", rotation, persistent=False)  # rebuilt from the plan
        if smooth is not None and fit:
            self.weight.data = self.weight * along_inputs(smooth, self.weight, 1)
        if rotation is not None and fit:
            self.weight.data = rotate_channels(self.weight, rotation, 1)
        self.low_rank = (
            LowRankBranch(self.weight.shape, rank, self.conv_args if self.is_conv else None)
            if rank
            else None
        )
        if rank and fit:
            self.weight.data = self.low_rank.take_from(self.weight)

    @property
    def dynamic_input(self) -> bool:  # scales computed from the input at run time
        return any(isinstance(q, DYNAMIC) for q in self.input_quantizers or [])

    def smoothed_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the stored weight multiplies: the input smoothed and rotated as the weight was."""
        channel_dim = 1 if self.is_conv else -1
        if self.smooth is not None:
            x = x / along_inputs(self.smooth, x, channel_dim)
        if self.rotation is not None:
            x = rotate_channels(x, self.rotation, channel_dim)
        return x

    def float_forward(self, x: torch.Tensor) -> torch.Tensor:
        """What the layer computes on ``x`` without quantization (the original layer, up to the
        branch's fp16 rounding)."""
        x = self.smoothed_input(x)
        y = self._layer_op(x, self.weight)
        return y if self.low_rank is None else y + self.low_rank(x)

    def _layer_op(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if self.is_conv:
            return F.conv2d(x, weight, self.bias, **self.conv_args)
        return F.linear(x, weight, self.bias)

    def weight_parts(self, weight: torch.Tensor) -> list[torch.Tensor]:
        return [weight[:, : self.split], weight[:, self.split :]] if self.split else [weight]

    def _input_parts(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x[:, : self.split], x[:, self.split :]] if self.split else [x]

    def fit_weight_ranges(self) -> None:
        for quantizer, part in zip(self.weight_quantizers, self.weight_parts(self.weight)):
            quantizer.fit(part)

    def quantized_weight(self) -> torch.Tensor:
        pairs = zip(self.weight_quantizers, self.weight_parts(self.weight))
        if self.rounding_logits is None:
            parts = [q(w) for q, w in pairs]
        else:
            parts = [q.adaround(w, v) for (q, w), v in zip(pairs, self.rounding_logits)]
        return torch.cat(parts, dim=1) if self.split else parts[0]

    def start_learning_rounding(self) -> None:
        self.rounding_logits = nn.ParameterList(
            nn.Parameter(q.rounding_logits(w))
            for q, w in zip(self.weight_quantizers, self.weight_parts(self.weight))
        )

    @torch.no_grad()
    def finish_learning_rounding(self) -> None:
        """Fix the learned rounding: the weight becomes its quantized values, so plain rounding (and
        the stored integer codes) reproduce them exactly."""
        parts = [
            q.adaround(w, v, hard=True)
            for q, w, v in zip(
                self.weight_quantizers, self.weight_parts(self.weight), self.rounding_logits
            )
        ]
        self.weight.data = torch.cat(parts, dim=1) if self.split else parts[0]
        self.rounding_logits = None

    def weight_codes(self) -> list[torch.Tensor]:
        """Integer codes of the weight, one tensor per part (two at a split site)."""
        return [q.codes(w) for q, w in zip(self.weight_quantizers, self.weight_parts(self.weight))]

    def _inference_weight(self) -> torch.Tensor:
        """The quantized weight, recomputed only when the weight or its scales change (sampling
        calls a layer thousands of times with the same weight; without this, fake quantization costs
        twice the conv)."""
        if torch.is_grad_enabled() or self.rounding_logits is not None:
            return self.quantized_weight()
        tensors = [
            self.weight,
            *(t for q in self.weight_quantizers for t in (q.scale, q.zero_point)),
        ]
        key = tuple((t.data_ptr(), t._version, t.device, t.dtype) for t in tensors)
        if self._weight_cache is None or self._weight_cache[0] != key:
            self._weight_cache = (key, self.quantized_weight())
        return self._weight_cache[1]

    def quantized_input(self, smoothed: torch.Tensor) -> torch.Tensor:
        """What the weight multiplies: the smoothed input, quantized (each part on its own)."""
        if self.input_quantizers is None:
            return smoothed
        parts = [q(p) for q, p in zip(self.input_quantizers, self._input_parts(smoothed))]
        return torch.cat(parts, dim=1) if self.split else parts[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.smoothed_input(x)
        branch = None if self.low_rank is None else self.low_rank(x)
        y = self._layer_op(self.quantized_input(x), self._inference_weight())
        return y if branch is None else y + branch

    def extra_repr(self) -> str:
        kind = "conv" if self.is_conv else "linear"
        extras = [f"split at {self.split}"] if self.split else []
        extras += ["smoothed"] if self.smooth is not None else []
        extras += ["rotated"] if self.rotation is not None else []
        extras += ["dynamic activations"] if self.dynamic_input else []
        return ", ".join([f"{kind} W{self.w_bits}A{self.a_bits or 'fp'}", *extras])


def activation_quantizers(network) -> list[Quantizer]:
    """The static activation quantizers in ``network`` (a denoiser or one block): those whose
    scales calibration sets and reconstruction learns (dynamic ones have none)."""
    quantizers = []
    for module in network.modules():
        if isinstance(module, QuantLayer) and module.input_quantizers is not None:
            quantizers.extend(module.input_quantizers)
        elif isinstance(module, QuantAttnProcessor):
            quantizers.extend(module.quantizers())
    return [q for q in quantizers if isinstance(q, Quantizer)]
