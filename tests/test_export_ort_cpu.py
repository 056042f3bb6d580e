"""``accel export onnx --target ort-cpu``: a quantized graph ONNX Runtime's CPU optimizer fuses into
integer kernels (QLinearConv, MatMulIntegerToFloat), counted in its optimized graph, still within
the parity gate."""

import collections

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import accel
from accel.export.config import ExportConfig
from accel.export.onnx import export_onnx
from accel.quant.layers import QuantLayer
from conftest import make_tiny_dit, make_tiny_unet, tiny_calib
from conftest import run_cli as run

ORT_CPU = ExportConfig(target="ort-cpu", range_samples=2)


def _quantized(make, config=accel.W8A8):
    model = accel.load(make())
    accel.quantize_(model, config, tiny_calib(accel.load(make())), progress=False)
    return model


def _optimized_ops(path, tmp_path) -> collections.Counter:
    """Op counts of the graph ONNX Runtime's CPU provider optimizes ``path`` into, every fusion
    on."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(str(tmp_path / "optimized.onnx")).graph
    return collections.Counter(node.op_type for node in graph.node)


def _layers(model, conv: bool) -> list[QuantLayer]:
    return [
        m
        for m in model.module.modules()
        if isinstance(m, QuantLayer) and m.a_bits == 8 and m.is_conv == conv
    ]


@pytest.mark.slow
def test_unet_convolutions_fuse_into_qlinearconv(tmp_path):
    model = _quantized(make_tiny_unet)
    record = export_onnx(model, tmp_path / "q.onnx", ORT_CPU)
    assert record["target"] == "ort-cpu" and record["parity"]["max_rel"] < 0.05
    convs = _layers(model, conv=True)
    parts = sum(2 if m.split else 1 for m in convs)
    # every quantized-input convolution, each half of a split one
    assert record["fused_convolutions"] == len(convs)
    ops = _optimized_ops(tmp_path / "q.onnx", tmp_path)
    assert ops["QLinearConv"] == parts > len(convs)
    assert ops["MatMulIntegerToFloat"] + ops["DynamicQuantizeMatMul"] > 0
    # the portable form fuses no convolution
    export_onnx(model, tmp_path / "portable.onnx")
    assert _optimized_ops(tmp_path / "portable.onnx", tmp_path)["QLinearConv"] == 0
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "q.onnx")).metadata_props}
    assert '"target": "ort-cpu"' in meta["accel"]


@pytest.mark.slow
def test_activations_are_uint8_and_biases_int32(tmp_path):
    model = _quantized(make_tiny_unet)
    export_onnx(model, tmp_path / "q.onnx", ORT_CPU)
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    initializers = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    constants = {
        n.output[0]: numpy_helper.to_array(n.attribute[0].t)
        for n in graph.node
        if n.op_type == "Constant"
    }
    zero_points = [
        {**initializers, **constants}[n.input[2]]
        for n in graph.node
        if n.op_type == "QuantizeLinear"
    ]
    assert zero_points and all(z.dtype == np.uint8 for z in zero_points)
    # input scales are symmetric: their uint8 zero point is 128; output ranges are not
    assert any(int(z) == 128 for z in zero_points) and any(int(z) != 128 for z in zero_points)
    dequantized = [
        initializers.get(n.input[0]) for n in graph.node if n.op_type == "DequantizeLinear"
    ]
    assert sum(d is not None and d.dtype == np.int32 for d in dequantized) > 0


@pytest.mark.slow
def test_dit_linear_layers_fuse_into_integer_matmuls(tmp_path):
    model = _quantized(make_tiny_dit)
    record = export_onnx(model, tmp_path / "q.onnx", ORT_CPU)
    assert record["integer_linear_layers"] == len(_layers(model, conv=False)) > 0
    ops = _optimized_ops(tmp_path / "q.onnx", tmp_path)
    assert ops["MatMulIntegerToFloat"] >= record["integer_linear_layers"]
    # every layer has a bias, each the fused kernel's 7th input instead of an Add after it (more
    # nodes than layers: DiT calls block 0's embedding again for the final norm)
    assert all(m.bias is not None for m in _layers(model, conv=False))
    graph = onnx.load(str(tmp_path / "optimized.onnx")).graph
    fused = [n for n in graph.node if n.op_type == "MatMulIntegerToFloat"]
    assert all(len(n.input) == 7 for n in fused)
    # a tensor is quantized once: to_q, to_k and to_v share their input's QuantizeLinear
    quantized = [n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"]
    assert len(quantized) == len(set(quantized)) < len(fused)


def test_a_float_model_has_no_ort_cpu_form(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    code, _, err = run(capsys, "export", "onnx", "--target", "ort-cpu", "--out", str(out))
    assert code == 2 and "has none (quantize it first" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "argv,message",
    [
        (["onnx", "--target", "ort-cpu", "--dtype", "fp16"], "float32 ops"),
        (["onnx", "--target", "ort-gpu"], "invalid choice"),
        (["onnx", "--target", "ort-cpu", "--range-samples", "0"], "at least 1"),
        (["trt", "--target", "ort-cpu"], "built from the tensorrt form"),
    ],
)
def test_bad_targets_are_refused_with_nothing_written(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "export", *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())
