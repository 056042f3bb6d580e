"""What the kernels' launchers share: where a kernel may run, and how many programs fill the GPU."""

from __future__ import annotations

import os

import torch

from accel.core.errors import AccelError

# Without a GPU to ask, size grids for an H100 (132 SMs): the interpreter then runs the same split
# logic.
DEFAULT_SM_COUNT = 132


def interpreted() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1): correctness only,
    not speed."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def can_launch(tensor: torch.Tensor) -> bool:
    """Whether a Triton kernel can run on ``tensor``: CUDA tensors, or any tensor under the
    interpreter."""
    return tensor.is_cuda or interpreted()


def check_launchable(tensor: torch.Tensor, kernel: str) -> None:
    if not can_launch(tensor):
        raise AccelError(
            f"the Triton {kernel} kernel needs a CUDA tensor (got {tensor.device}); set "
            "TRITON_INTERPRET=1 to run it in Triton's CPU interpreter, or use the PyTorch reference"
        )


def sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return DEFAULT_SM_COUNT
