"""ONNX forms of PyTorch ops, written the way ONNX Runtime's graph optimizer recognizes them.

The TorchScript exporter writes tanh-approximated GELU (the MLP activation of DiT and PixArt) as
``0.5 * (x * (1 + tanh(beta * (x + kappa * (x * (x * x))))))``, a form none of ONNX Runtime's
fusions matches: nine elementwise passes over the MLP's widest activation, 43 of the 111 ms of a
digits-dit transformer block at batch 500 (measured, 2-core AMD EPYC). The same function written as
its FastGeluFusion expects it (``Pow(x, 3)``, and ``x * 0.5`` as its own factor; source
``fast_gelu_fusion.cc``) runs as one FastGelu kernel, which also takes in the bias Add before it.
Standard ONNX either way: other runtimes read the same ops.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch.onnx import symbolic_helper, symbolic_opset9

GELU_TANH_BETA = math.sqrt(2 / math.pi)
GELU_TANH_KAPPA = 0.044715


@contextlib.contextmanager
def runtime_fusable_ops(opset: int):
    """While exporting at ``opset``: GELU in the form ONNX Runtime fuses."""
    torch.onnx.register_custom_op_symbolic("aten::gelu", _gelu, opset)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::gelu", opset)


def _gelu(g, x, approximate):
    if symbolic_helper._maybe_get_const(approximate, "s") != "tanh":
        return symbolic_opset9.gelu(g, x, approximate)  # erf form: ORT's GeluFusion matches it

    def constant(value: float):
        half = x.type().scalarType() == "Half"
        dtype = torch.float16 if half else torch.float32
        return g.op("Constant", value_t=torch.tensor(value, dtype=dtype))

    cube = g.op("Pow", x, constant(3.0))
    inner = g.op("Add", x, g.op("Mul", cube, constant(GELU_TANH_KAPPA)))
    tanh = g.op("Tanh", g.op("Mul", inner, constant(GELU_TANH_BETA)))
    return g.op("Mul", g.op("Mul", x, constant(0.5)), g.op("Add", tanh, constant(1.0)))
