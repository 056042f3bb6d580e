"""The stage table of ``accel compress``: one row per model (the original, then each stage's output), every row
measured in the same evaluation against the original."""
from __future__ import annotations

from accel.compress.chain import StageRun
from accel.report import Report, format_value

COLUMNS = {  # key -> markdown header
    "stage": "stage", "runtime": "runs in", "sampler": "sampler", "fid": "FID", "fid_ratio": "FID ratio",
    "psnr_db": "PSNR to original", "calls_per_image": "calls/image", "macs_per_image": "MACs/image",
    "latency_ms_per_step": "ms/step", "ms_per_image": "ms/image", "speedup": "speedup", "size_bytes": "size",
    "size_ratio": "size ratio", "stage_seconds": "stage wall time (s)"}


def stage_rows(reports: list[Report], runs: list[StageRun]) -> list[dict]:
    """``reports[i]``: the original against stage i's model, all from one sampling run."""
    rows = [_row("original", reports[0].original, None, None)]
    rows += [_row(run.spec.folder, report.compressed, report.delta, run) for report, run in zip(reports, runs)]
    return rows


def _row(stage: str, measures, delta, run: StageRun | None) -> dict:
    sampler = measures.sampler
    return {"stage": stage, "runtime": measures.runtime, "sampler": f"{sampler['name']} {sampler['steps']}",
            "fid": measures.fid, "fid_ratio": delta.fid_ratio if delta else None,
            "psnr_db": delta.psnr_db_vs_original if delta else None, "calls_per_image": measures.calls_per_image,
            "macs_per_image": measures.macs_per_image, "latency_ms_per_step": measures.latency_ms_per_step,
            "ms_per_image": measures.sampling_s_per_image * 1e3, "speedup": delta.speedup if delta else None,
            "size_bytes": measures.size_bytes, "size_ratio": delta.size_ratio if delta else None,
            "stage_seconds": (run.seconds if run else None), "reused": bool(run and run.reused)}


def stages_markdown(rows: list[dict], plot: str) -> str:
    return "\n".join(["## Stages", "",
                      "Every row against the original, from one evaluation (same seeds and initial noise, batches "
                      "interleaved); speedup is the original's wall time per image over the row's (cumulative); "
                      "stage wall time is how long the stage took to run (its training, calibration, export and own "
                      "report).", "", table_markdown(rows), "",
                      f"![FID ratio against wall time per image]({plot})", "",
                      "![samples: the original, then each stage, same noise](samples.png)", ""])


def table_markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS.values()) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(key, row) for key in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def _cell(key: str, row: dict) -> str:
    value = row[key]
    if key == "stage_seconds" and row["reused"]:
        return f"{format_value(value)} (earlier run)"
    if key == "speedup" and value is not None:
        return f"{value:.2f}x"
    if key == "psnr_db" and value is not None:
        return f"{value:.1f} dB"
    return format_value(value, key)
