"""The report as markdown: one formatter for every number accel prints, tables, and the report's
summary (its functions take a ``Report`` of accel.report.schema, which builds its markdown here)."""

from __future__ import annotations

import math
from dataclasses import asdict

COUNTS = ("params", "macs", "macs_per_image", "size_bytes")  # shown with a unit: 2.50M, 1.22MB


def format_value(value, key: str = "") -> str:
    """The one way accel writes a number: 4 significant digits, counts with a unit, ``-`` for none,
    ``x`` after a speedup."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if key in COUNTS:
        for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(value) >= scale:
                return f"{value / scale:.2f}{unit}" + ("B" if key == "size_bytes" else "")
        return f"{value}" + (" B" if key == "size_bytes" else "")
    if isinstance(value, float):
        text = "inf" if math.isinf(value) else f"{value:.4g}"
        return text + "x" if "speedup" in key else text
    return str(value)


def table(columns: dict[str, str], rows: list[dict]) -> str:
    """A markdown table: ``columns`` maps each row key to its header; cells through
    ``format_value``."""
    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    lines += [
        "| " + " | ".join(format_value(row.get(key), key) for key in columns) + " |" for row in rows
    ]
    return "\n".join(lines)


# measure -> the delta that compares it
ROWS = {
    "fid": "fid_ratio",
    "fid_at_floor_size": None,
    "class_accuracy": "class_accuracy_points",
    "latency_ms_per_step": "step_speedup",
    "sampling_s_per_image": "speedup",
    "calls_per_image": None,
    "macs_per_image": "macs_ratio",
    "params": None,
    "macs": None,
    "size_bytes": "size_ratio",
}


def measures_table(report) -> str:
    original, compressed = asdict(report.original), report.compressed and asdict(report.compressed)
    delta = report.delta and asdict(report.delta)
    lines = [
        "| | original |" + (" compressed | delta |" if compressed else ""),
        "|---|---|" + ("---|---|" if compressed else ""),
    ]
    for key, delta_key in ROWS.items():
        if key == "class_accuracy" and original[key] is None:
            continue  # an unconditional model
        row = f"| {key} | {format_value(original[key], key)} |"
        if compressed:
            compared = (
                f"{delta_key} {format_value(delta[delta_key], delta_key)}" if delta_key else ""
            )
            row += f" {format_value(compressed[key], key)} | {compared} |"
        lines.append(row)
    if compressed:
        lines.append(f"| psnr_db_vs_original | | {format_value(delta['psnr_db_vs_original'])} | |")
        distance = delta.get("feature_distance_vs_original")  # None: no feature network
        if distance is not None:
            lines.append(f"| feature_distance_vs_original | | {format_value(distance)} | |")
    return "\n".join(lines)


def describe_sampler(spec: dict) -> str:
    text = f"{spec['name']} {spec['steps']} steps" + (
        f" (eta {spec['eta']:g})" if spec.get("eta") else ""
    )
    if spec.get("guidance", 1.0) != 1.0:
        text += (
            f", guidance {spec['guidance']:g} (each step one call on the conditional and "
            "unconditional halves: 2 network evaluations)"
        )
    return text


def _sampler_line(report) -> str:
    def described(measures) -> str:
        return describe_sampler(measures.sampler)

    models = (
        f"original {described(report.original)}, compressed {described(report.compressed)}"
        if report.compressed
        else described(report.original)
    )
    return f"- Sampler: {models}; batch {report.sampler['batch_size']}, seed {report.seed}"


def _class_accuracy_lines(report) -> list[str]:
    """Per-class accuracy of a class-conditional model's samples: a class that collapses shows
    here, where FID and the overall accuracy average it away."""
    lines = []
    for side in ("original", "compressed"):
        measures = getattr(report, side)
        by_class = measures and measures.class_accuracy_by_class
        if by_class:
            shown = ", ".join(f"{c}: {format_value(a)}" for c, a in enumerate(by_class))
            lines.append(f"- Class accuracy by class ({side}): {shown}")
    return lines


def summary(report) -> str:
    fid_line = (
        f"FID: {report.fid_features} features, {report.fid_samples} samples vs "
        f"{report.fid_reference_samples} real images; floor (two disjoint halves of the real set, "
        f"{report.fid_floor_samples} each): {format_value(report.fid_floor)}; compare it with "
        f"fid_at_floor_size, the first {report.fid_floor_samples} samples vs the same real half"
        if report.fid_features
        else f"FID: not computed ({report.fid_unavailable})"
    )
    threads = ", ".join(f"{runtime} {count}" for runtime, count in report.threads.items())
    parts = [
        f"# accel {report.command}: {report.model}",
        "",
        measures_table(report),
        "",
        _sampler_line(report),
        f"- {fid_line}",
        "- Time: speedup is wall time per image, both models sampled in one "
        "run (batches interleaved, after a warm-up call each); latency is the "
        f"median of {report.latency['repeats']} denoiser calls at batch "
        f"{report.latency['batch_size']} after warm-up, step_speedup its "
        f"ratio; on {report.device} ({report.device_name}), threads: {threads}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in report.versions.items()),
    ]
    parts += _class_accuracy_lines(report)
    parts += [f"- Note: {note}" for note in report.notes]
    return "\n".join(parts) + "\n"
