"""The class-conditional transformer reference, ``digits-dit``, sampled with classifier-free
guidance: what guidance buys, and the training-free transforms on it (quantization, caching, export
to ONNX Runtime), each row against the original (fp32, PyTorch, DDIM 50 at its guidance scale)
sampled in the same run, from the same noise and labels.

    python -m bench.dit          # full: 2,000 samples -> bench/results/dit_digits_cpu.json, .md
    python -m bench.dit --quick  # CI: 40 samples at DDIM 10, short reconstruction, 8 trajectories

Three runs, each one ``evaluate_many`` (batches of every model interleaved, so each speedup is a
ratio from one run): guidance scales; the transforms (W8A8, W4A8, the exported graphs, the caches
and the plain sampler at each cache's MACs per image); the W4A8 ablation (naive to the full recipe).
A guided step is one network call on the conditional and unconditional halves: calls per image
count both.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import accel
from accel.evaluate import evaluate_many
from accel.measure.quantize import run_ablation
from accel.metrics.size import count_macs, macs_per_image
from accel.quant import Q_DIFFUSION
from accel.report import table
from bench.common import HERE, RESULTS, goal, write_results

MODEL = "digits-dit"
GUIDANCE_SCALES = (1.5, 3.0)  # beside the model's own (1.0: none)
# (name, cache stage settings)
CACHES = (
    ("block cache, interval 3", {"interval": 3}),
    ("first-block cache, threshold 0.1", {"method": "first-block", "threshold": 0.1}),
)


@dataclass(frozen=True)
class Settings:
    n: int
    batch_size: int
    steps: int  # the sampler's steps for every model (the reference's own: 50)
    recon_iters: int
    calib_samples: int  # sampler trajectories the calibration set is recorded from
    ablation_n: int
    judged: bool  # judge rows against the goals (the full settings only)


# 500 samples, not 2,000, and 200 reconstruction iterations: a guided DDIM 50 run of 2,000 samples
# takes 5.5 minutes per model on 2 CPU cores and fake-quantized models 3x that; this keeps the whole
# benchmark near 15 minutes
FULL = Settings(
    n=500,
    batch_size=500,
    steps=50,
    recon_iters=200,
    calib_samples=accel.CalibConfig().samples,
    ablation_n=100,
    judged=True,
)
# CI: the same code at a few samples, iterations and trajectories (at 10 iterations and 64
# trajectories: 377 s of CI on a 2-core AMD EPYC, most of it quantizing)
QUICK = Settings(
    n=40, batch_size=40, steps=10, recon_iters=2, calib_samples=8, ablation_n=40, judged=False
)

COLUMNS = {
    "model": "model",
    "runtime": "runs in",
    "sampler": "sampler",
    "calls_per_image": "calls/image",
    "fid": "FID",
    "fid_ratio": "FID ratio",
    "class_accuracy": "class accuracy",
    "worst_class_accuracy": "worst class",
    "psnr_db": "PSNR to original (dB)",
    "ms_per_image": "ms/image",
    "speedup": "speedup (time/image)",
    "macs_per_image": "MACs/image",
    "size_bytes": "size",
}


def row(name: str, report, side: str = "compressed") -> dict:
    measures = getattr(report, side)
    delta = report.delta if side == "compressed" else None
    sampler = measures.sampler
    by_class = [a for a in measures.class_accuracy_by_class or [] if a is not None]
    return {
        "model": name,
        "runtime": measures.runtime,
        "sampler": f"{sampler['name']} {sampler['steps']}, guidance {sampler['guidance']:g}",
        "guidance": sampler["guidance"],
        "fid": measures.fid,
        "fid_ratio": delta.fid_ratio if delta else 1.0,
        "class_accuracy": measures.class_accuracy,
        "class_accuracy_by_class": measures.class_accuracy_by_class,
        "worst_class_accuracy": min(by_class) if by_class else None,
        "psnr_db": delta.psnr_db_vs_original if delta else None,
        "calls_per_image": measures.calls_per_image,
        "macs_per_image": measures.macs_per_image,
        "ms_per_image": measures.sampling_s_per_image * 1e3,
        "speedup": delta.speedup if delta else 1.0,
        "latency_ms": measures.latency_ms_per_step,
        "size_bytes": measures.size_bytes,
    }


def _load(settings: Settings, **changes):
    return accel.load(MODEL, sampling={"steps": settings.steps, **changes})


def _rows(names: list[str], models: list, settings: Settings, n: int) -> list[dict]:
    evaluations = evaluate_many(
        models,
        accel.EvalConfig(n=n, batch_size=settings.batch_size),
        command="bench",
        model_name=MODEL,
    )
    return [row(names[0], evaluations[0].report, "original")] + [
        row(name, evaluation.report) for name, evaluation in zip(names[1:], evaluations)
    ]


def guidance_rows(settings: Settings) -> list[dict]:
    original = _load(settings)
    names = [f"guidance {original.sampling.guidance:g} (the model's own: none)"]
    models = [original]
    for scale in GUIDANCE_SCALES:
        names.append(f"guidance {scale:g}")
        models.append(_load(settings, guidance=scale))
    return _rows(names, models, settings, settings.n)


def _plain_at_equal_macs(original, cached):
    """The original's sampler with as many steps as the cached model's MACs per image buy."""
    per_step = count_macs(original) * original.evaluations_per_step()
    steps = max(1, round(macs_per_image(cached) / per_step))
    plain = copy.copy(original)  # the same network, fewer steps
    plain.sampling = replace(original.sampling, steps=steps)
    return plain, steps


def transform_rows(settings: Settings, work: Path) -> tuple[list[dict], dict]:
    """The original, the fp32/W8A8/W4A8 graphs in ONNX Runtime, each cache with the plain sampler
    at its MACs: one run. W8A8 and W4A8 are measured as exported (the Q/DQ graph computes what the
    fake-quantized PyTorch model does, at a third of its time here; the ablation has the PyTorch
    rows). Also the quantize stage's own time and the export parity."""
    original = _load(settings)
    names, models, extra = ["fp32 (original)"], [original], {"quantize_s": {}, "parity": {}}
    quantized = {}
    for bits in (8, 4):
        start = time.perf_counter()
        quantized[bits] = accel.run_stage(
            "quantize",
            original,
            bits=bits,
            recon_iters=settings.recon_iters,
            calib_samples=settings.calib_samples,
            progress=False,
        ).model
        extra["quantize_s"][f"W{bits}A8"] = time.perf_counter() - start
    for label, model in (("fp32", original), ("W8A8", quantized[8]), ("W4A8", quantized[4])):
        exported = accel.run_stage(
            "export", model, format="onnx", out=work / f"{label}.onnx", progress=False
        )
        extra["parity"][label] = exported.record["parity"]["max_rel"]
        names.append(f"{label} ONNX, opset {exported.record['opset']}")
        models.append(exported.model)
    for label, cache in CACHES:
        cached = accel.run_stage("cache", original, cache, progress=False).model
        plain, steps = _plain_at_equal_macs(original, cached)
        names += [label, f"plain DDIM {steps} (equal MACs to {label})"]
        models += [cached, plain]
    return _rows(names, models, settings, settings.n), extra


