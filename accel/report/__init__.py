"""The report every measuring command writes: its schema (``schema``), its markdown (``markdown``:
the one number formatter) and its pictures (``pictures``: captioned sample grids, the
quality-against-speed plot)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from accel.report.markdown import format_value, table
from accel.report.pictures import pareto_front, quality_speed_plot, sample_grid
from accel.report.schema import SCHEMA_VERSION, Delta, Measures, Report, to_json

__all__ = [
    "SCHEMA_VERSION",
    "Delta",
    "Measures",
    "Report",
    "format_value",
    "pareto_front",
    "quality_speed_plot",
    "sample_grid",
    "table",
    "to_json",
    "write_report",
]


def write_report(
    folder: Path,
    report: Report,
    images_by_model: list[np.ndarray],
    captions: list[str] | None = None,
) -> None:
    """report.json, report.md and samples.png into ``folder`` (a staging folder of ``atomic_dir``),
    the samples captioned with ``captions`` or with what they are (the original, then the model
    ``report.command`` made)."""
    (folder / "report.json").write_text(to_json(report.to_dict()))
    (folder / "report.md").write_text(report.to_markdown())
    sample_grid(images_by_model, captions or default_captions(report, len(images_by_model))).save(
        folder / "samples.png"
    )


def default_captions(report: Report, count: int) -> list[str]:
    if count == 1:
        return [report.model]
    if report.command == "eval":
        return ["baseline", report.model]
    return ["original", f"after accel {report.command}"]
