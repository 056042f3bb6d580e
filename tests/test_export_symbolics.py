"""GELU's tanh approximation exported in the form ONNX Runtime fuses into one FastGelu kernel, the
same function as PyTorch's within float rounding; the erf form stays torch's own."""

import collections

import numpy as np
import onnx
import torch
import torch.nn as nn

from accel.export.symbolics import runtime_fusable_ops


class _MLP(nn.Module):
    def __init__(self, approximate: str):
        super().__init__()
        torch.manual_seed(0)
        self.up, self.down = nn.Linear(16, 64), nn.Linear(64, 16)
        self.act = nn.GELU(approximate=approximate)

    def forward(self, x):
        return self.down(self.act(self.up(x)))


def _export(module, path, opset=17):
    with runtime_fusable_ops(opset):
        torch.onnx.export(
            module,
            (torch.randn(4, 16),),
            str(path),
            opset_version=opset,
            input_names=["x"],
            output_names=["y"],
            dynamo=False,
        )


def _optimized(path, tmp_path):
    """ONNX Runtime's CPU session on ``path``: its optimized graph's op counts, and the session."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(str(tmp_path / "optimized.onnx")).graph
    return collections.Counter(node.op_type for node in graph.node), session


def test_tanh_gelu_fuses_into_fast_gelu_with_torchs_values(tmp_path):
    module = _MLP("tanh").eval()
    _export(module, tmp_path / "mlp.onnx")
    ops, session = _optimized(tmp_path / "mlp.onnx", tmp_path)
    assert ops["FastGelu"] == 1 and ops["Tanh"] == 0 and ops["Pow"] == 0
    x = torch.randn(4, 16) * 3  # the traced shape
    with torch.no_grad():
        expected = module(x).numpy()
    np.testing.assert_allclose(session.run(["y"], {"x": x.numpy()})[0], expected, atol=1e-5)


def test_erf_gelu_keeps_torchs_form_and_the_registration_ends_with_the_export(tmp_path):
    _export(_MLP("none").eval(), tmp_path / "erf.onnx")
    ops = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "erf.onnx")).graph.node)
    assert ops["Erf"] == 1 and ops["Pow"] == 0
    # outside the context the exporter writes torch's own tanh form again
    torch.onnx.export(
        _MLP("tanh").eval(),
        (torch.randn(4, 16),),
        str(tmp_path / "plain.onnx"),
        opset_version=17,
        dynamo=False,
    )
    plain = collections.Counter(
        n.op_type for n in onnx.load(str(tmp_path / "plain.onnx")).graph.node
    )
    assert plain["Tanh"] == 1 and plain["Pow"] == 0
