"""W4A4 in ONNX: smoothing, Hadamard rotation and the low-rank branch in the graph, 4-bit inputs
through blocked QuantizeLinear with scales the graph computes (per token and group), run by ONNX
Runtime on the CPU."""

from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import accel
from accel.core.errors import AccelError
from accel.export.config import ExportConfig
from accel.export.onnx import export_onnx
from accel.quant import quantize_
from accel.quant.config import W4A4, W8A8
from accel.quant.dynamic_qdq import block_quantize
from accel.quant.layers import QuantLayer
from accel.quant.quantizer import DynamicQuantizer
from conftest import make_tiny_dit, make_tiny_unet, tiny_calib

TINY_W4A4 = replace(W4A4, low_rank=4)


def quantized(make, config=TINY_W4A4):
    original, model = accel.load(make()), accel.load(make())
    quantize_(model, config, tiny_calib(original), progress=False)
    return model


def attribute(node, name):
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)


@pytest.mark.parametrize("bits,channel_dim", [(4, -1), (4, 1), (8, -1)])
def test_blocked_quantize_linear_in_onnx_runtime_gives_the_quantizers_codes(bits, channel_dim):
    """ONNX Runtime's blocked QuantizeLinear -> DequantizeLinear, fed the scales accel computes,
    equals the DynamicQuantizer: the same scales, grid, saturation and rounding."""
    import onnxruntime as ort

    quantizer = DynamicQuantizer(bits, 16 if bits == 4 else None, channel_dim)
    x = torch.randn(3, 32, 5) * torch.linspace(0.1, 9, 5)  # tokens of very different ranges
    x = x.transpose(1, 2) if channel_dim == -1 else x[..., None]
    codes, scale, axis, block = block_quantize(x, quantizer)
    dtype = TensorProto.INT4 if bits == 4 else TensorProto.INT8
    nodes = [
        helper.make_node(
            "QuantizeLinear", ["x", "s"], ["q"], axis=axis, block_size=block, output_dtype=dtype
        ),
        helper.make_node("DequantizeLinear", ["q", "s"], ["y"], axis=axis, block_size=block),
    ]
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, list(t.shape))
        for name, t in (("x", x), ("s", scale))
    ]
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))
    model = helper.make_model(
        helper.make_graph(nodes, "g", inputs, [output]), opset_imports=[helper.make_opsetid("", 21)]
    )
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (ours,) = session.run(None, {"x": x.numpy(), "s": scale.numpy()})
    np.testing.assert_array_equal(ours, quantizer(x).numpy())
    assert codes.min() >= -(1 << (bits - 1)) and codes.max() == (1 << (bits - 1)) - 1


@pytest.mark.parametrize("make", [make_tiny_unet, make_tiny_dit])
def test_w4a4_exports_with_its_branch_and_onnx_runtime_computes_the_model(make, tmp_path):
    model = quantized(make)
    w4a4 = [m for m in model.module.modules() if isinstance(m, QuantLayer) and m.a_bits == 4]
    record = export_onnx(model, tmp_path / "m.onnx")
    # the exported form is the model, up to 4-bit codes that land one step apart where the export's
    # attention sums in another order (0 to 0.04 measured, by thread count), and ONNX Runtime
    # computes it; without its branch the model is much further from itself
    assert record["exported_form_vs_model_max_rel"] < 0.1 and record["parity"]["met"]
    x, t, cond = model.example_inputs(3, seed=1)
    with torch.no_grad():
        full = model(x, t, cond)
        for layer in w4a4:
            layer.low_rank.up.zero_()
        without_branch = model(x, t, cond)
    assert (full - without_branch).abs().max() / full.abs().max() > 0.1  # the tiny UNet: 0.16
    assert record["opset"] == 21 and record["low_rank_branches"] == len(w4a4) > 0
    graph = onnx.load(tmp_path / "m.onnx").graph
    int4_inputs = [
        n
        for n in graph.node
        if n.op_type == "QuantizeLinear" and attribute(n, "output_dtype") == TensorProto.INT4
    ]
    # one per input part: a split-shortcut layer quantizes its two halves apart
    assert len(int4_inputs) == sum(2 if m.split else 1 for m in w4a4)
    blocks = {attribute(n, "block_size") for n in int4_inputs}
    assert blocks <= {W4A4.a_group_size, *(m.weight.shape[1] for m in w4a4)}
    branch_params = sum(m.low_rank.up.numel() + m.low_rank.down.numel() for m in w4a4)
    float_params = sum(
        int(np.prod(i.dims)) for i in graph.initializer if i.data_type == TensorProto.FLOAT
    )
    assert float_params >= branch_params


def test_per_token_8bit_scales_export_for_onnx_runtime_not_its_integer_kernels(tmp_path):
    model = quantized(make_tiny_unet, replace(W8A8, dynamic_activations=True))
    record = export_onnx(model, tmp_path / "m.onnx")
    assert record["parity"]["met"] and record["per_token_layers"] > 0
    with pytest.raises(AccelError, match="no integer kernel in ONNX Runtime on CPUs"):
        export_onnx(model, tmp_path / "c.onnx", ExportConfig(target="ort-cpu"))
    assert not (tmp_path / "c.onnx").exists()


def test_w4a4_refuses_the_int8_grid_form_tensorrt_builds_from(tmp_path):
    """TensorRT's engines are built from opset 19 with every weight on the INT8 grid, and take only
    constant scales."""
    model = quantized(make_tiny_dit)
    with pytest.raises(AccelError, match="per-token activation scales are computed in the graph"):
        export_onnx(model, tmp_path / "m.onnx", ExportConfig(int8_grid=True))
    assert list(tmp_path.iterdir()) == []
