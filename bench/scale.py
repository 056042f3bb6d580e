"""Every stage at real sizes: Stable Diffusion 1.5's UNet (through its pipeline folder and prompts),
DiT-XL/2 and PixArt-alpha (text states from a stored embeddings file), randomly initialised from
their published configurations (accel/models/architectures).

No trained weights can be had here, so each row measures what does not depend on them: that the
stage runs, its wall time and peak memory, the transformed network's output error against the
original on calls along the original's own trajectory (SQNR; for caching, which acts across steps,
the final samples'), and its time per step at batch 1 beside the original's in one interleaved run
(per image for caching). The export row is the float32 ONNX graph in ONNX Runtime against PyTorch
eager, with the parity gate's error.

    python -m bench.scale           # full: native sizes -> bench/results/scale_cpu.md, .json
    python -m bench.scale --quick   # CI: widths / 8 and latents / 4 -> bench/scale_quick.md, .json
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import accel
from accel.calib.collect import CalibrationSet
from accel.core.errors import AccelError, one_line
from accel.metrics.fidelity import output_fidelity, sample_fidelity, trajectory_calls
from accel.metrics.latency import step_latency_ms
from accel.models.architectures import NAMES, architecture
from accel.quant.config import Q_DIFFUSION
from accel.quant.reconstruct import reconstruct_, reconstruction_estimate
from bench.common import HERE, RESULTS, goal, write_results

PROMPTS = (
    "a photograph of an astronaut riding a horse",
    "a red car parked by the sea at dawn",
    "a bowl of fruit on a wooden table",
    "a city street at night in the rain",
)
GIB = 2**30


@dataclass(frozen=True)
class Settings:
    width_divisor: int
    resolution_divisor: int
    steps: int  # the sampler's: calibration trajectories, fidelity's trajectory, time per image
    calib_samples: int
    points: int  # calls along the trajectory the output error is measured on
    latency_repeats: int
    image_repeats: int  # caching's rounds of whole images, after a warm-up round
    timed_iters: int  # W4A8 reconstruction: iterations run on the first block, then extrapolated
    judged: bool


# a call of SD1.5's UNet at 64x64 takes seconds on 2 cores: few calls, each at full size
FULL = Settings(1, 1, 10, 4, 3, latency_repeats=3, image_repeats=1, timed_iters=3, judged=True)
QUICK = Settings(8, 4, 6, 2, 3, latency_repeats=3, image_repeats=3, timed_iters=20, judged=False)
QUANTIZE = "quantize W8A8 minmax, calibration only"
RECONSTRUCT = "quantize W4A8 minmax, reconstructed up to the first block"
PRUNE = "prune 0.3, magnitude, no fine-tuning"
CACHE = "cache, interval 3"
EXPORT = "export ONNX float32"


class PeakMemory:
    """This process's peak resident memory while the block runs (sampled every 20 ms)."""

    def __enter__(self):
        self.peak, self._stop = rss_bytes(), threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def write_model(name: str, folder: Path, settings: Settings) -> tuple[Path, Path | None]:
    """The architecture's folder (SD1.5: a whole pipeline) and its prompts file (a text file for the
    pipeline's encoder; stored states for PixArt, whose T5 encoder is not built here)."""
    spec = architecture(name)
    sizes = {
        "width_divisor": settings.width_divisor,
        "resolution_divisor": settings.resolution_divisor,
    }
    if name == "sd15-unet":
        from accel.models.architectures.pipeline import write_sd15_pipeline

        prompts = folder / "prompts.txt"
        prompts.write_text("\n".join(PROMPTS) + "\n")
        return write_sd15_pipeline(folder / name, **sizes), prompts
    model = spec.save(folder / name, **sizes)
    if spec.conditioning["kind"] != "text":
        return model, None
    from safetensors.torch import save_file

    width = spec.network_config(settings.width_divisor)["caption_channels"]
    states = torch.randn(len(PROMPTS), spec.conditioning["tokens"], width, generator=_seeded())
    prompts = folder / "text_states.safetensors"
    save_file({"text_states": states}, str(prompts))
    return model, prompts


