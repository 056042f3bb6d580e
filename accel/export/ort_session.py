"""ONNX Runtime sessions as accel runs them: the cores PyTorch has, no spinning between runs, and
the arithmetic the graph states."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch

from accel.core.errors import AccelError, one_line


def ort_session(path: str | Path):
    """An ONNX Runtime session on the best installed provider (CUDA where onnxruntime-gpu has
    it)."""
    import onnxruntime as ort

    providers = [
        p
        for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
        if p in ort.get_available_providers()
    ]
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    # the same cores as PyTorch's, so that a side-by-side timing compares runtimes, not thread
    # counts (the report records both: accel.report.schema.threads)
    options.intra_op_num_threads = torch.get_num_threads()
    # Spinning threads (the default) keep the cores busy after each run and slow a PyTorch call
    # timed right after it: 30 ms instead of 5 for a digits step at batch 1, measured here.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # ONNX Runtime fuses INT4 DequantizeLinear + MatMul into MatMulNBits, which by default (accuracy
    # level 4) requantizes the activations to INT8 per block: other arithmetic than the graph's, a
    # 1e-2 relative error measured on its own. Level 1 keeps the fused kernel and computes in fp32,
    # as the graph says.
    options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "1")
    if _weight_only(path):
        # Quantized weights, float activations: let ONNX Runtime fold each weight's DequantizeLinear
        # into a float initializer at load. Otherwise the convolutions see computed weights and lose
        # their reordered (NCHWc) kernels: 258 ms vs 143 ms per call at batch 200 on digits (W8
        # weight-only, 2-core Xeon). Same arithmetic.
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    elif integer_kernels_saturate():
        # Q/DQ run as written (float arithmetic on the integer grid), not as fused integer kernels
        # that would compute another function on this CPU: correct, and no faster than float
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as error:  # onnxruntime raises its own exception types for unreadable models
        raise AccelError(f"ONNX Runtime cannot load {path}: {one_line(error)}")


def _weight_only(path: str | Path) -> bool:
    """A graph with DequantizeLinear (on weights) and no QuantizeLinear: weight-only
    quantization."""
    import onnx

    try:
        ops = {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}
    # onnx raises its own types; an unreadable file gets ONNX Runtime's error when loaded
    except Exception:
        return False
    return "DequantizeLinear" in ops and "QuantizeLinear" not in ops


@functools.cache  # the CPU does not change: read /proc/cpuinfo once, not per session
def integer_kernels_saturate() -> bool:
    """x86 without VNNI: ONNX Runtime's u8 x s8 integer kernels add pairs of products with
    VPMADDUBSW, whose int16 sums saturate (its quantization documentation says so, and suggests
    7-bit weights there). Measured: a digits W8A8 graph 15% off PyTorch on a 2-core AMD EPYC with
    AVX2 and no VNNI, within the parity gate's 5% on the Intel Xeon of the committed results."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "")
    except OSError:  # not Linux: no way to tell here, assume the common modern case
        return False
    return "vnni" not in flags
