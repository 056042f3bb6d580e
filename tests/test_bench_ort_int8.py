"""``python -m bench.ort_int8`` counts the integer nodes in ONNX Runtime's optimized graph: a float
graph has none, ONNX Runtime's own static quantization of it (fed by accel's calibration set) fuses
into integer kernels."""

import accel
from accel.export.graph import input_names
from accel.export.onnx import export_onnx
from bench.ort_int8 import _CalibrationReader, integer_nodes
from conftest import make_tiny_unet, tiny_calib


def test_integer_nodes_are_counted_in_the_optimized_graph(tmp_path):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    model = accel.load(make_tiny_unet())
    fp32, static = tmp_path / "fp32.onnx", tmp_path / "static.onnx"
    export_onnx(model, fp32)
    reader = _CalibrationReader(tiny_calib(model), input_names(model))
    quantize_static(
        str(fp32),
        str(static),
        reader,
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
    assert integer_nodes(fp32, tmp_path) == 0
    assert integer_nodes(static, tmp_path) > 0
