"""W8A8 with dynamic activation scales: per token (torchao's int8 dynamic scheme) or per tensor
(ONNX's DynamicQuantizeLinear, exported for ONNX Runtime's CPU kernels)."""

import collections
from dataclasses import replace

import onnx
import pytest
import torch

import accel
from accel.core.errors import AccelError
from accel.export.config import ExportConfig
from accel.export.onnx import export_onnx
from accel.quant import quantize_
from accel.quant.attention import QuantAttnProcessor
from accel.quant.config import W4A8, W8A8, QuantConfig
from accel.quant.layers import QuantLayer, activation_quantizers
from accel.quant.quantizer import DynamicQuantizer, TensorDynamicQuantizer
from conftest import make_tiny_dit, make_tiny_unet, refused, tiny_calib

DYNAMIC = replace(W8A8, dynamic_activations=True)
PER_TENSOR = replace(DYNAMIC, dynamic_scope="tensor")


def ort_session_with_optimized_graph(path, optimized):
    """ONNX Runtime's CPU session on ``path``, its optimized graph written to ``optimized``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(optimized)
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return str(optimized)


def relative_error(a, b):
    return ((a - b).norm() / a.norm()).item()


def test_each_token_gets_its_own_8bit_scale():
    x = torch.randn(2, 5, 12) * torch.arange(1, 6).reshape(1, 5, 1)  # tokens of unequal range
    quantized = DynamicQuantizer(8, None, channel_dim=-1)(x)
    scale = x.abs().amax(-1, keepdim=True) / 127
    codes = quantized / scale
    assert not torch.equal(quantized, x)
    assert torch.allclose(codes, codes.round(), atol=1e-3) and codes.abs().max() <= 127 + 1e-3
    assert torch.allclose(quantized.abs().amax(-1), x.abs().amax(-1))


@pytest.mark.parametrize("make", [make_tiny_unet, make_tiny_dit])
def test_dynamic_w8a8_quantizes_every_input_per_token_and_differs_from_static(make):
    original = accel.load(make())
    calib = tiny_calib(original)
    x, t, cond = original.example_inputs(4, seed=3)
    outputs = {}
    for name, config in {"static": W8A8, "dynamic": DYNAMIC}.items():
        model = accel.load(make())
        record = quantize_(model, config, calib, progress=False)
        with torch.no_grad():
            outputs[name] = model(x, t, cond)
    with torch.no_grad():
        reference = original(x, t, cond)
    assert 0 < relative_error(reference, outputs["dynamic"]) < 0.05
    assert not torch.equal(outputs["dynamic"], outputs["static"])
    layers = [m for m in model.module.modules() if isinstance(m, QuantLayer) and m.a_bits]
    assert layers and all(m.dynamic_input for m in layers)
    assert all(spec.get("a_dynamic") for spec in record["layers"].values() if spec["a_bits"])
    # no static scale left: the attention matmuls stay float unless asked for
    assert activation_quantizers(model.module) == [] and record["attention"] == []


def test_dynamic_scales_need_no_calibration_without_bias_correction():
    model = accel.load(make_tiny_dit())
    quantize_(model, replace(DYNAMIC, bias_correction=False), None, progress=False)
    assert any(isinstance(m, QuantLayer) for m in model.module.modules())
    with pytest.raises(AccelError, match="need a calibration set"):
        quantize_(accel.load(make_tiny_dit()), W8A8, None, progress=False)


def test_attention_can_still_be_quantized_with_dynamic_layers():
    original, model = accel.load(make_tiny_dit()), accel.load(make_tiny_dit())
    quantize_(
        model, replace(DYNAMIC, quantize_attention=True), tiny_calib(original), progress=False
    )
    processors = [m.processor for m in model.module.modules() if hasattr(m, "processor")]
    assert processors and all(isinstance(p, QuantAttnProcessor) for p in processors)
    assert all(q.scale is not None for q in activation_quantizers(model.module))


@pytest.mark.parametrize("config", [DYNAMIC, PER_TENSOR], ids=["per token", "per tensor"])
def test_dynamic_artifact_reproduces_the_model(tmp_path, config):
    original, model = accel.load(make_tiny_dit()), accel.load(make_tiny_dit())
    quantize_(model, config, tiny_calib(original), progress=False)
    accel.save(model, tmp_path / "q")
    restored = accel.load(tmp_path / "q")
    x, t, cond = original.example_inputs(3, seed=5)
    with torch.no_grad():
        assert torch.equal(model(x, t, cond), restored(x, t, cond))
    layers = [m for m in restored.module.modules() if isinstance(m, QuantLayer) and m.a_bits]
    assert layers and all(m.dynamic_input for m in layers)


def test_the_stage_records_no_calibration_where_nothing_needs_one(monkeypatch, tmp_path):
    monkeypatch.setenv("ACCEL_CACHE_DIR", str(tmp_path))
    model = accel.load(make_tiny_dit(), sampling={"steps": 2})
    result = accel.run_stage(
        "quantize",
        model,
        bits=8,
        act_bits=8,
        dynamic_act=True,
        no_bias_correction=True,
        progress=False,
    )
    assert "calibration" not in result.record and list(tmp_path.iterdir()) == []
    assert result.record["config"]["dynamic_activations"] is True


def test_per_tensor_scales_are_onnx_dynamic_quantize_linear():
    """The same codes, scale and zero point as ONNX Runtime's own DynamicQuantizeLinear."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    x = torch.randn(3, 7, 16) * 4 + 1.5  # an off-centre range
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "scale", "zero"])
    graph = helper.make_graph(
        [node],
        "dql",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [
            helper.make_tensor_value_info("y", TensorProto.UINT8, list(x.shape)),
            helper.make_tensor_value_info("scale", TensorProto.FLOAT, []),
            helper.make_tensor_value_info("zero", TensorProto.UINT8, []),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    codes, scale, zero = session.run(None, {"x": x.numpy()})
    expected = (torch.from_numpy(codes).float() - float(zero)) * float(scale)
    quantized = TensorDynamicQuantizer()(x)
    assert not torch.equal(quantized, x)
    assert torch.allclose(quantized, expected, atol=1e-6 * float(scale))


def test_per_tensor_scales_export_as_one_dynamic_integer_kernel_per_linear_layer(tmp_path):
    original, model = accel.load(make_tiny_dit()), accel.load(make_tiny_dit())
    quantize_(model, PER_TENSOR, tiny_calib(original), progress=False)
    layers = [m for m in model.module.modules() if isinstance(m, QuantLayer) and m.a_bits]
    assert layers and all(
        isinstance(q, TensorDynamicQuantizer) for m in layers for q in m.input_quantizers
    )
    with pytest.raises(AccelError, match="TensorRT does not: export with --target ort-cpu"):
        export_onnx(model, tmp_path / "portable.onnx")
    record = export_onnx(model, tmp_path / "q.onnx", ExportConfig(target="ort-cpu"))
    assert record["parity"]["met"] and record["dynamic_layers"] == len(layers)
    session = ort_session_with_optimized_graph(tmp_path / "q.onnx", tmp_path / "optimized.onnx")
    ops = collections.Counter(n.op_type for n in onnx.load(session).graph.node)
    # every linear layer (block 0's embedding runs twice: DiT calls it again for the final norm)
    assert ops["DynamicQuantizeMatMul"] >= len(layers) - 1 and ops["MatMulIntegerToFloat"] == 0


def test_dynamic_scope_without_dynamic_act_is_refused(capsys, tmp_path, tiny_unet_dir):
    out = str(tmp_path / "q")
    argv = ["quantize", "--model", str(tiny_unet_dir), "--dynamic-scope", "tensor", "--out", out]
    assert "goes with dynamic activations (--dynamic-act)" in refused(capsys, tmp_path, *argv)


@pytest.mark.parametrize(
    "flags,expected",
    [
        (["--act-bits", "0"], "--dynamic-act needs 8-bit activations"),
        (["--act-bits", "4", "--low-rank", "4"], "below 8 bits they are dynamic already"),
    ],
)
def test_dynamic_act_without_8bit_activations_is_refused(
    capsys, tmp_path, tiny_unet_dir, flags, expected
):
    out = str(tmp_path / "q")
    argv = ["quantize", "--model", str(tiny_unet_dir), "--dynamic-act", *flags, "--out", out]
    assert expected in refused(capsys, tmp_path, *argv)


def test_attention_follows_the_kind_of_activation_scales():
    assert W4A8.attention_quantized and not DYNAMIC.attention_quantized
    assert not W8A8.attention_quantized and not QuantConfig(a_bits=None).attention_quantized
    assert replace(DYNAMIC, quantize_attention=True).attention_quantized
    assert replace(W8A8, quantize_attention=True).attention_quantized
    assert not replace(W4A8, quantize_attention=False).attention_quantized
    assert W8A8.needs_calibration and not replace(DYNAMIC, bias_correction=False).needs_calibration
