"""Triton kernels with their PyTorch references and checking launchers (installed as ``accel.kernels``).

Each kernel module holds the Triton kernel, a launcher that checks its inputs before launch, and the PyTorch
reference it is tested against. The launchers run on CUDA tensors, or on CPU tensors in Triton's interpreter
(TRITON_INTERPRET=1, set before the first import), which the CPU test suite uses.
"""
from accel.kernels.attention import attention, attention_reference
from accel.kernels.group_norm import group_norm, group_norm_reference

__all__ = ["attention", "attention_reference", "group_norm", "group_norm_reference"]