def ablation(settings: Settings) -> dict:
    """W4A8 from the naive recipe to the full one, and W8A8, at ``ablation_n`` samples."""
    full = replace(Q_DIFFUSION, recon_iters=settings.recon_iters)
    return run_ablation(
        lambda: _load(settings),
        full,
        accel.CalibConfig(samples=settings.calib_samples),
        accel.EvalConfig(n=settings.ablation_n, batch_size=settings.batch_size),
        progress=False,
    )


def goals(results: dict) -> list[dict]:
    """The issue's goals on the full run (digits' FID is read from its committed benchmark)."""
    import json

    digits = json.loads((RESULTS / "quant_digits_cpu.json").read_text())["samplers"][0]["fid"]
    rows = {r["model"]: r for r in results["guidance"] + results["transforms"]}
    original = results["guidance"][0]
    guided = next(r for r in results["guidance"] if r["guidance"] == 3.0)
    w8 = next(r for r in results["transforms"] if r["model"].startswith("W8A8 ONNX"))
    w4 = next(r for r in results["transforms"] if r["model"].startswith("W4A8 ONNX"))
    points = lambda r: 100 * (r["class_accuracy"] - original["class_accuracy"])  # noqa: E731
    fp32_onnx = next(r for r in results["transforms"] if r["model"].startswith("fp32 ONNX"))
    cache3 = rows["block cache, interval 3"]
    return [
        goal("fp32 FID / digits UNet FID", original["fid"] / digits, 1.5),
        goal("fp32 class accuracy", original["class_accuracy"], 0.95, at_least=True),
        goal(
            "accuracy gained by guidance 3, points",
            100 * (guided["class_accuracy"] - original["class_accuracy"]),
            0.0,
            at_least=True,
        ),
        goal("W8A8 FID ratio", w8["fid_ratio"], 1.10),
        goal("W8A8 accuracy lost, points", -points(w8), 1.0),
        goal("W4A8 FID ratio", w4["fid_ratio"], 1.25),
        goal("W4A8 accuracy lost, points", -points(w4), 2.0),
        goal("W4A8 quantize stage, minutes", results["extra"]["quantize_s"]["W4A8"] / 60, 15.0),
        goal("cache interval 3 speedup", cache3["speedup"], 1.5, at_least=True),
        goal("cache interval 3 FID ratio", cache3["fid_ratio"], 1.10),
        goal("cache interval 3 accuracy lost, points", -points(cache3), 1.0),
        goal("fp32 ONNX parity, max relative error", results["extra"]["parity"]["fp32"], 1e-4),
        goal("fp32 ONNX FID ratio - 1", abs(fp32_onnx["fid_ratio"] - 1.0), 0.02),
    ]


