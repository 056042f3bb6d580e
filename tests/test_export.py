"""ONNX export: float and Q/DQ graphs pass the checker, ONNX Runtime matches PyTorch, exported files
sample like any model, and what cannot be exported fails in one line with nothing written."""

import importlib.util
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import accel
from accel.core.errors import AccelError
from accel.export.onnx import export_onnx
from accel.export.ort_session import ort_session
from accel.export.parity import TOLERANCE
from conftest import make_tiny_dit, make_tiny_text_unet, make_tiny_unet, tiny_calib
from conftest import run_cli as run

ExportConfig = accel.ExportConfig
# How far the exported form of a quantized model (attention in float) may be from the fake-quantized
# model (8-bit quantized attention, W4A8's default), as max |difference| / max |eps|: measured
# 0.033-0.050 on the tiny random UNets; an export bug (a wrong scale, axis or layout) is of order 1.
EXPORTED_FORM_BOUND = 0.1

# The op types these graphs use, each listed as supported ("Y") in onnx-tensorrt's docs/operators.md
# for TensorRT 10.0 (commit 96e7811, June 2024; checked line by line). A new op type in an exported
# graph must be checked against that list before it is added here. Restrictions there that apply:
# Q/DQ zero points must be 0 (they are), and TensorRT 10.0 parses opsets 9 to 20 (`accel export trt`
# writes opset 19).
TENSORRT_OPS = {
    "Add",
    "Cast",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "Cos",
    "DequantizeLinear",
    "Div",
    "Equal",
    "Erf",
    "Expand",
    "Gather",
    "Gemm",
    "InstanceNormalization",
    "LayerNormalization",
    "MatMul",
    "Mul",
    "Pow",
    "QuantizeLinear",
    "ReduceMean",
    "Reshape",
    "Resize",
    "Shape",
    "Sigmoid",
    "Sin",
    "Slice",
    "Softmax",
    "Split",
    "Sqrt",
    "Sub",
    "Tanh",
    "Transpose",
    "Unsqueeze",
    "Where",
    "Range",
    "Exp",
    "Neg",
    "Squeeze",
    "Mod",
    "Identity",
    "Flatten",
    "Less",
    "Not",
    "If",
    "Greater",
    "Max",
    "Min",
    "Clip",
    "Abs",
    "Floor",
    "ScatterND",
    "Einsum",
    "Trilu",
    "CumSum",
    "Gelu",
    "HardSigmoid",
}


def _quantized(config, make=make_tiny_unet):
    model = accel.load(make())
    accel.quantize_(model, config, tiny_calib(accel.load(make())), progress=False)
    return model


