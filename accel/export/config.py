"""ExportConfig: the graph ``accel export`` writes (opset, precision, INT4 or the INT8 grid)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from accel.core.config import Config, one_of
from accel.core.registry import EXPORT_TARGETS

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
    # None: 19, or 21 when 4-bit or per-group linear layers go out blocked (INT4), or activation
    # scales are per token (W4A4)
    opset: int | None = None
    dtype: str = one_of("fp32", tuple(DTYPES))  # inputs, weights and eps
    # 4-bit linear weights on the INT8 grid (as convolutions are) instead of INT4
    int8_grid: bool = False
    # the runtime a quantized graph is shaped for: tensorrt (portable symmetric INT8 Q/DQ, which
    # every runtime runs) or ort-cpu (ONNX Runtime's fused CPU integer kernels)
    target: str = one_of("tensorrt", EXPORT_TARGETS)
    # trajectories of the model's own sampler whose layer outputs set the ort-cpu form's output
    # scales
    range_samples: int = 8

    @property
    def weights_on_int8_grid(self) -> bool:
        """No INT4 or blocked weights: asked for, or ort-cpu (its integer kernels take int8)."""
        return self.int8_grid or self.target == "ort-cpu"

    def validate(self) -> None:
        if self.target == "ort-cpu" and self.dtype != "fp32":
            raise self.invalid(
                "dtype",
                f"{self.dtype} with target ort-cpu: ONNX Runtime's CPU integer kernels sit between "
                "float32 ops",
            )
        if self.range_samples < 1:
            raise self.invalid("range_samples", f"must be at least 1, got {self.range_samples}")
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
