"""The benchmark report: one row per (model, precision/runtime), written to bench/report.md and .json.

    python -m bench.run            # full settings: 2,000 samples, 50 DDIM steps
    python -m bench.run --quick    # CI settings: 1,000 samples, 50 DDIM steps

Each row is one ``accel.evaluate`` of a model; later transforms add rows beside the FP32 reference.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import accel
from accel.metrics.latency import step_latency_ms
from accel.report import to_json

HERE = Path(__file__).parent
COLUMNS = ("model", "precision", "fid", "fid_at_floor_size", "fid_floor", "psnr_db", "latency_ms_b1", "latency_ms_b256",
           "sampling_ms_per_image", "params", "macs", "size_bytes", "wall_s")


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=HERE, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def reference_fp32_row(n: int, steps: int) -> dict:
    model = accel.load("digits")
    start = time.perf_counter()
    evaluation = accel.evaluate(model, config=accel.EvalConfig(n=n, sampler=accel.SamplerConfig(steps=steps)),
                                command="bench", model_name="digits")
    report = evaluation.report
    measured = report["original"]
    batch_latency = step_latency_ms([model], batch_size=256, repeats=10)[0]
    return {
        "model": "digits", "precision": "fp32 (PyTorch)", "fid": measured["fid"],
        "fid_at_floor_size": measured["fid_at_floor_size"], "fid_floor": report["fid_floor"],
        "psnr_db": None, "latency_ms_b1": measured["latency_ms_per_step"], "latency_ms_b256": batch_latency,
        "sampling_ms_per_image": measured["sampling_s_per_image"] * 1e3, "params": measured["params"],
        "macs": measured["macs"], "size_bytes": measured["size_bytes"], "wall_s": time.perf_counter() - start,
        "_context": {k: report[k] for k in ("device", "device_name", "versions", "sampler", "fid_features",
                                            "fid_samples", "fid_floor_samples", "seed")},
    }


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown(rows: list[dict], mode: str) -> str:
    context = rows[0]["_context"]
    lines = [f"# accel benchmark report ({mode})", "",
             f"Machine: {context['device_name']} ({context['device']}); versions: "
             + ", ".join(f"{k} {v}" for k, v in context["versions"].items()),
             f"FID: {context['fid_features']} features, {context['fid_samples']} samples vs all real images, seed "
             f"{context['seed']}; fid_at_floor_size and fid_floor: {context['fid_floor_samples']} vs "
             f"{context['fid_floor_samples']} (see README); "
             f"sampler {context['sampler']['name']} {context['sampler']['steps']} steps. Latency: median ms per "
             "denoiser call at batch 1 and 256.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(row[c]) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI settings (1,000 samples)")
    parser.add_argument("--out", type=Path, default=HERE / "report.md", help="markdown report (a .json beside it)")
    args = parser.parse_args(argv)
    n, mode = (1000, "quick") if args.quick else (2000, "full")
    rows = [reference_fp32_row(n, steps=50)]
    text = markdown(rows, mode)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(to_json({"mode": mode, "commit": _commit(), "rows": rows}))
    print(text)


if __name__ == "__main__":
    main()
