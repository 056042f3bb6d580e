"""ONNX export: float and Q/DQ graphs pass the checker, ONNX Runtime matches PyTorch, exported files sample like
any model, and what cannot be exported fails in one line with nothing written."""
import importlib.util
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import accel
from accel.errors import AccelError
from accel.export.onnx import TOLERANCE, export_onnx
from conftest import make_tiny_dit, make_tiny_text_unet, make_tiny_unet, run_cli as run
from test_quant import tiny_calib

# Everything TensorRT 10's ONNX parser supports, as far as these graphs use it (its operator list); a new op
# type in an exported graph must be checked against that list before it is added here.
TENSORRT_OPS = {"Add", "Cast", "Concat", "Constant", "ConstantOfShape", "Conv", "Cos", "DequantizeLinear", "Div",
                "Equal", "Erf", "Expand", "Gather", "Gemm", "InstanceNormalization", "LayerNormalization", "MatMul",
                "Mul", "Pow", "QuantizeLinear", "ReduceMean", "Reshape", "Resize", "Shape", "Sigmoid", "Sin",
                "Slice", "Softmax", "Split", "Sqrt", "Sub", "Tanh", "Transpose", "Unsqueeze", "Where", "Range",
                "Exp", "Neg", "Squeeze", "Mod", "Identity", "Flatten", "Less", "Not", "If", "Greater", "Max",
                "Min", "Clip", "Abs", "Floor", "ScatterND", "Einsum", "Trilu", "CumSum", "Gelu", "HardSigmoid"}


def _quantized(config):
    model = accel.load(make_tiny_unet())
    accel.quantize_(model, config, tiny_calib(accel.load(make_tiny_unet())), progress=False)
    return model


@pytest.mark.parametrize("make", [make_tiny_unet, make_tiny_text_unet, make_tiny_dit], ids=["unet", "text", "dit"])
def test_float_export_matches_pytorch_and_reloads(tmp_path, make):
    model = accel.load(make())
    record = export_onnx(model, tmp_path / "m.onnx")
    assert record["form"] == "float" and record["parity"]["met"]
    assert record["parity"]["max_rel"] < TOLERANCE["float"] and set(record["ops"]) <= TENSORRT_OPS
    exported = accel.load(tmp_path / "m.onnx")
    assert exported.cond_kind == model.cond_kind and exported.sample_shape == model.sample_shape
    x, t, cond = model.example_inputs(3, t=700, seed=5)
    with torch.no_grad():
        expected = model(x, t, cond)
    torch.testing.assert_close(exported(x, t, cond), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("config", [accel.W8A8, accel.W4A8], ids=["w8a8", "w4a8"])
def test_quantized_export_is_qdq_with_int8_weights(tmp_path, config):
    model = _quantized(config)
    record = export_onnx(model, tmp_path / "q.onnx")
    assert record["form"] == "qdq" and record["parity"]["met"] and set(record["ops"]) <= TENSORRT_OPS
    assert record["qdq_layers"] > 0 and record["split_layers"] > 0 and record["float_attention"] > 0
    graph = onnx.load(tmp_path / "q.onnx").graph
    bits = {name: layer.w_bits for name, layer in model.module.named_modules() if hasattr(layer, "w_bits")}
    codes = {i.name: numpy_helper.to_array(i) for i in graph.initializer if ".export_codes_" in i.name}
    assert len(codes) == len(bits) + record["split_layers"] and all(c.dtype == np.int8 for c in codes.values())
    for name, values in codes.items():
        layer_bits = bits[name.split(".export_codes_")[0].removeprefix("denoiser.module.")]
        assert values.min() >= -(1 << (layer_bits - 1)) and values.max() < 1 << (layer_bits - 1)
    assert (config.w_bits == 4) == any(b == 4 for b in bits.values())  # 4-bit codes travel on the INT8 grid
    scales = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    assert len(scales) >= record["qdq_layers"] - 1  # every quantized input but the float-input first layer


def test_split_shortcut_exports_as_two_convolutions(tmp_path):
    model = _quantized(accel.W8A8)
    plain = export_onnx(accel.load(make_tiny_unet()), tmp_path / "f.onnx")
    record = export_onnx(model, tmp_path / "q.onnx")
    assert record["ops"]["Conv"] == plain["ops"]["Conv"] + record["split_layers"]


def test_export_leaves_the_quantized_model_unchanged(tmp_path):
    model = _quantized(accel.W4A8)
    x, t, cond = model.example_inputs(2)
    with torch.no_grad():
        before = model(x, t, cond)
        export_onnx(model, tmp_path / "q.onnx")
        assert torch.equal(model(x, t, cond), before)
    assert not any(name.startswith("export_") or ".export_" in name for name, _ in model.named_buffers())


def test_asymmetric_quantization_is_refused_with_nothing_written(tmp_path):
    model = _quantized(accel.QuantConfig(w_bits=8, a_bits=8, a_symmetric=False))
    with pytest.raises(AccelError, match="asymmetric"):
        export_onnx(model, tmp_path / "q.onnx")
    assert not list(tmp_path.iterdir())


def test_export_cli_then_eval_through_onnx_runtime(tmp_path, tiny_unet_dir, capsys):
    out = tmp_path / "m.onnx"
    code, stdout, _ = run(capsys, "export", "onnx", "--model", str(tiny_unet_dir), "--out", str(out), "--json")
    assert code == 0 and json.loads(stdout)["parity"]["met"]
    code, stdout, _ = run(capsys, "eval", "--model", str(out), "--n", "8", "--steps", "3", "--json")
    report = json.loads(stdout)
    assert code == 0 and report["original"]["latency_ms_per_step"] > 0
    assert report["original"]["params"] == sum(p.numel() for p in accel.load(tiny_unet_dir).parameters())
    assert any("ONNX Runtime" in note for note in report["notes"])
    config = accel.SamplerConfig(steps=3)
    through_ort = accel.sample(accel.load(out), 4, seed=1, config=config, progress=False).images
    through_torch = accel.sample(accel.load(tiny_unet_dir), 4, seed=1, config=config, progress=False).images
    torch.testing.assert_close(through_ort, through_torch, atol=1e-4, rtol=0)


@pytest.mark.parametrize("argv,message", [
    (["onnx", "--out", "missing-dir/m.onnx"], "does not exist"),
    (["onnx", "--out", "m.onnx", "--opset", "11"], "too low"),
    (["onnx", "--out", "m.txt"], "give a .onnx file"),
])
def test_export_cli_bad_input(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "export", *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None,
                    reason="checks the error for a missing TensorRT; it is installed here")
def test_trt_without_tensorrt_names_the_extra(tmp_path, capsys):
    code, _, err = run(capsys, "export", "trt", "--out", str(tmp_path / "m.plan"))
    assert code == 2 and "accel[trt]" in err and not list(tmp_path.iterdir())


@pytest.mark.gpu
def test_trt_engine_matches_pytorch(tmp_path):
    pytest.importorskip("tensorrt")
    from accel.export.trt import export_trt

    model = accel.load(make_tiny_unet())
    export_trt(model, tmp_path / "m.plan")
    engine = accel.load(tmp_path / "m.plan")
    x, t, cond = model.example_inputs(2)
    with torch.no_grad():
        expected = model(x, t, cond)
    torch.testing.assert_close(engine(x.cuda(), t.cuda(), cond).cpu(), expected, atol=1e-3, rtol=1e-3)
