"""The export's attention processor: diffusers' function, traced with constant shapes."""

import collections

import pytest
import torch
from diffusers.models.attention_processor import Attention

import accel
from accel.export.attention import ExportAttnProcessor, with_export_attention
from accel.export.onnx import export_onnx
from conftest import make_tiny_dit, make_tiny_pixart, make_tiny_text_unet, make_tiny_unet


@pytest.mark.parametrize(
    "make", [make_tiny_unet, make_tiny_text_unet, make_tiny_dit, make_tiny_pixart]
)
def test_export_processor_computes_what_diffusers_does(make):
    """Image self-attention with its group norm (UNet), token self-attention (DiT) and
    cross-attention (text UNet, PixArt): the same outputs as diffusers' own processor."""
    model = accel.load(make())
    x, t, cond = model.example_inputs(2, t=600, seed=1)
    with torch.no_grad():
        expected = model(x, t, cond)
        replaced = with_export_attention(model.module)
        got = model(x, t, cond)
    assert replaced == sum(isinstance(m, Attention) for m in model.modules()) > 0
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_attention_leaves_no_shape_arithmetic_in_the_graph(tmp_path):
    """Each attention's reshapes have constant shapes: no Gather, Unsqueeze or Cast is left of the
    Shape chains diffusers' processor is traced into (16 Gather in the tiny UNet's attentions
    without it). Another batch and resolution: test_export's dynamic height and width test."""
    import onnx

    record = export_onnx(accel.load(make_tiny_unet()), tmp_path / "unet.onnx")
    assert record["export_attention"] == 4  # down, middle, two up
    ops = collections.Counter(
        n.op_type
        for n in onnx.load(str(tmp_path / "unet.onnx")).graph.node
        if "attentions" in n.name
    )
    assert ops["Reshape"] and not ops["Gather"] and not ops["Unsqueeze"] and not ops["Cast"]


def test_masked_attention_goes_to_diffusers_processor():
    attention = Attention(query_dim=16, heads=2, dim_head=8).eval()
    x, mask = torch.randn(2, 6, 16), torch.zeros(2, 6)
    mask[:, -2:] = -1e4
    with torch.no_grad():
        expected = attention(x, attention_mask=mask)
        attention.set_processor(ExportAttnProcessor())
        torch.testing.assert_close(attention(x, attention_mask=mask), expected)
