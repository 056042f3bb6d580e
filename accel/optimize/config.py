"""OptimizeConfig: how ``optimize_`` runs a model: precision, memory layout, kernels, CUDA graphs."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch

from accel.errors import AccelError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
BACKENDS = ("auto", "triton", "torch")


@dataclass
class OptimizeConfig:
    dtype: str = "auto"           # fp16, bf16, fp32; auto: fp16 on CUDA, fp32 elsewhere
    channels_last: bool = True    # NHWC activations: what cuDNN's fp16 convolutions and our GroupNorm read fastest
    backend: str = "auto"         # auto: Triton kernels on CUDA, PyTorch reference elsewhere; triton: always
                                  # (on CPU only under TRITON_INTERPRET=1); torch: never
    cuda_graph: bool = False      # replay the whole denoiser step as one CUDA graph per input shape

    def __post_init__(self):
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise AccelError(f"--dtype must be auto or one of {', '.join(DTYPES)}, got {self.dtype}")
        if self.backend not in BACKENDS:
            raise AccelError(f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend}")

    def torch_dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype == "auto":
            return torch.float16 if device.type == "cuda" else torch.float32
        return DTYPES[self.dtype]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "OptimizeConfig":
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise AccelError(f"unknown optimize settings: {', '.join(sorted(unknown))}")
        return cls(**data)
