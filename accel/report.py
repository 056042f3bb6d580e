"""The report every measuring command writes (report.json, report.md, samples.png): one schema, built here.

``Report`` holds what ``accel.evaluate`` measured: each model with its own sampler (FID, per-step latency, wall
time, denoiser calls and MACs per image, size) and, when two models are compared, the ``Delta`` between them.
A transform adds what only it knows (an ablation, a calibration record, a parity check) through
``Report.add_section``: one named entry in report.json, and optionally a block of markdown in report.md.
"""
from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from accel.core.version import __version__

SCHEMA_VERSION = 2  # 2: per-model sampler, calls and MACs per image; delta.speedup is wall time per image


@dataclass
class Measures:
    """One model as sampled and timed. ``macs`` is one denoiser call on one sample; ``macs_per_image`` a whole
    trajectory (what caching or fewer steps change)."""
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


@dataclass
class Delta:
    """The compressed model against the original: ratios above 1 mean faster, smaller, or worse FID."""
    fid: float | None
    fid_ratio: float | None
    speedup: float | None        # wall time per image, original / compressed: fewer steps count
    step_speedup: float | None   # latency of one denoiser call, original / compressed
    macs_ratio: float | None     # MACs per image, compressed / original
    size_ratio: float | None
    psnr_db_vs_original: float | None  # None where the two sample sets do not share a trajectory

    @classmethod
    def between(cls, original: Measures, compressed: Measures, psnr: float | None) -> "Delta":
        fid_o, fid_c = original.fid, compressed.fid
        return cls(fid=None if fid_o is None or fid_c is None else fid_c - fid_o,
                   fid_ratio=_ratio(fid_c, fid_o),
                   speedup=_ratio(original.sampling_s_per_image, compressed.sampling_s_per_image),
                   step_speedup=_ratio(original.latency_ms_per_step, compressed.latency_ms_per_step),
                   macs_ratio=_ratio(compressed.macs_per_image, original.macs_per_image),
                   size_ratio=_ratio(compressed.size_bytes, original.size_bytes),
                   psnr_db_vs_original=psnr)


def _ratio(numerator, denominator) -> float | None:
    return None if numerator is None or not denominator else numerator / denominator


@dataclass
class Report:
    command: str
    model: str
    seed: int
    device: str
    device_name: str
    sampler: dict                 # the evaluated model's sampler and the batch size (each side has its own)
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
    versions: dict = field(default_factory=lambda: versions())
    schema: int = SCHEMA_VERSION
    sections: dict[str, Any] = field(default_factory=dict)
    markdown_sections: list[str] = field(default_factory=list)

    def add_section(self, name: str, data: Any, markdown: str | None = None) -> None:
        """What a transform adds: ``data`` under report.json's key ``name``, ``markdown`` appended to report.md."""
        if name in {f.name for f in fields(self)} or name in self.sections:
            raise ValueError(f"report section '{name}' would overwrite an existing key")
        self.sections[name] = data
        if markdown:
            self.markdown_sections.append(markdown)

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("sections", "markdown_sections")}
        data = {key: asdict(value) if is_dataclass(value) else value for key, value in data.items()}
        return {**data, **self.sections}

    def markdown(self) -> str:
        return "\n".join([_markdown_summary(self), *self.markdown_sections])


def versions() -> dict:
    import diffusers
    import torch

    return {"accel": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "python": platform.python_version()}


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


def format_value(value, key: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if key in ("params", "macs", "macs_per_image", "size_bytes"):
        for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(value) >= scale:
                return f"{value / scale:.2f}{unit}" + ("B" if key == "size_bytes" else "")
        return f"{value}" + (" B" if key == "size_bytes" else "")
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.4g}"
    return str(value)


# measure -> the delta that compares it
ROWS = {"fid": "fid_ratio", "fid_at_floor_size": None, "latency_ms_per_step": "step_speedup",
        "sampling_s_per_image": "speedup", "calls_per_image": None, "macs_per_image": "macs_ratio", "params": None,
        "macs": None, "size_bytes": "size_ratio"}


def markdown_table(report: Report) -> str:
    original, compressed = asdict(report.original), report.compressed and asdict(report.compressed)
    delta = report.delta and asdict(report.delta)
    lines = ["| | original |" + (" compressed | delta |" if compressed else ""),
             "|---|---|" + ("---|---|" if compressed else "")]
    for key, delta_key in ROWS.items():
        row = f"| {key} | {format_value(original[key], key)} |"
        if compressed:
            compared = f"{delta_key} {format_value(delta[delta_key])}" if delta_key else ""
            row += f" {format_value(compressed[key], key)} | {compared} |"
        lines.append(row)
    if compressed:
        lines.append(f"| psnr_db_vs_original | | {format_value(delta['psnr_db_vs_original'])} | |")
    return "\n".join(lines)