ABLATION_COLUMNS = {
    "name": "recipe",
    "fid": "FID",
    "fid_ratio": "FID ratio",
    "psnr_db": "PSNR to original (dB)",
    "class_accuracy": "class accuracy",
}


def body(results: dict) -> str:
    settings, ablation_data = results["settings"], results["ablation"]
    parts = [
        f"## Guidance ({settings['n']} samples, DDIM {settings['steps']}, one run)\n",
        table(COLUMNS, results["guidance"]),
        f"\n## Transforms ({settings['n']} samples, one run; against fp32 PyTorch at the model's "
        "guidance)\n",
        "W8A8 and W4A8 run as exported Q/DQ graphs in ONNX Runtime (which of their nodes it "
        "fuses into integer kernels is not checked here). Each cache is followed by the plain "
        "sampler with the same MACs per image.\n",
        table(COLUMNS, results["transforms"]),
        f"\nQuantize stage time (s): {results['extra']['quantize_s']}; ONNX parity (max relative "
        f"error): {results['extra']['parity']}\n",
        f"## W4A8 ablation ({ablation_data['samples']} samples, one run, "
        f"{settings['recon_iters']} reconstruction iterations per block)\n",
        table(ABLATION_COLUMNS, ablation_data["rows"]),
    ]
    if results["goals"]:
        parts += ["\n## Goals\n", "\n".join(f"- {g['line']}" for g in results["goals"])]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="CI settings")
    parser.add_argument("--out", type=Path, help="markdown report (a .json beside it)")
    args = parser.parse_args(argv)
    settings, mode = (QUICK, "quick") if args.quick else (FULL, "full")
    out = args.out or (HERE / "dit_quick.md" if args.quick else RESULTS / "dit_digits_cpu.md")
    start = time.perf_counter()
    guidance = guidance_rows(settings)
    with tempfile.TemporaryDirectory() as work:
        transforms, extra = transform_rows(settings, Path(work))
    results = {
        "mode": mode,
        "model": MODEL,
        "settings": vars(settings),
        "guidance": guidance,
        "transforms": transforms,
        "extra": extra,
        "ablation": ablation(settings),
    }
    results["goals"] = goals(results) if settings.judged else []
    command = f"python -m bench.dit{' --quick' if args.quick else ''}"
    title = f"Guidance, quantization, caching and export ({mode})"
    print(write_results(out, title, command, start, body(results), results, MODEL))


if __name__ == "__main__":
    main()
