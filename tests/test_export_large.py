"""Graphs over protobuf's 2 GB (Stable Diffusion's UNet in float32 is 3.4 GB): their weights go to
one data file beside the .onnx, the parity gate runs on the pair, and a disk without room for them
is refused before anything is written. The limit is lowered here so a tiny model takes that path."""

from collections import namedtuple

import numpy as np
import pytest
import torch

import accel
import accel.export.graph
import accel.export.onnx
from accel.core.errors import AccelError
from accel.export.onnx import export_onnx
from conftest import make_tiny_text_unet


@pytest.fixture
def small_limit(monkeypatch):
    monkeypatch.setattr(accel.export.graph, "EXTERNAL_DATA_BYTES", 10_000)


def test_a_graph_over_the_limit_keeps_its_weights_in_one_data_file_and_runs(tmp_path, small_limit):
    model = accel.load(make_tiny_text_unet())
    record = export_onnx(model, tmp_path / "unet.onnx")
    assert record["external_data"] == ["unet.onnx.data"]
    assert record["parity"]["met"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unet.onnx", "unet.onnx.data"]
    data = (tmp_path / "unet.onnx.data").stat().st_size
    weights = sum(p.numel() * 4 for p in model.parameters())
    assert data > 0.8 * weights  # all but the tensors under 1 KB, which stay in the graph
    assert record["bytes"] == data + (tmp_path / "unet.onnx").stat().st_size
    exported = accel.load(tmp_path / "unet.onnx")  # ONNX Runtime reads the data file beside it
    x, t, cond = model.example_inputs(2)
    with torch.no_grad():
        expected = model(x, t, cond).numpy()
    got = exported(x, t, cond).numpy()
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


def test_a_disk_without_room_for_the_weights_is_refused_before_anything_is_written(
    tmp_path, monkeypatch
):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(accel.export.graph.shutil, "disk_usage", lambda _: usage(1, 1, 1000))
    with pytest.raises(AccelError, match=r"needs about .* GB of free disk .* GB free"):
        export_onnx(accel.load(make_tiny_text_unet()), tmp_path / "unet.onnx")
    assert list(tmp_path.iterdir()) == []
