"""Parameters, multiply-accumulates (counted by tracing one forward pass) and bytes on disk."""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

# FlopCounterMode knows scaled_dot_product_attention's CUDA kernels but not the CPU one it dispatches to here;
# without this, attention would count as zero MACs on the CPU.
_CPU_ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
                  lambda query, key, value, *args, out_shape=None, **kwargs: sdpa_flop_count(query, key, value)}

from accel.models.denoiser import Denoiser


def count_params(denoiser: Denoiser) -> int:
    """Parameters of the network itself: quantizers' step sizes are bookkeeping, not weights. An exported
    model (ONNX Runtime session) reports the count of the PyTorch model it was exported from."""
    from accel.quant.quantizer import Quantizer

    if hasattr(denoiser.module, "num_params"):
        return denoiser.module.num_params
    return sum(p.numel() for m in denoiser.modules() if not isinstance(m, Quantizer)
               for p in m.parameters(recurse=False))


@torch.inference_mode()
def count_macs(denoiser: Denoiser) -> int:
    """MACs of one denoiser call on one sample: half the FLOPs that PyTorch's FlopCounterMode records for
    the matrix ops it dispatches (convolutions, matmuls, attention), as fvcore/thop count them. An exported
    model reports the count of the PyTorch model it was exported from (same graph)."""
    if hasattr(denoiser.module, "num_macs"):
        return denoiser.module.num_macs
    with FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION) as counter:
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
