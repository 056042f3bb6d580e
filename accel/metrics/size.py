"""Parameters, multiply-accumulates (counted by tracing one forward pass) and bytes on disk."""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from accel.models.denoiser import Denoiser


def count_params(denoiser: Denoiser) -> int:
    return sum(p.numel() for p in denoiser.parameters())


@torch.inference_mode()
def count_macs(denoiser: Denoiser) -> int:
    """MACs of one denoiser call on one sample: half the FLOPs that PyTorch's FlopCounterMode records for
    the matrix ops it dispatches (convolutions, matmuls, attention), as fvcore/thop count them."""
    with FlopCounterMode(display=False) as counter:
        denoiser(*denoiser.example_inputs(1))
    return counter.get_total_flops() // 2


def weights_bytes(denoiser: Denoiser) -> int:
    """Bytes of the weights on disk; for a model not loaded from disk (or changed since), the bytes of the
    model.safetensors an artifact of it would hold (quantized layers packed)."""
    if denoiser.weights_bytes:
        return denoiser.weights_bytes
    from safetensors.torch import save

    from accel.artifact import model_state

    return len(save(model_state(denoiser)))
