"""ExportConfig: the graph ``accel export`` writes (opset, precision, INT4 or the INT8 grid)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from accel.core.config import Config, one_of

EXPORT = "export"  # the registry's name for this transform
# the ONNX metadata entry (and the engine's JSON) with the model's sampling metadata
METADATA_KEY = "accel"
# a cached model's cached-step graph: names the full-step file that runs it
CACHED_STEP_KEY = "accel_cached_step"

# what NVIDIA's diffusion demo exports for TensorRT 10, whose parser takes opsets 9-20
DEFAULT_OPSET = 19
BLOCKED_OPSET = 21  # INT4 and blocked scales in QuantizeLinear/DequantizeLinear
MIN_OPSET = 13  # per-channel DequantizeLinear (axis) appeared in opset 13
MAX_OPSET = 21
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


@dataclass(frozen=True)
class ExportConfig(Config):
    # None: 19, or 21 when 4-bit or per-group linear layers go out blocked (INT4)
    opset: int | None = None
    dtype: str = one_of("fp32", tuple(DTYPES))  # inputs, weights and eps
    # 4-bit linear weights on the INT8 grid (as convolutions are) instead of INT4
    int8_grid: bool = False

    def validate(self) -> None:
        if self.opset is not None and self.opset < MIN_OPSET:
            raise self.invalid(
                "opset",
                f"{self.opset} is too low: per-channel DequantizeLinear needs opset "
                f"{MIN_OPSET} or newer",
            )
        if self.opset is not None and self.opset > MAX_OPSET:
            raise self.invalid(
                "opset",
                f"{self.opset} is too high: this exporter writes opsets {MIN_OPSET} to {MAX_OPSET}",
            )


FORMATS = {"onnx": ".onnx", "trt": ".plan"}  # what the export stage writes -> the file's suffix


@dataclass(frozen=True)
class ExportTarget(Config):
    """The file the export stage writes: an ONNX graph, or a TensorRT engine built from one."""

    # no default: a recipe says which (the stage checks)
    format: str | None = one_of(None, tuple(FORMATS))
