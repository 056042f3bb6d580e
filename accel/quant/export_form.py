"""Quantization's ``ExportForm``: the portable Q/DQ form (qdq.py, what TensorRT reads) or the form
ONNX Runtime's CPU optimizer fuses into integer kernels (ort_cpu.py), by the export's target."""

from __future__ import annotations

import torch.nn as nn

from accel.core.registry import FormRequest
from accel.quant.ort_cpu import to_ort_cpu
from accel.quant.qdq import blocked_layers, to_qdq

__all__ = ["blocked_layers", "convert"]


def convert(network: nn.Module, request: FormRequest) -> dict:
    if request.target == "ort-cpu":
        return to_ort_cpu(network, request.run_calibration)
    return to_qdq(network, request.blocked)
