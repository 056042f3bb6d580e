"""Run a kernel where it can run, the PyTorch reference where it cannot, and count which ran.

Under ``accel optimize`` an input a kernel does not support (a dtype, a head dim) is not an error:
the reference computes it, with one warning per reason, and the module's ``calls`` counter records
it.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable

import torch

import accel.kernels as kernels
from accel.core.errors import AccelError

TRITON, TORCH = "triton", "torch"


def wants_kernel(backend: str, x: torch.Tensor) -> bool:
    return backend == TRITON or (backend == "auto" and x.is_cuda)


def run(
    kernel: str, reference: Callable, backend: str, calls: Counter, x: torch.Tensor, *args, **kwargs
):
    """``accel.kernels.<kernel>`` where it can run, else ``reference``."""
    if wants_kernel(backend, x):
        try:
            if not hasattr(kernels, kernel):
                raise AccelError("Triton is not installed")
            out = getattr(kernels, kernel)(x, *args, **kwargs)
        except AccelError as unsupported:
            warnings.warn(
                f"accel optimize: {unsupported}; using the PyTorch reference there",
                RuntimeWarning,
                stacklevel=2,
            )
        else:
            calls[TRITON] += 1
            return out
    calls[TORCH] += 1
    return reference(x, *args, **kwargs)
