"""The samplers, quantization and ONNX Runtime benchmark: one row per (model, variant), written to
bench/results/quant_digits_cpu.md and .json (full) or bench/quant_quick.md and .json (quick).

    python -m bench.run            # full settings: 2,000 samples, 50 DDIM steps
    python -m bench.run --quick    # CI settings: fewer samples and reconstruction iterations

Quality and time per image come from ``accel.evaluate`` (each model against the one it came from, sampled in
one run, batches interleaved); per-step latency comes from the pytest-benchmark suite in
``bench/test_latency.py``, run once over every model here, so nothing is timed twice by hand.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import accel
from accel.core.files import write_text
from accel.report import to_json

HERE = Path(__file__).parent
COLUMNS = ("model", "variant", "sampler", "fid", "fid_ratio", "fid_at_floor_size", "fid_floor", "psnr_db",
           "calls_per_image", "macs_per_image", "ms_per_image", "speedup", "latency_ms_b1", "latency_ms_b256",
           "step_speedup", "max_rel_error", "params", "macs", "size_bytes", "wall_s")


@dataclass(frozen=True)
class Settings:
    n: int                  # samples for the reference, sampler and export rows
    ablation_n: int         # samples for the quantization ablation
    ablation_steps: int     # DDIM steps of the ablation
    recon_iters: int        # reconstruction iterations of the quantized models


FULL = Settings(n=2000, ablation_n=2000, ablation_steps=50, recon_iters=500)
# CI: part of the quick leaderboard's 10 minutes on 2 cores
QUICK = Settings(n=100, ablation_n=100, ablation_steps=10, recon_iters=5)


def write_results(out: Path, title: str, command: str, start: float, body: str, results: dict) -> str:
    """A benchmark's markdown (title, machine, versions, the command and its wall time, then ``body``) at ``out``
    and its JSON (``results`` with the commit, machine and versions) beside it; returns the markdown."""
    import platform

    import torch

    from accel.evaluate import device_name

    machine, wall_s = device_name(torch.device("cpu")), time.perf_counter() - start
    text = (f"# {title}: digits on {machine}\n\ntorch {torch.__version__}, python {platform.python_version()}, accel "
            f"{accel.__version__}; `{command}` in {wall_s:.0f} s\n\n" + body)
    write_text(out, text)
    write_text(out.with_suffix(".json"), to_json({
        **results, "commit": _commit(), "machine": machine,
        "versions": {"torch": torch.__version__, "accel": accel.__version__}, "wall_s": wall_s}))
    return text


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=HERE, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _quantized(bits: int, recon_iters: int):
    fp32 = accel.load("digits")
    model = accel.load("digits")
    config = accel.QuantConfig(w_bits=bits, a_bits=8, recon_iters=recon_iters)
    accel.quantize_(model, config, accel.calibrate(fp32, accel.CalibConfig()), progress=False)
    return model


def build_models(folder: Path, recon_iters: int) -> dict[str, dict]:
    """W8A8 and W4A8 artifacts of digits in ``folder``, and the fp32, W8A8 and W4A8 ONNX exports beside them:
    {name: export record} for the three exports."""
    from accel.export.onnx import export_onnx

    for bits in (8, 4):
        accel.save(_quantized(bits, recon_iters), folder / f"w{bits}a8")
    return {name: export_onnx(accel.load(source), folder / f"{name}.onnx")
            for name, source in (("fp32", "digits"), ("w8a8", folder / "w8a8"), ("w4a8", folder / "w4a8"))}


def benchmark_latencies(models: Path) -> dict[tuple[str, int], float]:
    """Median ms per denoiser step for every (model label, batch), from one pytest-benchmark run."""
    import pytest

    with tempfile.TemporaryDirectory() as work:
        results = Path(work) / "benchmarks.json"
        code = pytest.main([str(HERE / "test_latency.py"), "-k", "denoiser_step", "--benchmark-only", "-q",
                            "-p", "no:cacheprovider", f"--benchmark-json={results}", f"--models={models}"])
        if code != 0:
            raise SystemExit(f"bench.run: the latency benchmarks failed (pytest exit {code})")
        entries = json.loads(results.read_text())["benchmarks"]
    return {(e["extra_info"]["model"], e["extra_info"]["batch"]): e["stats"]["median"] * 1e3 for e in entries}


def _row(model: str, variant: str, **values) -> dict:
    return {"model": model, "variant": variant, **{c: values.get(c) for c in COLUMNS[2:]}, **{
        k: v for k, v in values.items() if k.startswith("_")}}


def _compared(report, name: str, variant: str, **extra) -> dict:
    """A row from a two-model report: the compressed side, measured against the original."""
    side, delta = report.compressed, report.delta
    measured = dict(sampler=f"{side.sampler['name']} {side.sampler['steps']}", fid=side.fid,
                    fid_ratio=delta.fid_ratio, psnr_db=delta.psnr_db_vs_original, calls_per_image=side.calls_per_image,
                    macs_per_image=side.macs_per_image, ms_per_image=side.sampling_s_per_image * 1e3,
                    speedup=delta.speedup, params=side.params, macs=side.macs, size_bytes=side.size_bytes)
    return _row(name, variant, **{**measured, **extra})


def reference_row(n: int, latencies: dict) -> dict:
    start = time.perf_counter()
    report = accel.evaluate(accel.load("digits"), config=accel.EvalConfig(n=n), command="bench",
                            model_name="digits").report
    side = report.original
    return _row("digits", "fp32 (PyTorch)", sampler="ddim 50", fid=side.fid, fid_at_floor_size=side.fid_at_floor_size,
                fid_floor=report.fid_floor, calls_per_image=side.calls_per_image, macs_per_image=side.macs_per_image,
                ms_per_image=side.sampling_s_per_image * 1e3, latency_ms_b1=latencies["digits", 1],
                latency_ms_b256=latencies["digits", 256], params=side.params, macs=side.macs,
                size_bytes=side.size_bytes, wall_s=time.perf_counter() - start,
                _context={k: report.to_dict()[k] for k in ("device", "device_name", "versions", "fid_features",
                                                           "fid_samples", "fid_floor_samples", "seed")})


# Fewer steps of the same model, against its own DDIM 50: the baselines any step reduction must beat.
SAMPLER_ROWS = (("DDIM, 20 steps", {"steps": 20}), ("DPM-Solver++ (2M), 20 steps", {"name": "dpm++", "steps": 20}))


def sampler_rows(n: int) -> list[dict]:
    rows = []
    for variant, sampling in SAMPLER_ROWS:
        start = time.perf_counter()
        report = accel.evaluate(accel.load("digits", sampling=sampling), accel.load("digits"),
                                accel.EvalConfig(n=n), command="bench", model_name="digits").report
        rows.append(_compared(report, "digits", f"fp32 {variant}", wall_s=time.perf_counter() - start,
                              _samplers={"samples": n}))
    return rows


def quantization_rows(settings: Settings) -> list[dict]:
    """The W4A8 ablation (naive -> full recipe) and W8A8 on the reference model, as benchmark rows."""
    from accel.metrics.quality import fid_setup
    from accel.metrics.size import weights_bytes
    from accel.quant.ablation import ablation_configs, run_ablation

    sampling = {"steps": settings.ablation_steps}
    original = accel.load("digits", sampling=sampling)
    full = accel.QuantConfig(w_bits=4, a_bits=8, recon_iters=settings.recon_iters)
    start = time.perf_counter()
    table = run_ablation(lambda: accel.load("digits", sampling=sampling),
                         lambda calib: accel.calibrate(original, calib), full, accel.CalibConfig(),
                         fid_setup(original.sample_shape), settings.ablation_n, seed=0)
    sizes = {}  # stored bytes depend only on the weight bits, not on the recipe
    for bits in {config.w_bits for _, config, _ in ablation_configs(full, accel.CalibConfig())}:
        model = accel.load("digits")
        accel.quantize_(model, accel.QuantConfig(w_bits=bits, a_bits=None), None, progress=False)
        sizes[bits] = weights_bytes(model)
    wall = (time.perf_counter() - start) / len(table["rows"])
    return [_row("digits", row["name"], sampler=f"ddim {settings.ablation_steps}", fid=row["fid"],
                 fid_ratio=row["fid_ratio"], psnr_db=row["psnr_db"], size_bytes=sizes[row["config"]["w_bits"]],
                 wall_s=wall, _ablation={"samples": settings.ablation_n, "steps": settings.ablation_steps,
                                         "original_fid": table["original_fid"]})
            for row in table["rows"]]


def onnx_runtime_rows(n: int, folder: Path, exports: dict[str, dict], latencies: dict, recon_iters: int) -> list[dict]:
    """FP32, W8A8 and W4A8 (linear layers as INT4, opset 21) sampled through ONNX Runtime, each against the
    PyTorch model it was exported from (same seeds and sampler): FID ratio, PSNR, time per image, step latency."""
    rows = []
    for name, record in exports.items():
        start = time.perf_counter()
        pytorch_label = "digits" if name == "fp32" else name
        pytorch = accel.load("digits" if name == "fp32" else folder / name)
        report = accel.evaluate(accel.load(folder / f"{name}.onnx"), pytorch, accel.EvalConfig(n=n), command="bench",
                                model_name=f"{name}.onnx").report
        ort_ms = latencies[f"{name}.onnx", 1]
        variant = (f"{name.upper()} ONNX, opset {record['opset']}, {record['int4_layers']} INT4 layers "
                   "(ONNX Runtime, CPU)")
        rows.append(_compared(report, "digits", variant, latency_ms_b1=ort_ms,
                              step_speedup=latencies[pytorch_label, 1] / ort_ms,
                              max_rel_error=record["parity"]["max_rel"], size_bytes=record["bytes"],
                              wall_s=time.perf_counter() - start,
                              _export={"samples": n, "recon_iters": recon_iters, "pytorch_fid": report.original.fid}))
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
             f"FID: {context['fid_features']} features, all real images, seed {context['seed']}; fid_at_floor_size "
             f"and fid_floor: {context['fid_floor_samples']} vs {context['fid_floor_samples']} (see README). "
             "ms_per_image: wall time of sampling divided by images; speedup: the same ratio against the row's "
             "original, sampled in the same run. latency_ms_b1/b256: median ms per denoiser call from "
             "bench/test_latency.py (pytest-benchmark); step_speedup: its ratio against the original.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in COLUMNS) + " |" for row in rows]
    samplers = next((row["_samplers"] for row in rows if row.get("_samplers")), None)
    if samplers:
        lines += ["", f"Sampler rows: the same fp32 model with fewer steps against its own DDIM 50 run on "
                      f"{samplers['samples']} samples, same seeds and initial noise (both samplers deterministic, so "
                      "PSNR to the 50-step samples means something)."]
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
                      f"{export['samples']} samples at 50 DDIM steps; fid_ratio, psnr_db, speedup and step_speedup "
                      "compare each with the PyTorch model it was exported from (the quantized ones fake-quantized, "
                      "with quantized attention; the export keeps attention in float); max_rel_error is the export's "
                      "parity check."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI settings")
    parser.add_argument("--out", type=Path, help="markdown report (a .json beside it)")
    args = parser.parse_args(argv)
    settings, mode = (QUICK, "quick") if args.quick else (FULL, "full")
    args.out = args.out or (HERE / "quant_quick.md" if args.quick else HERE / "results" / "quant_digits_cpu.md")
    with tempfile.TemporaryDirectory() as work:
        exports = build_models(Path(work), settings.recon_iters)
        latencies = benchmark_latencies(Path(work))
        rows = [reference_row(settings.n, latencies), *sampler_rows(settings.n), *quantization_rows(settings),
                *onnx_runtime_rows(settings.n, Path(work), exports, latencies, settings.recon_iters)]
    text = markdown(rows, mode)
    write_text(args.out, text)
    write_text(args.out.with_suffix(".json"), to_json({"mode": mode, "commit": _commit(), "settings": vars(settings),
                                                       "rows": rows}))
    print(text)


if __name__ == "__main__":
    main()
