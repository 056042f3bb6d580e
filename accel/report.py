"""The report every command writes: report.json, report.md and samples.png (shared/GUIDE.md)."""
from __future__ import annotations

import json
import math
import platform
from pathlib import Path

import numpy as np

MEASURES = ("fid", "fid_at_floor_size", "latency_ms_per_step", "sampling_s_per_image", "params", "macs", "size_bytes")


def versions() -> dict:
    import diffusers
    import torch

    import accel

    return {"accel": accel.__version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "python": platform.python_version()}


def delta(original: dict, compressed: dict, psnr: float | None) -> dict:
    """How the compressed model compares: ratios above 1 mean faster / smaller / worse FID."""
    def ratio(a, b):
        return None if a in (None, 0) or b is None else a / b

    fid_o, fid_c = original["fid"], compressed["fid"]
    return {
        "fid": None if fid_o is None or fid_c is None else fid_c - fid_o,
        "fid_ratio": ratio(fid_c, fid_o) if fid_o else None,
        "speedup": ratio(original["latency_ms_per_step"], compressed["latency_ms_per_step"]),
        "size_ratio": ratio(compressed["size_bytes"], original["size_bytes"]),
        "psnr_db_vs_original": psnr,
    }


def _json_safe(value):
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def to_json(report: dict) -> str:
    return json.dumps(_json_safe(report), indent=2) + "\n"


def _fmt(value, key: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if key in ("params", "macs", "size_bytes"):
        for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(value) >= scale:
                return f"{value / scale:.2f}{unit}" + ("B" if key == "size_bytes" else "")
        return f"{value}" + (" B" if key == "size_bytes" else "")
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.4g}"
    return str(value)


def markdown_table(report: dict) -> str:
    compressed = report.get("compressed")
    header = "| | original |" + (" compressed | delta |" if compressed else "")
    lines = [header, "|---|---|" + ("---|---|" if compressed else "")]
    delta_keys = {"fid": "fid_ratio", "latency_ms_per_step": "speedup", "size_bytes": "size_ratio"}
    for key in MEASURES:
        row = f"| {key} | {_fmt(report['original'].get(key), key)} |"
        if compressed:
            d_key = delta_keys.get(key)
            d_val = f"{d_key} {_fmt(report['delta'].get(d_key))}" if d_key else ""
            row += f" {_fmt(compressed.get(key), key)} | {d_val} |"
        lines.append(row)
    if compressed:
        lines.append(f"| psnr_db_vs_original | | {_fmt(report['delta']['psnr_db_vs_original'])} | |")
    return "\n".join(lines)


def markdown(report: dict) -> str:
    sampler = report["sampler"]
    fid_line = (f"FID: {report['fid_features']} features, {report['fid_samples']} samples vs "
                f"{report['fid_reference_samples']} real images; floor (two disjoint halves of the real set, "
                f"{report['fid_floor_samples']} each): {_fmt(report['fid_floor'])}; compare it with "
                f"fid_at_floor_size, the first {report['fid_floor_samples']} samples vs the same real half"
                if report["fid_features"] else f"FID: not computed ({report['fid_unavailable']})")
    parts = [
        f"# accel {report['command']}: {report['model']}",
        "",
        markdown_table(report),
        "",
        f"- Sampler: {sampler['name']}, {sampler['steps']} steps, batch {sampler['batch_size']}, seed {report['seed']}",
        f"- {fid_line}",
        f"- Latency: median of {report['latency']['repeats']} denoiser calls at batch "
        f"{report['latency']['batch_size']} after warm-up, on {report['device']} ({report['device_name']})",
        f"- Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
    ]
    parts += [f"- Note: {note}" for note in report.get("notes", [])]
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


def write_report(folder: Path, report: dict, images_by_model: list[np.ndarray], sections: list[str] = ()) -> None:
    """report.json, report.md (plus any extra markdown ``sections``) and samples.png into ``folder``."""
    (folder / "report.json").write_text(to_json(report))
    (folder / "report.md").write_text("\n".join([markdown(report), *sections]))
    sample_grid(images_by_model).save(folder / "samples.png")