def _seeded() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def stages(settings: Settings, work: Path, name: str) -> dict[str, Callable]:
    """Each row's stage, as a function of the original: its transformed model and stage record."""
    calib_file = work / f"{name}-calib.safetensors"  # recorded once, for both quantize rows
    return {
        # minmax: MSE's search over 100 clipping ratios per weight row took more than 9 minutes on
        # SD1.5's 860M weights here; at 8 bits minmax kept as much (10.6 vs 10.2 dB SQNR, narrowed)
        QUANTIZE: lambda model: calibrated(model, 8, settings, calib_file),
        RECONSTRUCT: lambda model: w4a8_first_block(model, settings, calib_file),
        # magnitude: Diff-Pruning's gradients need training images a random network has none of
        PRUNE: lambda model: accel.run_stage(
            "prune", model, ratio=0.3, criterion="magnitude", finetune_steps=0, progress=False
        ),
        CACHE: lambda model: accel.run_stage("cache", model, interval=3, progress=False),
        EXPORT: lambda model: accel.run_stage(
            "export", model, out=work / f"{name}.onnx", format="onnx", progress=False
        ),
    }


def calibrated(model, bits: int, settings: Settings, calib_file: Path):
    """W``bits``A8 from minmax ranges, calibration only, on the calibration set in ``calib_file``
    (recorded by the first row that needs it)."""
    return accel.run_stage(
        "quantize",
        model,
        bits=bits,
        act_bits=8,
        range="minmax",
        rounding="nearest",
        calib_samples=settings.calib_samples,
        calib=str(calib_file),
        progress=False,
    )


def w4a8_first_block(model, settings: Settings, calib_file: Path):
    """W4A8 calibrated, then reconstructed up to its first block at ``timed_iters`` iterations: a
    whole reconstruction (Q-Diffusion's 500 iterations on every unit) is hours at full size on a
    CPU, so its time is extrapolated from these (``reconstruction_estimate``). Minmax starting
    ranges: MSE's search is a cost of its own (more than 9 minutes on SD1.5's weights) and took
    about 90% of this row's time in CI's quick settings (25-48 s against 3-9 s; SQNR within 1
    dB)."""
    result = calibrated(model, 4, settings, calib_file)
    calib = CalibrationSet.load(calib_file)
    timed = reconstruct_(
        result.model, calib, model.module, settings.timed_iters, progress=False, max_blocks=1
    )
    estimate = reconstruction_estimate(timed, settings.timed_iters, Q_DIFFUSION.recon_iters)
    result.record["reconstruction"] = estimate
    return result


def measure_row(label: str, run: Callable, original, calls, settings: Settings) -> dict:
    gc.collect()
    start = time.perf_counter()
    try:
        with PeakMemory() as memory:
            result = run(original)
    # a stage that does not take this architecture says why; anything else is a failure, recorded
    # in the table (and the goal "every stage completes" missed) so the other rows still run
    except AccelError as error:
        return {"stage": label, "error": str(error)}
    except Exception as error:
        return {"stage": label, "error": f"failed: {type(error).__name__}: {one_line(error)}"}
    row = {
        "stage": label,
        "wall_s": time.perf_counter() - start,
        "peak_rss_gib": memory.peak / GIB,
    }
    transformed = result.model
    if label == CACHE:
        row["fidelity"] = sample_fidelity(original, transformed)
        original_s, cached_s = per_image_seconds([original, transformed], settings.image_repeats)
        row["per_image_s"] = {"original": original_s, "transformed": cached_s}
        row["speedup"] = original_s / cached_s
    else:
        row["fidelity"] = output_fidelity(original, transformed, calls)
        original_ms, transformed_ms = step_latency_ms(
            [original, transformed], 1, warmup=1, repeats=settings.latency_repeats
        )
        row["step_ms"] = {"original": original_ms, "transformed": transformed_ms}
        row["speedup"] = original_ms / transformed_ms
    if "reconstruction" in result.record:
        row["reconstruction"] = result.record["reconstruction"]
    if "parity" in result.record:
        row["parity_max_rel"] = result.record["parity"]["max_rel"]
        row["external_data"] = bool(result.record.get("external_data"))
    del result, transformed
    return row