def _sampler_line(report: Report) -> str:
    def described(measures: Measures) -> str:
        spec = measures.sampler
        return f"{spec['name']} {spec['steps']} steps" + (f" (eta {spec['eta']:g})" if spec.get("eta") else "")

    models = (f"original {described(report.original)}, compressed {described(report.compressed)}"
              if report.compressed else described(report.original))
    return f"- Sampler: {models}; batch {report.sampler['batch_size']}, seed {report.seed}"


def _markdown_summary(report: Report) -> str:
    fid_line = (f"FID: {report.fid_features} features, {report.fid_samples} samples vs "
                f"{report.fid_reference_samples} real images; floor (two disjoint halves of the real set, "
                f"{report.fid_floor_samples} each): {format_value(report.fid_floor)}; compare it with "
                f"fid_at_floor_size, the first {report.fid_floor_samples} samples vs the same real half"
                if report.fid_features else f"FID: not computed ({report.fid_unavailable})")
    parts = [
        f"# accel {report.command}: {report.model}",
        "",
        markdown_table(report),
        "",
        _sampler_line(report),
        f"- {fid_line}",
        f"- Latency: median of {report.latency['repeats']} denoiser calls at batch {report.latency['batch_size']} "
        f"after warm-up, on {report.device} ({report.device_name}); speedup is wall time per image "
        "(sampling both models, batches interleaved), step_speedup one denoiser call",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in report.versions.items()),
    ]
    parts += [f"- Note: {note}" for note in report.notes]
    return "\n".join(parts) + "\n"


def sample_grid(images_by_model: list[np.ndarray], columns: int = 8, scale: int = 4, pad: int = 1):
    """A PIL image: each model's first ``columns**2`` samples as a grid (grey lines between cells), grids
    side by side with a white gap."""
    from PIL import Image

    grids = []
    for images in images_by_model:
        count = min(len(images), columns * columns)
        channels, height, width = images.shape[1:]
        rows = -(-count // columns)
        cell_h, cell_w = height + pad, width + pad
        grid = np.full((rows * cell_h - pad, columns * cell_w - pad, channels), 128, dtype=np.uint8)
        for i in range(count):
            r, c = divmod(i, columns)
            grid[r * cell_h:r * cell_h + height, c * cell_w:c * cell_w + width] = images[i].transpose(1, 2, 0)
        grids.append(grid)
    gap = np.full((grids[0].shape[0], 4, grids[0].shape[2]), 255, dtype=np.uint8)
    joined = np.concatenate([part for grid in grids for part in (grid, gap)][:-1], axis=1)
    picture = Image.fromarray(joined.squeeze(-1) if joined.shape[-1] == 1 else joined)
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)


def write_report(folder: Path, report: Report, images_by_model: list[np.ndarray]) -> None:
    """report.json, report.md and samples.png into ``folder`` (a staging folder of ``atomic_dir``)."""
    (folder / "report.json").write_text(to_json(report.to_dict()))
    (folder / "report.md").write_text(report.markdown())
    sample_grid(images_by_model).save(folder / "samples.png")


def quality_speed_plot(points: list[dict], path: Path, x_label: str, title: str) -> None:
    """A PNG at ``path``: FID ratio against ``x`` (both log scale), one labelled point per dict of ``points``
    (``label``, ``x``, ``y``; an optional ``group`` colours points alike)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    figure, axes = plt.subplots(figsize=(8, 5.5), dpi=110)
    groups = list(dict.fromkeys(point.get("group", "") for point in points))
    for group in groups:
        members = [p for p in points if p.get("group", "") == group]
        axes.scatter([p["x"] for p in members], [p["y"] for p in members], label=group or None, s=28)
    for index, point in enumerate(points):  # labels alternate above and below: neighbours often sit close
        axes.annotate(point["label"], (point["x"], point["y"]), textcoords="offset points",
                      xytext=(4, 4 if index % 2 else -10), fontsize=7)
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    # minor ticks labelled at 2x and 5x a power of ten only where the axis spans decades: all of them crowd it
    sparse = FuncFormatter(lambda value, _: f"{value:g}" if f"{value:e}"[0] in "25" else "")
    for axis, scale, key in ((axes.xaxis, axes.set_xscale, "x"), (axes.yaxis, axes.set_yscale, "y")):
        values = [point[key] for point in points]
        scale("log")
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(plain if max(values) < 10 * min(values) else sparse)  # within a decade: all
    axes.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    axes.set_xlabel(x_label)
    axes.set_ylabel("FID ratio to the original (log scale; 1 = unchanged)")
    axes.set_title(title, fontsize=10)
    if any(groups):
        axes.legend(fontsize=8)
    axes.grid(True, which="both", linewidth=0.3)
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)
