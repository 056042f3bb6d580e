"""The diffusers pieces ``optimize_`` swaps in: fused GroupNorm(+SiLU), ResnetBlock2D, attention
processor.

Each keeps the parameters of the module it replaces (state_dict keys unchanged) and runs through
:mod:`accel.optimize.dispatch`, so on CPU the same model computes the PyTorch reference.
"""

from __future__ import annotations

from collections import Counter

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor2_0
from diffusers.models.resnet import ResnetBlock2D

from accel.kernels.reference import group_norm_reference
from accel.optimize import dispatch


class FusedGroupNorm(nn.GroupNorm):
    """``silu?(GroupNorm(x + residual?))`` in one kernel; same parameters as the nn.GroupNorm it
    replaces."""

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        silu: bool = False,
        backend: str = "auto",
    ):
        super().__init__(num_groups, num_channels, eps, affine)
        self.silu, self.backend, self.calls = silu, backend, Counter()

    @classmethod
    def replacing(cls, norm: nn.GroupNorm, silu: bool, backend: str) -> FusedGroupNorm:
        fused = cls(norm.num_groups, norm.num_channels, norm.eps, norm.affine, silu, backend)
        fused.weight, fused.bias = norm.weight, norm.bias  # shared, not copied
        return fused

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        return dispatch.run(
            "group_norm",
            group_norm_reference,
            self.backend,
            self.calls,
            x,
            self.num_groups,
            self.weight,
            self.bias,
            self.eps,
            silu=self.silu,
            residual=residual,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, silu={self.silu}, backend={self.backend}"


class FusedResnetBlock2D(ResnetBlock2D):
    """diffusers' ResnetBlock2D (time_embedding_norm "default", SiLU) with both norms fused with
    their SiLU, and the time embedding added inside the second GroupNorm instead of in a separate
    pass over the activation.

    ``optimize_`` turns a block into this class in place (``__class__`` swap), after making
    norm1/norm2 FusedGroupNorm(silu=True); the constructor is never called.
    """

    @staticmethod
    def can_fuse(block: nn.Module) -> bool:
        return (
            type(block) is ResnetBlock2D
            and block.time_embedding_norm == "default"
            and isinstance(block.nonlinearity, nn.SiLU)
            and all(type(n) is nn.GroupNorm for n in (block.norm1, block.norm2))
        )

    def forward(
        self, input_tensor: torch.Tensor, temb: torch.Tensor | None, *args, **kwargs
    ) -> torch.Tensor:
        hidden_states = self.norm1(input_tensor)  # + SiLU
        if self.upsample is not None:
            # as diffusers: nearest upsampling of large NHWC batches fails
            if hidden_states.shape[0] >= 64:
                input_tensor, hidden_states = input_tensor.contiguous(), hidden_states.contiguous()
            input_tensor, hidden_states = self.upsample(input_tensor), self.upsample(hidden_states)
        elif self.downsample is not None:
            input_tensor, hidden_states = (
                self.downsample(input_tensor),
                self.downsample(hidden_states),
            )
        hidden_states = self.conv1(hidden_states)
        if self.time_emb_proj is not None and temb is not None:
            if not self.skip_time_act:
                temb = self.nonlinearity(temb)
            temb = self.time_emb_proj(temb)
        hidden_states = self.norm2(hidden_states, residual=temb)  # (h + temb) -> GroupNorm -> SiLU
        hidden_states = self.conv2(self.dropout(hidden_states))
        if self.conv_shortcut is not None:
            input_tensor = self.conv_shortcut(input_tensor)
        return (input_tensor + hidden_states) / self.output_scale_factor


def _sdpa(q, k, v, scale):
    """Where our kernel does not run: PyTorch's fused attention, as the unoptimized model computes
    it."""
    return F.scaled_dot_product_attention(q, k, v, scale=scale)


class FusedAttnProcessor:
    """diffusers' AttnProcessor2_0 with our attention kernel: the (B, L, H, D) projections are read
    in place and the output lands in (B, L, H*D) without a transpose copy. Masks, spatial norms and
    q/k norms go to AttnProcessor2_0 unchanged (counted as the PyTorch path)."""

    def __init__(self, backend: str = "auto"):
        self.backend, self.calls = backend, Counter()
        self._fallback = AttnProcessor2_0()

    def __call__(
        self,
        attn,
        hidden_states,
        encoder_hidden_states=None,
        attention_mask=None,
        temb=None,
        *args,
        **kwargs,
    ):
        if attention_mask is not None or attn.spatial_norm is not None or attn.norm_q is not None:
            self.calls[dispatch.TORCH] += 1
            return self._fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        residual = hidden_states
        image_shape = hidden_states.shape if hidden_states.ndim == 4 else None
        if image_shape is not None:
            hidden_states = hidden_states.flatten(2).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        query, key, value = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        batch, heads = query.shape[0], attn.heads
        head_dim = key.shape[-1] // heads

        def by_head(t):
            return t.view(batch, -1, heads, head_dim).transpose(1, 2)

        out = dispatch.run(
            "attention",
            _sdpa,
            self.backend,
            self.calls,
            by_head(query),
            by_head(key),
            by_head(value),
            scale=attn.scale,
        )
        hidden_states = out.transpose(1, 2).reshape(batch, -1, heads * head_dim)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if image_shape is not None:
            hidden_states = hidden_states.transpose(1, 2).reshape(image_shape)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor
