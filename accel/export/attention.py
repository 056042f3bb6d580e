"""diffusers' attention as it is traced into a graph: the same function, with constant shapes.

diffusers' AttnProcessor2_0 sizes every reshape from ``tensor.shape`` and computes the head size
as ``key.shape[-1] // heads``, so the tracer writes a Shape -> Gather -> Unsqueeze -> Concat chain
(with Cast and Div for the head size) before each of an attention's five reshapes: 20 to 30 nodes
per attention, run on every call; about 190 of the 764 nodes of the digits UNet's fp32 graph once
ONNX Runtime has optimized it. At batch 1, where a node's dispatch is a large part of its time,
those chains cost 6% of a call (3.06 -> 2.87 ms, 2-core AMD EPYC, ONNX Runtime 1.32). Here each
reshape is one Reshape with a constant shape: 0 copies the batch (ONNX's Reshape semantics), -1
the token count, heads and head size are the module's own; the softmax scale is a constant too.

A 4-D (UNet) input is flattened to tokens channels-last (Transpose to NHWC, then Reshape), and
tokens go back the same way. ONNX Runtime runs integer convolutions channels-last and cancels
their transposes against these: 16 fewer Transpose nodes in the digits UNet's ort-cpu graph.
The group norm is applied before flattening, over the same groups.

fp16 graphs keep diffusers' processor: they are for GPU runtimes, which size shapes once per engine,
and in fp16 the other op order moved the tiny W8A8 UNet's parity error from 0.036 to 0.052, past the
gate's 0.05 (one INT8 step flipped and propagated; measured, not analysed further).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

# the float processors this one replaces; others (accel's fused kernels, masks, custom
# processors) are traced as they are
PLAIN_PROCESSORS = (AttnProcessor, AttnProcessor2_0)


class BatchReshape(torch.autograd.Function):
    """``x.reshape(batch, *shape)``, exported as Reshape with the constant shape ``[0, *shape]``."""

    @staticmethod
    def forward(ctx, x, *shape):
        return x.reshape(x.shape[0], *shape)

    @staticmethod
    def symbolic(g, x, *shape):
        return g.op("Reshape", x, _int64(g, [0, *shape]))


class TokensToChannelsFirst(torch.autograd.Function):
    """Tokens (N, H*W, C) back to ``like``'s (N, C, H, W): Reshape to NHWC with ``like``'s height
    and width, then Transpose."""

    @staticmethod
    def forward(ctx, tokens, like):
        batch, _, height, width = like.shape
        return tokens.reshape(batch, height, width, tokens.shape[-1]).permute(0, 3, 1, 2)

    @staticmethod
    def symbolic(g, tokens, like):
        height_width = g.op("Slice", g.op("Shape", like), _int64(g, [2]), _int64(g, [4]))
        shape = g.op("Concat", _int64(g, [0]), height_width, _int64(g, [-1]), axis_i=0)
        return g.op("Transpose", g.op("Reshape", tokens, shape), perm_i=[0, 3, 1, 2])


def _int64(g, values: list[int]):
    return g.op("Constant", value_t=torch.tensor(values, dtype=torch.int64))


class ExportAttnProcessor(AttnProcessor2_0):
    """AttnProcessor2_0's self- and cross-attention with constant-shape reshapes; any case it does
    not cover (masks, spatial or q/k norms, grouped key-value heads) goes to AttnProcessor2_0."""

    def __call__(
        self,
        attn: Attention,
        hidden_states,
        encoder_hidden_states=None,
        attention_mask=None,
        temb=None,  # used only by a spatial norm, which goes to AttnProcessor2_0
        *args,
        **kwargs,
    ):
        if args or kwargs or attention_mask is not None or not _covered(attn):
            return super().__call__(
                attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs
            )
        residual = hidden_states
        image = hidden_states.ndim == 4
        if image:
            if attn.group_norm is not None:  # over channels, axis 1, as on the flattened tokens
                hidden_states = attn.group_norm(hidden_states)
            hidden_states = BatchReshape.apply(
                hidden_states.permute(0, 2, 3, 1), -1, attn.query_dim
            )
        elif attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        head_dim = attn.inner_dim // attn.heads
        query, key, value = (
            BatchReshape.apply(x, -1, attn.heads, head_dim).transpose(1, 2)
            for x in (attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context))
        )
        # the default scale as a constant: traced from query's shape it is Shape, Cast, Sqrt, Div
        out = F.scaled_dot_product_attention(query, key, value, scale=head_dim**-0.5)
        out = BatchReshape.apply(out.transpose(1, 2), -1, attn.inner_dim)
        out = attn.to_out[1](attn.to_out[0](out))
        if image:
            out = TokensToChannelsFirst.apply(out, residual)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def _covered(attn: Attention) -> bool:
    return (
        attn.spatial_norm is None
        and attn.norm_q is None
        and attn.norm_k is None
        and getattr(attn, "inner_kv_dim", attn.inner_dim) == attn.inner_dim
    )


def with_export_attention(network: torch.nn.Module) -> int:
    """Give every attention with a plain float processor the export processor, in place (export
    works on a copy); returns how many."""
    replaced = 0
    for module in network.modules():
        if isinstance(module, Attention) and type(module.processor) in PLAIN_PROCESSORS:
            module.set_processor(ExportAttnProcessor())
            replaced += 1
    return replaced
