"""The samplers, quantization and runtimes benchmark on the built-in model.

    python -m bench.run          # full: 2,000 samples, DDIM 50
                                 #   -> bench/results/quant_digits_cpu.json and .md
    python -m bench.run --quick  # CI: 40 samples, a 10-step ablation, 2 reconstruction iterations,
                                 #   8 calibration trajectories
                                 #   -> bench/quant_quick.json and .md

Three tables, each measured in one run (every model sampled batch by batch in turn, from the same
noise, after a warm-up call each): the original's samplers (DDIM 50, DDIM 20, DPM-Solver++ 20); the
quantization ablation (W4A8 from the naive recipe to Q-Diffusion's, and W8A8), fake-quantized in
PyTorch, so its times are float arithmetic, not integer speed; and the runtimes: fp32, W8A8 and W4A8
exported to ONNX and run by ONNX Runtime, beside the original in PyTorch, the fp32 graph in ONNX
Runtime and the PyTorch models they were exported from.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import accel
from accel.evaluate import evaluate_many
from accel.measure.quantize import run_ablation
from accel.metrics.quality import psnr_db
from accel.quant import Q_DIFFUSION
from accel.report import table
from bench.common import HERE, RESULTS, write_results

COLUMNS = {
    "model": "model",
    "runtime": "runs in",
    "sampler": "sampler",
    "fid": "FID",
    "fid_ratio": "FID ratio",
    "psnr_db": "PSNR to original (dB)",
    "calls_per_image": "calls/image",
    "macs_per_image": "MACs/image",
    "ms_per_image": "ms/image",
    "speedup": "speedup (time/image)",
    "latency_ms": "ms/step (batch 1)",
    "size_bytes": "size",
}
ABLATION_COLUMNS = {
    "name": "recipe",
    "fid": "FID",
    "fid_ratio": "FID ratio",
    "psnr_db": "PSNR to original (dB)",
    "size_bytes": "size",
}
EXPORT_COLUMNS = {
    **COLUMNS,
    "source_fid_ratio": "FID ratio to its PyTorch model",
    "source_psnr_db": "PSNR to its PyTorch model (dB)",
    "parity_max_rel": "export parity (max rel)",
}


@dataclass(frozen=True)
class Settings:
    n: int  # samples for the sampler and runtime tables
    ablation_n: int  # samples for the quantization ablation
    ablation_steps: int  # DDIM steps of the ablation
    recon_iters: int  # reconstruction iterations of the quantized models
    calib_samples: int  # sampler trajectories the calibration set is recorded from
    batch_size: int


FULL = Settings(
    n=2000,
    ablation_n=2000,
    ablation_steps=50,
    recon_iters=Q_DIFFUSION.recon_iters,
    calib_samples=accel.CalibConfig().samples,
    batch_size=500,
)
# CI: every row's code path at few samples (at 100 samples, 5 iterations and 64 calibration
# trajectories: 10 of CI's minutes on a 2-core AMD EPYC; most of it quantizing, not sampling)
QUICK = Settings(
    n=40, ablation_n=40, ablation_steps=10, recon_iters=2, calib_samples=8, batch_size=40
)


def row(name: str, report, side: str = "compressed") -> dict:
    """One model of a report (``side`` "original" or "compressed") as a table row."""
    measures = getattr(report, side)
    delta = report.delta if side == "compressed" else None
    return {
        "model": name,
        "runtime": measures.runtime,
        "sampler": f"{measures.sampler['name']} {measures.sampler['steps']}",
        "fid": measures.fid,
        "fid_ratio": delta.fid_ratio if delta else 1.0,
        "psnr_db": delta.psnr_db_vs_original if delta else None,
        "calls_per_image": measures.calls_per_image,
        "macs_per_image": measures.macs_per_image,
        "ms_per_image": measures.sampling_s_per_image * 1e3,
        "speedup": delta.speedup if delta else 1.0,
        "latency_ms": measures.latency_ms_per_step,
        "size_bytes": measures.size_bytes,
    }


def sampler_rows(settings: Settings) -> list[dict]:
    """The original with fewer steps against its own DDIM 50: the baselines any step reduction must
    beat."""
    variants = {
        "original, DDIM 50": {},
        "original, DDIM 20": {"steps": 20},
        "original, DPM-Solver++ (2M) 20": {"name": "dpm++", "steps": 20},
    }
    models = [accel.load("digits", sampling=changes) for changes in variants.values()]
    evaluations = evaluate_many(
        models, _eval(settings.n, settings), command="bench", model_name="digits"
    )
    names = list(variants)
    return [row(names[0], evaluations[0].report, "original")] + [
        row(name, evaluation.report) for name, evaluation in zip(names[1:], evaluations)
    ]


def ablation_rows(settings: Settings) -> dict:
    """The W4A8 ablation (naive -> full recipe) and W8A8 on the reference model."""
    full = replace(Q_DIFFUSION, recon_iters=settings.recon_iters)
    return run_ablation(
        lambda: accel.load("digits", sampling={"steps": settings.ablation_steps}),
        full,
        accel.CalibConfig(samples=settings.calib_samples),
        _eval(settings.ablation_n, settings),
        progress=False,
    )


def runtime_rows(settings: Settings, work: Path) -> list[dict]:
    """fp32, W8A8 and W4A8 in ONNX Runtime (W4A8's linear layers as INT4, opset 21), W8A8 also in
    the ort-cpu form, and the PyTorch models they were exported from, all against the original in
    PyTorch, sampled in one run."""
    pytorch = {"fp32": accel.load("digits")}
    for bits in (8, 4):
        pytorch[f"W{bits}A8"] = accel.run_stage(
            "quantize",
            "digits",
            bits=bits,
            recon_iters=settings.recon_iters,
            calib_samples=settings.calib_samples,
            progress=False,
        ).model
    # (row, PyTorch model it came from, export settings): each model in the portable form, and W8A8
    # also in the form ONNX Runtime's CPU kernels fuse
    exports = [(name, name, {}) for name in pytorch]
    exports.append(("W8A8, ort-cpu form", "W8A8", {"target": "ort-cpu"}))
    exported = {
        label: accel.run_stage(
            "export",
            pytorch[source],
            format="onnx",
            out=work / f"{label.replace(', ', '-')}.onnx",
            progress=False,
            **options,
        )
        for label, source, options in exports
    }
    # the original in PyTorch first: evaluation i compares it with models[i + 1]
    models = list(pytorch.values()) + [exported[label].model for label, _, _ in exports]
    evaluations = evaluate_many(
        models, _eval(settings.n, settings), command="bench", model_name="digits"
    )
    in_pytorch = dict(zip(pytorch, [None, *evaluations]))  # the original is no comparison
    in_onnx = dict(zip(exported, evaluations[len(pytorch) - 1 :]))
    rows = [row("fp32", evaluations[0].report, "original")]
    rows += [row(f"{name} (fake-quantized)", in_pytorch[name].report) for name in list(pytorch)[1:]]
    for label, source, _ in exports:
        graph = in_onnx[label]
        rows.append(
            {
                **row(label, graph.report),
                **_against_source((in_pytorch[source], graph), exported[label].record),
            }
        )
    return rows


def _against_source(pair, export: dict) -> dict:
    """An exported model against the PyTorch model it came from, in the same run: FID ratio, PSNR,
    parity."""
    source, graph = pair
    source_fid = source.report.compressed.fid if source else graph.report.original.fid
    source_images = source.images[1] if source else graph.images[0]
    return {
        "source_fid_ratio": _ratio(graph.report.compressed.fid, source_fid),
        "source_psnr_db": psnr_db(source_images, graph.images[1]),
        "parity_max_rel": export["parity"]["max_rel"],
        "opset": export["opset"],
        "int4_layers": export["int4_layers"],
    }


def _ratio(a, b):
    return None if a is None or not b else a / b


def _eval(n: int, settings: Settings):
    return accel.EvalConfig(n=n, batch_size=settings.batch_size)


def sampler_table(results: dict) -> str:
    return (
        f"## Samplers ({results['settings']['n']} samples, one run)\n\n"
        + table(COLUMNS, results["samplers"])
        + "\n"
    )


def ablation_table(results: dict) -> str:
    settings, ablation = results["settings"], results["ablation"]
    return (
        f"## Quantization ablation ({ablation['samples']} samples at DDIM "
        f"{settings['ablation_steps']}, one run; fake-quantized in PyTorch, "
        f"{settings['recon_iters']} reconstruction iterations per block)\n\n"
        + table(ABLATION_COLUMNS, ablation["rows"])
        + "\n"
    )


def runtime_table(results: dict) -> str:
    return (
        f"## Runtimes ({results['settings']['n']} samples, DDIM 50, one run)\n\n"
        "Every row against the original in PyTorch (speedup: its wall time per image "
        "over the row's), the fp32 graph in ONNX Runtime beside it; an exported row "
        "also against the PyTorch model it came from. Fake-quantized rows run float "
        "arithmetic on the integer grid: their time is not integer speed.\n\n"
        + table(EXPORT_COLUMNS, results["runtimes"])
        + "\n"
    )


def body(results: dict) -> str:
    return "\n".join([sampler_table(results), ablation_table(results), runtime_table(results)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="CI settings")
    parser.add_argument("--out", type=Path, help="markdown report (a .json beside it)")
    args = parser.parse_args(argv)
    settings, mode = (QUICK, "quick") if args.quick else (FULL, "full")
    out = args.out or (HERE / "quant_quick.md" if args.quick else RESULTS / "quant_digits_cpu.md")
    start = time.perf_counter()
    samplers, ablation = sampler_rows(settings), ablation_rows(settings)
    with tempfile.TemporaryDirectory() as work:
        runtimes = runtime_rows(settings, Path(work))
    command = f"python -m bench.run{' --quick' if args.quick else ''}"
    results = {
        "mode": mode,
        "settings": vars(settings),
        "samplers": samplers,
        "ablation": ablation,
        "runtimes": runtimes,
    }
    print(
        write_results(
            out,
            f"Samplers, quantization and runtimes ({mode})",
            command,
            start,
            body(results),
            results,
        )
    )


if __name__ == "__main__":
    main()
