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
    """Bytes of the weights on disk; for a model not loaded from disk, its safetensors serialization."""
    if denoiser.weights_bytes:
        return denoiser.weights_bytes
    from safetensors.torch import save

    state = {k: v.detach().contiguous().cpu() for k, v in denoiser.module.state_dict().items()}
    return len(save(state))
