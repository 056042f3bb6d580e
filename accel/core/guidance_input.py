"""A guidance-weight input for a class-conditional transformer: the network of a guidance-distilled
student, which computes what its teacher's two guided evaluations give (eps_u + w (eps_c - eps_u))
in one call that takes w.

As in Meng et al. 2023 ("On distillation of guided diffusion models") and LCM, w enters through the
conditioning: a sinusoidal embedding of w, through a small MLP, is added to the timestep + class
embedding of every block's adaLN (a DiT computes one per block; its final layer reuses block 0's).
The MLP's last layer starts at zero, so before training the student is its teacher at any w.

The weight of a call is set with ``guidance_weight(network, w)`` around it: diffusers' DiT forward
has no argument for it. A traced call (ONNX export) records w as the input it came from.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn

FREQUENCIES = 32  # the sinusoid has 2 x FREQUENCIES features
# LCM embeds (w - 1) x 1000 (diffusers' get_guidance_scale_embedding): the range 1-8 spans the
# sinusoid's periods as timesteps 0-7000 would
SCALE = 1000.0


def weight_features(w: torch.Tensor) -> torch.Tensor:
    """Sinusoidal features of the guidance weights ``w`` (N,): (N, 2 x FREQUENCIES)."""
    exponent = torch.arange(FREQUENCIES, device=w.device, dtype=torch.float32) / FREQUENCIES
    angles = (w.float() - 1.0)[:, None] * SCALE * torch.exp(-math.log(10_000.0) * exponent)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class GuidedEmbedding(nn.Module):
    """A DiT block's timestep + class embedding (diffusers' CombinedTimestepLabelEmbeddings) plus
    an embedding of the guidance weight."""

    def __init__(self, label_time: nn.Module, width: int, low: float, high: float):
        super().__init__()
        self.label_time = label_time
        self.weight_mlp = nn.Sequential(
            nn.Linear(2 * FREQUENCIES, width), nn.SiLU(), nn.Linear(width, width)
        )
        nn.init.zeros_(self.weight_mlp[-1].weight)
        nn.init.zeros_(self.weight_mlp[-1].bias)
        self.low, self.high = low, high
        self.weight: torch.Tensor | None = None  # (N,) for the call in progress

    def forward(self, timestep, class_labels, hidden_dtype=None) -> torch.Tensor:
        base = self.label_time(timestep, class_labels, hidden_dtype=hidden_dtype)
        if self.weight is None:
            raise RuntimeError("a guidance-distilled network is called inside guidance_weight()")
        w = self.weight.to(base.device).expand(base.shape[0])
        return base + self.weight_mlp(weight_features(w).to(base.dtype))


def add_guidance_input(network: nn.Module, low: float, high: float) -> nn.Module:
    """Give a DiT (diffusers' DiTTransformer2DModel) a guidance-weight input for w in [low, high],
    in place. The network says so in ``guidance_range``, as an exported graph's runtime does (read
    on every call: an attribute, not a walk over the modules)."""
    for block in network.transformer_blocks:
        embedding = block.norm1.emb
        width = embedding.timestep_embedder.linear_2.out_features
        block.norm1.emb = GuidedEmbedding(embedding, width, low, high)
    network.guidance_range = (low, high)
    return network


def has_weight_embedding(network: nn.Module) -> bool:
    """Whether ``network`` takes w through its embeddings (``guidance_weight``), not as an
    argument (an exported graph's runtime)."""
    return any(isinstance(module, GuidedEmbedding) for module in network.modules())


@contextlib.contextmanager
def guidance_weight(network: nn.Module, w: torch.Tensor | float):
    """Calls of ``network`` inside use guidance weight ``w`` (a number, or one per sample); the
    weight set outside, if any, is restored after. Nothing for a network without a weight input."""
    embeddings = [module for module in network.modules() if isinstance(module, GuidedEmbedding)]
    before = [embedding.weight for embedding in embeddings]
    w = torch.as_tensor(w, dtype=torch.float32).reshape(-1)
    for embedding in embeddings:
        embedding.weight = w
    try:
        yield
    finally:
        for embedding, weight in zip(embeddings, before):
            embedding.weight = weight
