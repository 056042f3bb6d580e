"""The export stage (``accel export``, a recipe's ``export`` stage): the model as an ONNX graph
(checked with ONNX Runtime) or a TensorRT engine, loaded back as a model that runs in that
runtime."""

from __future__ import annotations

from accel.core import stages
from accel.core.errors import ConfigError
from accel.core.stages import Context, Key, Settings, StageResult
from accel.export.config import FORMATS, ExportConfig, ExportTarget


def run(model, settings: Settings, context: Context) -> StageResult:
    from accel.models.loading import load

    if context.out is None:
        raise ConfigError("export", "out", "is needed: the file the export stage writes")
    write = _writer(settings["target"].format)
    record = write(model, context.out, settings["export"], context.overwrite)
    return StageResult(load(context.out), record, context.out)


def _writer(file_format: str):
    if file_format == "onnx":
        from accel.export.onnx import export_onnx

        return export_onnx
    from accel.export.trt import export_trt

    return export_trt


def _check(settings: Settings) -> None:
    """The file's format is given, and a TensorRT engine needs TensorRT: refused before any stage of
    a chain runs, not after its training."""
    if settings["target"].format is None:
        raise settings["target"].invalid("format", f"is needed: {' or '.join(FORMATS)}")
    if settings["target"].format == "trt":
        from accel.export.trt import check_trt_target, tensorrt_module

        check_trt_target(settings["export"])
        tensorrt_module()


EXPORT_STAGE = stages.register(
    stages.Stage(
        name="export",
        roles={"target": ExportTarget(), "export": ExportConfig()},
        run=run,
        keys={"format": Key("target", "format")},
        open_roles=("export",),
        output_file=lambda settings: "model" + FORMATS[settings["target"].format],
        check=_check,
    )
)