@pytest.mark.parametrize(
    "make", [make_tiny_unet, make_tiny_text_unet, make_tiny_dit], ids=["unet", "text", "dit"]
)
@pytest.mark.slow
def test_float_export_matches_pytorch_and_reloads(tmp_path, make):
    model = accel.load(make())
    record = export_onnx(model, tmp_path / "m.onnx")
    assert record["form"] == "float" and record["exported_form_vs_model_max_rel"] == 0
    assert (
        record["parity"]["max_rel"] < TOLERANCE["float", "fp32"]
        and set(record["ops"]) <= TENSORRT_OPS
    )
    exported = accel.load(tmp_path / "m.onnx")
    assert exported.cond_kind == model.cond_kind and exported.sample_shape == model.sample_shape
    x, t, cond = model.example_inputs(3, t=700, seed=5)
    with torch.no_grad():
        expected = model(x, t, cond)
    torch.testing.assert_close(exported(x, t, cond), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("config", [accel.W8A8, accel.W4A8], ids=["w8a8", "w4a8"])
@pytest.mark.slow
def test_quantized_export_is_qdq_with_int8_weights(tmp_path, config):
    model = _quantized(config)
    record = export_onnx(model, tmp_path / "q.onnx", ExportConfig(int8_grid=True))
    assert record["form"] == "qdq" and record["opset"] == 19 and record["int4_layers"] == 0
    # W8A8 keeps attention in float: the model is its exported form
    form_bound = EXPORTED_FORM_BOUND if config.attention_quantized else 1e-4
    assert record["exported_form_vs_model_max_rel"] < form_bound
    assert set(record["ops"]) <= TENSORRT_OPS
    assert record["qdq_layers"] > 0 and record["split_layers"] > 0
    assert (record["float_attention"] > 0) == config.attention_quantized
    graph = onnx.load(tmp_path / "q.onnx").graph
    bits = {
        name: layer.w_bits
        for name, layer in model.module.named_modules()
        if hasattr(layer, "w_bits")
    }
    codes = {
        i.name: numpy_helper.to_array(i) for i in graph.initializer if ".export_codes_" in i.name
    }
    assert len(codes) == len(bits) + record["split_layers"] and all(
        c.dtype == np.int8 for c in codes.values()
    )
    for name, values in codes.items():
        layer_bits = bits[name.split(".export_codes_")[0].removeprefix("denoiser.module.")]
        assert values.min() >= -(1 << (layer_bits - 1)) and values.max() < 1 << (layer_bits - 1)
    # 4-bit codes travel on the INT8 grid
    assert (config.w_bits == 4) == any(b == 4 for b in bits.values())
    scales = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    # every quantized input (not the first layer's or, at W8A8, the time embedding's: float)
    assert len(scales) >= sum(1 for layer in model.module.modules() if getattr(layer, "a_bits", 0))


@pytest.mark.parametrize("group_size", [None, 8], ids=["per-channel", "groups-of-8"])
@pytest.mark.slow
def test_4bit_linear_layers_export_as_int4_blocked_dequantize(tmp_path, group_size):
    model = _quantized(
        accel.QuantConfig(w_bits=4, a_bits=8, group_size=group_size), make_tiny_text_unet
    )
    record = export_onnx(model, tmp_path / "q.onnx")
    linear = {
        name: m
        for name, m in model.module.named_modules()
        if getattr(m, "w_bits", 0) == 4 and not m.is_conv
    }
    assert record["opset"] == 21 and record["int4_layers"] == len(linear) > 0
    assert (
        record["exported_form_vs_model_max_rel"] < EXPORTED_FORM_BOUND
        and set(record["ops"]) <= TENSORRT_OPS
    )
    graph = onnx.load(tmp_path / "q.onnx").graph
    initializers = {i.name: i for i in graph.initializer}
    blocked = [
        n
        for n in graph.node
        if n.op_type == "DequantizeLinear"
        and n.input[0] in initializers
        and initializers[n.input[0]].data_type == onnx.TensorProto.INT4
    ]
    assert len(blocked) == len(linear)
    for node in blocked:
        layer = linear[node.input[0].split(".export_codes_")[0].removeprefix("denoiser.module.")]
        codes = numpy_helper.to_array(initializers[node.input[0]]).astype(np.int8)
        attributes = {a.name: a.i for a in node.attribute}
        assert (
            codes.shape == tuple(layer.weight.shape[::-1])
            and codes.min() >= -8
            and codes.max() <= 7
        )
        assert attributes == {"axis": 0, "block_size": group_size or layer.weight.shape[1]}
        assert any(
            n.op_type == "MatMul" and node.output[0] in n.input for n in graph.node
        )  # no transpose between
    int8_layers = {
        i.name.split(".export_codes_")[0].removeprefix("denoiser.module.")
        for i in graph.initializer
        if ".export_codes_" in i.name and i.data_type == onnx.TensorProto.INT8
    }
    # convolutions and 8-bit layers stay on the INT8 grid
    assert int8_layers and not int8_layers & set(linear)


@pytest.mark.slow
def test_int4_needs_opset_21_or_the_int8_grid(tmp_path):
    model = _quantized(accel.W4A8, make_tiny_text_unet)
    with pytest.raises(AccelError, match="ExportConfig.opset 19 is too low for INT4.*`int8_grid`"):
        export_onnx(model, tmp_path / "q.onnx", ExportConfig(opset=19))
    grouped = _quantized(accel.QuantConfig(w_bits=4, a_bits=8, group_size=8), make_tiny_text_unet)
    with pytest.raises(AccelError, match="per-group"):
        export_onnx(grouped, tmp_path / "q.onnx", ExportConfig(int8_grid=True))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("quantize", [False, True], ids=["float", "w8a8"])
@pytest.mark.slow
def test_fp16_export_has_fp16_io_and_stays_close_to_the_fp32_model(tmp_path, quantize):
    model = _quantized(accel.W8A8) if quantize else accel.load(make_tiny_unet())
    record = export_onnx(model, tmp_path / "h.onnx", ExportConfig(dtype="fp16"))
    assert record["dtype"] == "fp16" and set(record["ops"]) <= TENSORRT_OPS
    assert record["parity"]["max_rel"] > 1e-6  # really computed in fp16, not an fp32 graph
    graph = onnx.load(tmp_path / "h.onnx").graph
    float16 = onnx.TensorProto.FLOAT16
    assert (
        graph.input[0].type.tensor_type.elem_type
        == float16
        == graph.output[0].type.tensor_type.elem_type
    )
    exported = accel.load(tmp_path / "h.onnx")
    x, t, cond = model.example_inputs(2, t=300, seed=3)
    with torch.no_grad():
        expected = model(x, t, cond)
    eps = exported(x, t, cond)
    # a Q/DQ graph may put an activation one INT8 step apart and the step propagates: the export's
    # own gate for it (parity.py)
    bound = TOLERANCE["qdq", "fp16"] if quantize else 3e-2
    assert (
        eps.dtype == torch.float32 and (eps - expected).abs().max() <= bound * expected.abs().max()
    )


def test_dynamic_height_and_width_run_at_another_resolution(tmp_path):
    model = accel.load(make_tiny_unet())
    export_onnx(model, tmp_path / "m.onnx")
    x, t, _ = model.example_inputs(2, t=400, seed=7)
    # the model was traced at 8 x 8
    x = torch.randn(2, 3, 16, 24, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = model(x, t)
    got = ort_session(tmp_path / "m.onnx").run(
        ["eps"], {"sample": x.numpy(), "timestep": t.numpy()}
    )[0]
    np.testing.assert_allclose(
        got, expected.numpy(), atol=1e-4 * float(expected.abs().max()), rtol=0
    )


@pytest.mark.slow
def test_split_shortcut_exports_as_two_convolutions(tmp_path):
    model = _quantized(accel.W8A8)
    plain = export_onnx(accel.load(make_tiny_unet()), tmp_path / "f.onnx")
    record = export_onnx(model, tmp_path / "q.onnx")
    assert record["ops"]["Conv"] == plain["ops"]["Conv"] + record["split_layers"]


@pytest.mark.slow
def test_export_leaves_the_quantized_model_unchanged(tmp_path):
    model = _quantized(accel.W4A8)
    x, t, cond = model.example_inputs(2)
    with torch.no_grad():
        before = model(x, t, cond)
        export_onnx(model, tmp_path / "q.onnx")
        assert torch.equal(model(x, t, cond), before)
    assert not any(
        name.startswith("export_") or ".export_" in name for name, _ in model.named_buffers()
    )


def test_export_does_not_cast_or_move_the_callers_model(tmp_path):
    model = accel.load(make_tiny_unet()).half()
    export_onnx(model, tmp_path / "m.onnx")
    assert all(p.dtype == torch.float16 for p in model.parameters())


def test_the_parity_gate_refuses_a_graph_that_computes_something_else(tmp_path, monkeypatch):
    """A graph 1% off PyTorch (what a wrong scale would do) fails the gate, and nothing is
    written."""
    from accel.export.steps import EpsGraph

    traced = EpsGraph.forward
    monkeypatch.setattr(EpsGraph, "forward", lambda self, *args: 1.01 * traced(self, *args))
    with pytest.raises(
        AccelError,
        match="ONNX Runtime disagrees with PyTorch: max relative error 1.00e-02 > 0.0001",
    ):
        export_onnx(accel.load(make_tiny_unet()), tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


def test_an_exported_model_is_not_exported_again(tmp_path):
    export_onnx(accel.load(make_tiny_unet()), tmp_path / "m.onnx")
    with pytest.raises(AccelError, match="cannot export this model: it went through export"):
        export_onnx(accel.load(tmp_path / "m.onnx"), tmp_path / "again.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


@pytest.mark.slow
def test_asymmetric_quantization_is_refused_with_nothing_written(tmp_path):
    model = _quantized(accel.QuantConfig(w_bits=8, a_bits=8, a_symmetric=False))
    with pytest.raises(AccelError, match="asymmetric"):
        export_onnx(model, tmp_path / "q.onnx")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_export_cli_then_eval_through_onnx_runtime(tmp_path, tiny_unet_dir, capsys):
    out = tmp_path / "m.onnx"
    code, stdout, _ = run(
        capsys, "export", "onnx", "--model", str(tiny_unet_dir), "--out", str(out), "--json"
    )
    assert code == 0 and json.loads(stdout)["parity"]["max_rel"] < TOLERANCE["float", "fp32"]
    code, stdout, _ = run(capsys, "eval", "--model", str(out), "--n", "8", "--steps", "3", "--json")
    # against the model it was exported from, found from the file's metadata
    report = json.loads(stdout)
    assert code == 0 and report["compressed"]["latency_ms_per_step"] > 0
    assert float(report["delta"]["psnr_db_vs_original"]) > 60
    assert report["compressed"]["params"] == sum(
        p.numel() for p in accel.load(tiny_unet_dir).parameters()
    )
    assert any("ONNX Runtime" in note for note in report["notes"])
    moved = tmp_path / "moved"
    tiny_unet_dir.rename(moved)
    code, stdout, _ = run(capsys, "eval", "--model", str(out), "--n", "8", "--steps", "3", "--json")
    report = json.loads(stdout)
    assert (
        code == 0
        and report["compressed"] is None
        and any("--baseline" in note for note in report["notes"])
    )
    code, stdout, _ = run(
        capsys,
        "eval",
        "--model",
        str(out),
        "--baseline",
        str(moved),
        "--n",
        "8",
        "--steps",
        "3",
        "--baseline-steps",
        "3",
        "--json",
    )
    assert code == 0 and float(json.loads(stdout)["delta"]["psnr_db_vs_original"]) > 60
    spec = accel.SamplingSpec(steps=3)
    through_ort = accel.sample(accel.load(out), 4, seed=1, spec=spec, progress=False).images
    through_torch = accel.sample(accel.load(moved), 4, seed=1, spec=spec, progress=False).images
    torch.testing.assert_close(through_ort, through_torch, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["onnx", "--out", "missing-dir/m.onnx"], "does not exist"),
        (["onnx", "--out", "m.onnx", "--opset", "11"], "too low"),
        (["onnx", "--out", "m.onnx", "--opset", "22"], "too high"),
        (["onnx", "--out", "m.txt"], "give a .onnx file"),
        (["onnx", "--out", "m.onnx", "--dtype", "bf16"], "invalid choice"),
        (["onnx", "--out", "m.onnx", "--device", "cuda"], "unrecognized arguments: --device"),
        (["onnx", "--out", "m.onnx", "--seed", "3"], "unrecognized arguments: --seed"),
    ],
)
def test_export_cli_bad_input(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "export", *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None,
    reason="checks the error for a missing TensorRT; it is installed here",
)
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
    torch.testing.assert_close(
        engine(x.cuda(), t.cuda(), cond).cpu(), expected, atol=1e-3, rtol=1e-3
    )
