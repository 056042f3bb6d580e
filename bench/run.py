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
COLUMNS = ("model", "precision", "fid", "fid_ratio", "fid_at_floor_size", "fid_floor", "psnr_db", "latency_ms_b1",
           "latency_ms_b256", "speedup_vs_pytorch", "max_rel_error", "sampling_ms_per_image", "params", "macs",
           "size_bytes", "wall_s")


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
        "psnr_db": None, "fid_ratio": None, "latency_ms_b1": measured["latency_ms_per_step"], "latency_ms_b256": batch_latency,
        "sampling_ms_per_image": measured["sampling_s_per_image"] * 1e3, "params": measured["params"],
        "macs": measured["macs"], "size_bytes": measured["size_bytes"], "wall_s": time.perf_counter() - start,
        "_context": {k: report[k] for k in ("device", "device_name", "versions", "sampler", "fid_features",
                                            "fid_samples", "fid_floor_samples", "seed")},
    }


def quantization_rows(n: int, steps: int, recon_iters: int) -> list[dict]:
    """The W4A8 ablation (naive -> full recipe) and W8A8 on the reference model, as benchmark rows."""
    from accel.metrics.quality import fid_setup
    from accel.metrics.size import weights_bytes
    from accel.quant.ablation import ablation_configs, run_ablation
    from accel.quant.workflow import calibration_for

    original = accel.load("digits")
    full = accel.QuantConfig(w_bits=4, a_bits=8, recon_iters=recon_iters)
    start = time.perf_counter()
    table = run_ablation(lambda: accel.load("digits"), lambda c: calibration_for(original, c), full,
                         fid_setup(original.sample_shape), n, accel.SamplerConfig(steps=steps), seed=0)
    sizes = {}  # stored bytes depend only on the weight bits, not on the recipe
    for bits in {config.w_bits for _, config in ablation_configs(full)}:
        model = accel.load("digits")
        accel.quantize_(model, accel.QuantConfig(w_bits=bits, a_bits=None), None, progress=False)
        sizes[bits] = weights_bytes(model)
    bits_of = {name: config.w_bits for name, config in ablation_configs(full)}
    wall = (time.perf_counter() - start) / len(table["rows"])
    return [{"model": "digits", "precision": row["name"], "fid": row["fid"], "fid_at_floor_size": None,
             "fid_floor": None, "psnr_db": row["psnr_db"], "fid_ratio": row["fid_ratio"], "latency_ms_b1": None,
             "latency_ms_b256": None, "sampling_ms_per_image": None, "params": None, "macs": None,
             "size_bytes": sizes[bits_of[row["name"]]], "wall_s": wall, "_context": None,
             "_ablation": {"samples": n, "steps": steps, "original_fid": table["original_fid"]}}
            for row in table["rows"]]


def onnx_runtime_rows(n: int, steps: int, recon_iters: int) -> list[dict]:
    """FP32, W8A8 and W4A8 (linear layers as INT4, opset 21) exported to ONNX and sampled through ONNX Runtime,
    each against the PyTorch model it was exported from (same seeds): FID ratio, PSNR, interleaved batch-1
    latency ratio, export parity error."""
    import tempfile

    from accel.export.onnx import export_onnx
    from accel.quant.workflow import calibration_for

    fp32 = accel.load("digits")
    models = {"fp32": fp32}
    for bits in (8, 4):
        models[f"W{bits}A8 Q/DQ"] = quantized = accel.load("digits")
        config = accel.QuantConfig(w_bits=bits, a_bits=8, recon_iters=recon_iters)
        accel.quantize_(quantized, config, calibration_for(fp32, config), progress=False)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, model in models.items():
            start = time.perf_counter()
            path = Path(folder) / f"{name.split()[0]}.onnx"
            record = export_onnx(model, path)
            evaluation = accel.evaluate(accel.load(path), baseline=model, command="bench", model_name=str(path),
                                        config=accel.EvalConfig(n=n, sampler=accel.SamplerConfig(steps=steps)))
            original, exported = evaluation.report["original"], evaluation.report["compressed"]
            form = f"{name}, opset {record['opset']}, {record['int4_layers']} INT4 layers"
            rows.append({"model": "digits", "precision": f"{form} (ONNX Runtime, CPU)", "fid": exported["fid"],
                         "fid_ratio": evaluation.report["delta"]["fid_ratio"], "fid_at_floor_size": None,
                         "fid_floor": None, "psnr_db": evaluation.report["delta"]["psnr_db_vs_original"],
                         "latency_ms_b1": exported["latency_ms_per_step"], "latency_ms_b256": None,
                         "speedup_vs_pytorch": evaluation.report["delta"]["speedup"],
                         "max_rel_error": record["parity"]["max_rel"],
                         "sampling_ms_per_image": exported["sampling_s_per_image"] * 1e3,
                         "params": exported["params"], "macs": exported["macs"], "size_bytes": record["bytes"],
                         "wall_s": time.perf_counter() - start, "_context": None,
                         "_export": {"samples": n, "steps": steps, "pytorch_fid": original["fid"],
                                     "recon_iters": recon_iters}})
    return rows


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
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in COLUMNS) + " |" for row in rows]
    ablation = next((row["_ablation"] for row in rows if row.get("_ablation")), None)
    if ablation:
        lines += ["", f"Quantization rows: fake-quantized PyTorch models (no latency: integer speed needs an exported "
                      f"engine); FID and PSNR on {ablation['samples']} samples at {ablation['steps']} DDIM steps, "
                      f"same seeds as their own FP32 run (FID {ablation['original_fid']:.4g}), which is what "
                      "fid_ratio divides by."]
    export = next((row["_export"] for row in rows if row.get("_export")), None)
    if export:
        lines += ["", f"ONNX Runtime rows: `accel export onnx` of the FP32 model, W8A8 and W4A8 (recipe defaults, "
                      f"{export['recon_iters']} reconstruction iterations), sampled through ONNX Runtime on "
                      f"{export['samples']} samples at {export['steps']} DDIM steps; fid_ratio, psnr_db and "
                      "speedup_vs_pytorch compare each with the PyTorch model it was exported from (the quantized "
                      "ones fake-quantized, with quantized attention; the export keeps attention in float), latency "
                      "interleaved at batch 1; max_rel_error is the export's parity check."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI settings (1,000 samples)")
    parser.add_argument("--out", type=Path, default=HERE / "report.md", help="markdown report (a .json beside it)")
    args = parser.parse_args(argv)
    n, mode = (1000, "quick") if args.quick else (2000, "full")
    rows = [reference_fp32_row(n, steps=50)]
    # Quick: a smaller ablation that fits CI's budget (under 5 minutes on 2 cores); full: the README's settings.
    rows += quantization_rows(300, 20, recon_iters=20) if args.quick else quantization_rows(2000, 50, 500)
    rows += onnx_runtime_rows(500, 50, recon_iters=20) if args.quick else onnx_runtime_rows(2000, 50, 500)
    text = markdown(rows, mode)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(to_json({"mode": mode, "commit": _commit(), "rows": rows}))
    print(text)


if __name__ == "__main__":
    main()
