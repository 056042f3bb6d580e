"""Exported models: ONNX (float or Q/DQ) checked against PyTorch with ONNX Runtime, TensorRT
engines, and both as denoisers (``accel export onnx|trt``, ``accel eval --model x.onnx``).
Registered as the ``export`` transform (it may follow any other, and nothing follows it: its product
is a file) and as the loader of ``.onnx`` and ``.plan`` files, and as the ``export`` stage."""

from pathlib import Path

from accel.core import registry
from accel.export.config import EXPORT, ExportConfig, ExportTarget
from accel.export.stage import EXPORT_STAGE

registry.register(
    registry.Transform(name=EXPORT, config=ExportConfig, apply=None, may_follow=registry.ANY)
)


def _load_onnx(path: Path, name: str):
    from accel.export.runtime import load_onnx

    return load_onnx(path, name)


def _load_engine(path: Path, name: str):
    from accel.export.trt import load_engine

    return load_engine(path, name)


registry.register_file_loader(".onnx", _load_onnx)
registry.register_file_loader(".plan", _load_engine)

__all__ = ["EXPORT_STAGE", "ExportConfig", "ExportTarget"]
