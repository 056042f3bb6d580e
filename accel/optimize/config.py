"""OptimizeConfig: how ``optimize_`` runs a model: precision, memory layout, kernels, CUDA graphs."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from accel.core.config import Config

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
BACKENDS = ("auto", "triton", "torch")


@dataclass(frozen=True)
class OptimizeConfig(Config):
    dtype: str = "auto"           # fp16, bf16, fp32; auto: fp16 on CUDA, fp32 elsewhere
    channels_last: bool = True    # NHWC activations: what cuDNN's fp16 convolutions and our GroupNorm read fastest
    backend: str = "auto"         # auto: Triton kernels on CUDA, PyTorch reference elsewhere; triton: always
                                  # (on CPU only under TRITON_INTERPRET=1); torch: never
    cuda_graph: bool = False      # replay the whole denoiser step as one CUDA graph per input shape

    def validate(self) -> None:
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise self.invalid("dtype", f"must be auto or one of {', '.join(DTYPES)}, got {self.dtype}")
        if self.backend not in BACKENDS:
            raise self.invalid("backend", f"must be one of {', '.join(BACKENDS)}, got {self.backend}")

    def torch_dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype == "auto":
            return torch.float16 if device.type == "cuda" else torch.float32
        return DTYPES[self.dtype]
