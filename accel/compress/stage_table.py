"""The stage table of ``accel compress``: one row per model (the original, then each stage's
output), every row measured in the same evaluation against the original."""

from __future__ import annotations

from accel.compress.chain import StageRun
from accel.report import Report, format_value, table

COLUMNS = {  # key -> markdown header
    "stage": "stage",
    "runtime": "runs in",
    "sampler": "sampler",
    "fid": "FID",
    "fid_ratio": "FID ratio",
    "psnr_db": "PSNR to original (dB)",
    "class_accuracy": "class accuracy",
    "calls_per_image": "calls/image",
    "macs_per_image": "MACs/image",
    "latency_ms_per_step": "ms/step",
    "ms_per_image": "ms/image",
    "speedup": "speedup",
    "size_bytes": "size",
    "size_ratio": "size ratio",
    "stage_seconds": "stage wall time (s)",
}


def stage_rows(
    reports: list[Report], runs: list[StageRun], references: list[Report] = ()
) -> list[dict]:
    """``reports[i]``: the original against stage i's model, all from one sampling run;
    ``references``: the original in another runtime (exported), from the same run, beside it."""
    rows = [_row("original", reports[0].original, None, None)]
    rows += [
        _row("original, exported", report.compressed, report.delta, None) for report in references
    ]
    rows += [
        _row(run.spec.folder, report.compressed, report.delta, run)
        for report, run in zip(reports, runs)
    ]
    return rows


def _row(stage: str, measures, delta, run: StageRun | None) -> dict:
    sampler = measures.sampler
    return {
        "stage": stage,
        "runtime": measures.runtime,
        "sampler": f"{sampler['name']} {sampler['steps']}",
        "fid": measures.fid,
        "fid_ratio": delta.fid_ratio if delta else None,
        "psnr_db": delta.psnr_db_vs_original if delta else None,
        "class_accuracy": measures.class_accuracy,
        "calls_per_image": measures.calls_per_image,
        "macs_per_image": measures.macs_per_image,
        "latency_ms_per_step": measures.latency_ms_per_step,
        "ms_per_image": measures.sampling_s_per_image * 1e3,
        "speedup": delta.speedup if delta else None,
        "size_bytes": measures.size_bytes,
        "size_ratio": delta.size_ratio if delta else None,
        "stage_seconds": (run.seconds if run else None),
        "reused": bool(run and run.reused),
    }


def stages_markdown(rows: list[dict], plot: str) -> str:
    return "\n".join(
        [
            "## Stages",
            "",
            "Every row against the original, from one evaluation (same seeds and initial "
            "noise, batches interleaved, after a warm-up call of each model); speedup is "
            "the original's wall time per image over the row's (cumulative); stage wall "
            "time is how long the stage took to run (its training, calibration or export).",
            "",
            table_markdown(rows),
            "",
            f"![FID ratio against wall time per image]({plot})",
            "",
            "![samples: the original, then each stage, same noise](samples.png)",
            "",
        ]
    )


def table_markdown(rows: list[dict]) -> str:
    shown = [{**row, "stage_seconds": _stage_time(row)} for row in rows]
    columns = {
        key: header
        for key, header in COLUMNS.items()
        # class accuracy only where the model has classes (rows of older runs have no such key)
        if key != "class_accuracy" or any(row.get(key) is not None for row in rows)
    }
    return table(columns, shown)


def _stage_time(row: dict):
    if row["stage_seconds"] is not None and row["reused"]:
        return f"{format_value(row['stage_seconds'])} (earlier run)"
    return row["stage_seconds"]