def per_image_seconds(models: list, repeats: int) -> list[float]:
    """Median seconds to sample one image, models taking turns; a first round warms up."""
    times = [[] for _ in models]
    for _ in range(repeats + 1):
        for own, model in zip(times, models):
            own.append(accel.sample(model, 1, batch_size=1, progress=False).seconds)
    return [statistics.median(own[1:]) for own in times]


STAGES = ("quantize", "prune", "cache", "export")  # each label starts with its stage's name


def measure_architecture(
    name: str, settings: Settings, work: Path, chosen: tuple[str, ...] = STAGES
) -> dict:
    start = time.perf_counter()
    with PeakMemory() as memory:
        folder, prompts = write_model(name, work, settings)
    written_s = time.perf_counter() - start
    original = accel.load(folder, "cpu", {"steps": settings.steps}, prompts)
    calls = trajectory_calls(original, settings.points)
    rows = []
    for label, run in stages(settings, work, name).items():
        if label.split()[0].rstrip(",") not in chosen:
            continue
        rows.append(measure_row(label, run, original, calls, settings))
        print(f"{name}: {_row_line(rows[-1])}", flush=True)
    return {
        "architecture": name,
        "parameters": sum(p.numel() for p in original.parameters()),
        "sample_shape": list(original.sample_shape),
        "write_s": written_s,
        "write_peak_rss_gib": memory.peak / GIB,
        "rows": rows,
    }


def _row_line(row: dict) -> str:
    if "error" in row:
        return f"{row['stage']}: not run ({row['error']})"
    sqnr = row["fidelity"]["sqnr_db"]
    return (
        f"{row['stage']}: {row['wall_s']:.1f} s, peak {row['peak_rss_gib']:.2f} GiB, "
        f"SQNR {sqnr:.1f} dB, {row['speedup']:.2f}x"
    )


def goals(results: list[dict], wall_s: float | None) -> list[dict]:
    """The issue's goals (full sizes, this machine); a stage not run leaves its goal unmeasured, and
    the whole run's time (``wall_s``) is None unless every stage ran on every architecture."""
    by_name = {r["architecture"]: {row["stage"]: row for row in r["rows"]} for r in results}
    rows = [row for stages_run in by_name.values() for row in stages_run.values()]
    sd15 = by_name.get("sd15-unet", {})

    def of(stage: str) -> list[dict]:
        return [r[stage] for r in by_name.values() if "speedup" in r.get(stage, {})]

    def first(stage: str) -> dict:
        return sd15.get(stage, {})

    exports, prunes = of(EXPORT), of(PRUNE)
    return [
        goal(f"stages failed, of {len(rows)} run", sum("error" in row for row in rows), 0),
        goal(
            "peak RSS, GiB",
            max((r["peak_rss_gib"] for r in rows if "error" not in r), default=None),
            20e9 / GIB,
        ),
        goal("bench.scale minutes", wall_s and wall_s / 60, 90),
        goal(
            "SD1.5 W8A8 calibration-only quantize, minutes",
            _minutes(first(QUANTIZE)),
            20,
        ),
        goal("SD1.5 export, minutes", _minutes(first(EXPORT)), 10),
        goal(
            "fp32 ONNX parity max relative error (worst)",
            max((e["parity_max_rel"] for e in exports), default=None),
            1e-4,
        ),
        goal(
            "ONNX Runtime fp32 vs PyTorch eager, per step (worst)",
            min((e["speedup"] for e in exports), default=None),
            1.0,
            at_least=True,
        ),
        goal(
            "pruned 0.3 vs original, per step (worst)",
            min((p["speedup"] for p in prunes), default=None),
            1.3,
            at_least=True,
        ),
        goal(
            "SD1.5 DeepCache interval 3, less time per image",
            first(CACHE).get("speedup"),
            1.8,
            at_least=True,
        ),
    ]


def _minutes(row: dict) -> float | None:
    return row["wall_s"] / 60 if "wall_s" in row else None


