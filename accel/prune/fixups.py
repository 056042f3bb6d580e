"""The attributes diffusers reads at run time that a width change leaves stale.

Torch-Pruning rewrites the weights and the ``in_channels``/``out_channels``/``num_channels`` of the
layers it cuts; the blocks around them keep what their constructor computed:

- ``Upsample2D`` and ``Downsample2D`` assert ``hidden_states.shape[1] == self.channels`` in forward,
  and keep an ``out_channels`` (Diff-Pruning's fix-up compares ``out_channels ==`` instead of
  assigning it: both are set here);
- ``Attention`` derives its head width from ``heads`` and keeps
  ``inner_dim``/``inner_kv_dim``/``out_dim``;
- ``ResnetBlock2D`` keeps ``in_channels``/``out_channels``; ``Transformer2DModel``-style models keep
  ``inner_dim``.

``fix_attributes`` runs after pruning and after an artifact's widths are applied to a fresh network.
"""

from __future__ import annotations

import torch.nn as nn


def _conv(m: nn.Module) -> nn.Module | None:
    conv = getattr(m, "conv", None)
    return conv if isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) else None


def _resample(m: nn.Module) -> None:
    conv = _conv(m)
    if conv is not None:
        m.channels, m.out_channels = conv.in_channels, conv.out_channels


def _attention(m: nn.Module) -> None:
    m.inner_dim = m.to_q.out_features
    if hasattr(m, "inner_kv_dim"):
        m.inner_kv_dim = m.to_k.out_features
    m.out_dim = m.to_out[0].out_features
    if hasattr(m, "query_dim"):
        m.query_dim = m.to_q.in_features


def _resnet(m: nn.Module) -> None:
    m.in_channels, m.out_channels = m.conv1.in_channels, m.conv2.out_channels


FIXUPS = {
    "Upsample2D": _resample,
    "Downsample2D": _resample,
    "Attention": _attention,
    "ResnetBlock2D": _resnet,
}


def fix_attributes(module: nn.Module) -> None:
    for m in module.modules():
        fix = FIXUPS.get(type(m).__name__)
        if fix is not None:
            fix(m)
