"""Parameters, multiply-accumulates (counted by tracing, per call and per image) and bytes on
disk."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from accel.core.denoiser import Denoiser
from accel.core.weights import stored_state
from accel.sampling import sample


# FlopCounterMode knows scaled_dot_product_attention's CUDA kernels but not the CPU one it
# dispatches to here; without this, attention would count as zero MACs on the CPU.
def _cpu_attention_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


_CPU_ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops}


def count_params(denoiser: Denoiser) -> int:
    """Parameters of the network itself: modules that declare ``holds_weights = False`` (quantizers'
    step sizes) are bookkeeping, not weights. An exported model (ONNX Runtime session) reports the
    count of the PyTorch model it was exported from."""
    if hasattr(denoiser.module, "num_params"):
        return denoiser.module.num_params
    return sum(
        p.numel()
        for m in denoiser.modules()
        if getattr(m, "holds_weights", True)
        for p in m.parameters(recurse=False)
    )


def counted_macs(run) -> int:
    """Half the FLOPs PyTorch's FlopCounterMode records for the matrix ops ``run()`` dispatches
    (convolutions, matmuls, attention), as fvcore/thop count MACs."""
    with FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION) as counter:
        run()
    return counter.get_total_flops() // 2


@torch.inference_mode()
def count_macs(denoiser: Denoiser) -> int:
    """MACs of one denoiser call on one sample. An exported model reports the count of the PyTorch
    model it was exported from (same graph)."""
    if hasattr(denoiser.module, "num_macs"):
        return denoiser.module.num_macs
    return counted_macs(lambda: denoiser(*denoiser.example_inputs(1)))


def macs_per_image(denoiser: Denoiser) -> int:
    """MACs of one image's whole trajectory with the model's sampler, counted while sampling it, so
    that steps that cost less than others (feature caching) count as what they cost."""
    runtime = denoiser.module
    # an exported model's runtime adds up the MACs of the calls it runs
    if hasattr(runtime, "macs_run"):
        runtime.macs_run = 0
        sample(denoiser, 1, seed=0, progress=False)
        return runtime.macs_run
    return counted_macs(lambda: sample(denoiser, 1, seed=0, progress=False))


def weights_bytes(denoiser: Denoiser) -> int:
    """Bytes of the weights on disk; for a model not loaded from disk (or changed since), the bytes
    of the model.safetensors an artifact of it would hold (quantized layers packed)."""
    if denoiser.weights_bytes:
        return denoiser.weights_bytes
    from safetensors.torch import save

    return len(save(stored_state(denoiser)))
