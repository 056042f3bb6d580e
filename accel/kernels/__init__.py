"""Triton kernels with their PyTorch references and checking launchers (installed as
``accel.kernels``).

Each kernel module holds the Triton kernel and a launcher that checks its inputs before launch; the
PyTorch references they are tested against live in ``reference`` and import without Triton, so a
machine without it (macOS, Windows) still runs every model through the references. The launchers run
on CUDA tensors, or on CPU tensors in Triton's interpreter (TRITON_INTERPRET=1, set before this
package is first imported), which the CPU test suite uses.
"""

from accel.kernels.reference import attention_reference, group_norm_reference

__all__ = ["attention_reference", "group_norm_reference"]
try:
    import triton  # noqa: F401
except ImportError:
    pass
else:
    from accel.kernels.attention import attention
    from accel.kernels.group_norm import group_norm

    __all__ += ["attention", "group_norm"]