def body(results: dict) -> str:
    lines = []
    for arch in results["architectures"]:
        lines += [
            f"## {arch['architecture']}: {arch['parameters'] / 1e6:.1f}M parameters, samples "
            f"{' x '.join(map(str, arch['sample_shape']))}",
            "",
            f"written in {arch['write_s']:.0f} s (peak {arch['write_peak_rss_gib']:.2f} GiB)",
            "",
            "| stage | wall s | peak RSS GiB | output SQNR dB | relative error | original | "
            "transformed | ratio | parity |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        lines += [_table_row(row) for row in arch["rows"]]
        lines += ["", *_reconstruction_lines(arch["rows"])]
    lines.append(
        "original / transformed: ms per step at batch 1 (one interleaved run), seconds per image "
        "for caching; ratio: original / transformed. SQNR on the original's trajectory calls (the "
        "final samples' for caching)."
    )
    if results["goals"]:
        lines += ["", "## Goals", "", *(f"- {g['line']}" for g in results["goals"])]
    return "\n".join(lines) + "\n"


def _reconstruction_lines(rows: list[dict]) -> list[str]:
    """The W4A8 row's extrapolated reconstruction time, as a sentence."""
    timed = [row["reconstruction"] for row in rows if "reconstruction" in row]
    return [
        f"W4A8 reconstruction: {r['units']} units, the first {r['units_timed']} timed (up to the "
        f"first block): {r['capture_s_per_unit']:.1f} s each to capture inputs and targets, "
        f"{r['block_iteration_s']:.2f} s per iteration of the block; {r['iters']} iterations on "
        f"every unit (Q-Diffusion's) would take about {r['estimated_s'] / 3600:.1f} h here "
        "(the other units taken at the first block's cost per iteration).\n"
        for r in timed
    ]


def _table_row(row: dict) -> str:
    if "error" in row:
        return f"| {row['stage']} | not run: {row['error']} | | | | | | | |"
    fidelity = row["fidelity"]
    times = row.get("step_ms") or row["per_image_s"]
    unit = " ms" if "step_ms" in row else " s"
    parity = f"{row['parity_max_rel']:.1e}" if "parity_max_rel" in row else ""
    return (
        f"| {row['stage']} | {row['wall_s']:.1f} | {row['peak_rss_gib']:.2f} | "
        f"{fidelity['sqnr_db']:.1f} | {fidelity['relative_error']:.2e} | "
        f"{times['original']:.3g}{unit} | {times['transformed']:.3g}{unit} | "
        f"{row['speedup']:.2f}x | {parity} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="CI settings")
    parser.add_argument(
        "--architecture",
        action="append",
        choices=NAMES,
        help="one of them (repeatable; default all)",
    )
    parser.add_argument(
        "--stage", action="append", choices=STAGES, help="one of them (repeatable; default all)"
    )
    parser.add_argument(
        "--work",
        type=Path,
        help="folder for the written models and graphs (default: a temporary one)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="markdown report, a .json beside it (default: full settings to "
        "bench/results/scale_cpu.md; quick ones to bench/scale_quick.md)",
    )
    args = parser.parse_args(argv)
    names, chosen = args.architecture or NAMES, tuple(args.stage or STAGES)
    partial = set(names) != set(NAMES) or set(chosen) != set(STAGES)
    settings, mode = (QUICK, "quick") if args.quick else (FULL, "full")
    out = args.out or (HERE / "scale_quick.md" if args.quick else RESULTS / "scale_cpu.md")
    start = time.perf_counter()
    measured = []
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        for name in names:
            measured.append(measure_architecture(name, settings, Path(work), chosen))
    wall_s = time.perf_counter() - start
    results = {
        "mode": mode,
        "settings": asdict(settings),
        "architectures": measured,
        "goals": goals(measured, None if partial else wall_s) if settings.judged else [],
    }
    command = " ".join(["python -m bench.scale", *(sys.argv[1:] if argv is None else argv)])
    title = f"Real-size architectures, every stage ({mode})"
    print(write_results(out, title, command, start, body(results), results, model="architectures"))


if __name__ == "__main__":
    main()
