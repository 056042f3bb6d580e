"""Fake-quantized attention matmuls (Q·K^T and P·V) for diffusers' Attention modules."""

from __future__ import annotations

import torch
import torch.nn as nn

from accel.quant.quantizer import Quantizer

SCORES_SLICE_BYTES = 256 * 2**20


class QuantAttnProcessor(nn.Module):
    """diffusers attention with fake-quantized matmul inputs: Q and K before Q·K^T, P and V before
    P·V.

    Follows diffusers' AttnProcessor (projections, optional norms, residual, rescale) with explicit
    matmuls so the quantizers sit where an integer kernel would read its operands. P lies in [0, 1]:
    a symmetric quantizer uses only the non-negative half of its grid there (one bit), but keeps the
    zero point at 0 as runtimes require.
    """

    def __init__(self, bits: int, range_method: str = "mse"):
        super().__init__()
        self.bits = bits
        self.q = Quantizer(bits, range_method=range_method)
        self.k = Quantizer(bits, range_method=range_method)
        self.p = Quantizer(bits, range_method=range_method)
        self.v = Quantizer(bits, range_method=range_method)

    def quantizers(self) -> list[Quantizer]:
        return [self.q, self.k, self.p, self.v]

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
        return self.forward(attn, hidden_states, encoder_hidden_states, attention_mask, temb)

    def forward(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None
    ):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        image_shape = None
        if hidden_states.ndim == 4:
            image_shape = hidden_states.shape
            batch, channels, height, width = image_shape
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)

        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(context))
        value = attn.head_to_batch_dim(attn.to_v(context))
        if attn.norm_q is not None:
            query, key = attn.norm_q(query), attn.norm_k(key)
        mask = None
        if attention_mask is not None:
            mask = attn.prepare_attention_mask(
                attention_mask, context.shape[1], hidden_states.shape[0]
            )
        hidden_states = attn.batch_to_head_dim(self._attend(query * attn.scale, key, value, mask))

        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if image_shape is not None:
            hidden_states = hidden_states.transpose(-1, -2).reshape(image_shape)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    def _attend(self, query, key, value, mask):
        """softmax(Q K^T + mask) V over slices of the (batch x heads) axis whose scores stay under
        SCORES_SLICE_BYTES: SD1.5's 4096-token self-attention held 4.3 GB of scores and as much of
        probabilities at once for a calibration batch of 8 (a 19 GiB peak, measured). The
        quantizers' scales are static, so slicing changes no number (while calibrating, each slice
        is observed like a call of its own)."""
        step = max(1, SCORES_SLICE_BYTES // (query.shape[1] * key.shape[1] * query.element_size()))
        outputs = []
        for start in range(0, query.shape[0], step):
            rows = slice(start, start + step)
            scores = torch.bmm(self.q(query[rows]), self.k(key[rows]).transpose(1, 2))
            if mask is not None:
                scores = scores + mask[rows]
            probs = scores.softmax(dim=-1).to(value.dtype)
            outputs.append(torch.bmm(self.p(probs), self.v(value[rows])))
        return torch.cat(outputs)
