"""The report every measuring command writes (report.json, report.md, samples.png): one schema,
defined here.

``Report`` holds what ``accel.evaluate`` measured: each model with its own sampler (FID, per-step
latency, wall time, denoiser calls and MACs per image, size) and, when two models are compared, the
``Delta`` between them. A transform adds what only it knows (an ablation, a calibration record, a
parity check) through ``Report.add_section``: one named entry in report.json, and optionally a block
of markdown in report.md.
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

from accel.core.version import __version__
from accel.report import markdown

# 2: per-model sampler, calls and MACs per image; delta.speedup is wall time per image
SCHEMA_VERSION = 2


@dataclass
class Measures:
    """One model as sampled and timed. ``macs`` is one denoiser call on one sample;
    ``macs_per_image`` a whole trajectory (what caching or fewer steps change)."""

    fid: float | None
    fid_at_floor_size: float | None
    latency_ms_per_step: float
    sampling_s_per_image: float
    calls_per_image: int
    macs_per_image: int
    params: int
    macs: int
    size_bytes: int
    sampler: dict
    runtime: str = "PyTorch"  # or the runtime an exported file ran in
    # class-conditional models: the share of samples the FID classifier reads as their label
    class_accuracy: float | None = None
    class_accuracy_by_class: list | None = None


@dataclass
class Delta:
    """The compressed model against the original: ratios above 1 mean faster, smaller, or worse
    FID."""

    fid: float | None
    fid_ratio: float | None
    speedup: float | None  # wall time per image, original / compressed: fewer steps count
    step_speedup: float | None  # latency of one denoiser call, original / compressed
    macs_ratio: float | None  # MACs per image, compressed / original
    size_ratio: float | None
    psnr_db_vs_original: float | None  # None where the two sample sets do not share a trajectory
    # compressed - original, in percentage points (class-conditional models)
    class_accuracy_points: float | None = None
    # LPIPS-like: mean distance of paired samples in the FID network's unit-normalised features
    feature_distance_vs_original: float | None = None

    @classmethod
    def between(
        cls,
        original: Measures,
        compressed: Measures,
        psnr: float | None,
        feature_distance: float | None = None,
    ) -> Delta:
        fid_o, fid_c = original.fid, compressed.fid
        return cls(
            fid=None if fid_o is None or fid_c is None else fid_c - fid_o,
            fid_ratio=_ratio(fid_c, fid_o),
            speedup=_ratio(original.sampling_s_per_image, compressed.sampling_s_per_image),
            step_speedup=_ratio(original.latency_ms_per_step, compressed.latency_ms_per_step),
            macs_ratio=_ratio(compressed.macs_per_image, original.macs_per_image),
            size_ratio=_ratio(compressed.size_bytes, original.size_bytes),
            psnr_db_vs_original=psnr,
            class_accuracy_points=(
                None
                if original.class_accuracy is None or compressed.class_accuracy is None
                else 100 * (compressed.class_accuracy - original.class_accuracy)
            ),
            feature_distance_vs_original=feature_distance,
        )


def _ratio(numerator, denominator) -> float | None:
    return None if numerator is None or not denominator else numerator / denominator


@dataclass
class Report:
    command: str
    model: str
    seed: int
    device: str
    device_name: str
    sampler: dict  # the evaluated model's sampler and the batch size (each side has its own)
    fid_features: str | None
    fid_samples: int
    fid_reference_samples: int | None
    fid_floor: float | None
    fid_floor_samples: int | None
    fid_unavailable: str | None
    latency: dict
    original: Measures
    compressed: Measures | None
    delta: Delta | None
    config: dict
    eval_config: dict
    notes: list[str]
    # what each runtime ran on: torch, ONNX Runtime
    threads: dict = field(default_factory=lambda: threads())
    versions: dict = field(default_factory=lambda: versions())
    schema: int = SCHEMA_VERSION
    sections: dict[str, Any] = field(default_factory=dict)
    markdown_sections: list[str] = field(default_factory=list)

    def add_section(self, name: str, data: Any, markdown: str | None = None) -> None:
        """What a transform adds: ``data`` under report.json's key ``name``, ``markdown`` appended
        to report.md."""
        if name in {f.name for f in fields(self)} or name in self.sections:
            raise ValueError(f"report section '{name}' would overwrite an existing key")
        self.sections[name] = data
        if markdown:
            self.markdown_sections.append(markdown)

    def to_dict(self) -> dict:
        data = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("sections", "markdown_sections")
        }
        data = {key: asdict(value) if is_dataclass(value) else value for key, value in data.items()}
        return {**data, **self.sections}

    def to_markdown(self) -> str:
        return "\n".join([markdown.summary(self), *self.markdown_sections])


def threads() -> dict:
    """The threads each runtime computes with: torch's, and ONNX Runtime's, which accel's sessions
    set to torch's (accel/export/runtime.py), so both runtimes use the same cores."""
    import torch

    return {"torch": torch.get_num_threads(), "onnxruntime": torch.get_num_threads()}


def versions() -> dict:
    import diffusers
    import torch

    return {
        "accel": __version__,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
    }


def _json_safe(value):
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def to_json(data: dict) -> str:
    return json.dumps(_json_safe(data), indent=2) + "\n"
