"""OptimizeConfig: how ``optimize_`` runs a model: precision, memory layout, kernels, CUDA
graphs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from accel.core.config import Config, one_of

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
BACKENDS = ("auto", "triton", "torch")


@dataclass(frozen=True)
class OptimizeConfig(Config):
    # auto: fp16 on CUDA, fp32 elsewhere
    dtype: str = one_of("auto", ("auto", *DTYPES))
    # NHWC activations: what cuDNN's fp16 convolutions and our GroupNorm read fastest
    channels_last: bool = True
    # auto: Triton kernels on CUDA, the PyTorch reference elsewhere; triton: always (on the CPU only
    # under TRITON_INTERPRET=1); torch: never
    backend: str = one_of("auto", BACKENDS)
    cuda_graph: bool = False  # replay the whole denoiser step as one CUDA graph per input shape

    def torch_dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype == "auto":
            return torch.float16 if device.type == "cuda" else torch.float32
        return DTYPES[self.dtype]
