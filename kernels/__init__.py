"""Triton kernels with their PyTorch references and launchers (installed as ``accel.kernels``)."""
