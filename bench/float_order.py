"""How far the float order moves a quantized model: ``accel quantize`` from a calibration set and
from the same set with the last mantissa bit of half its values set at random (at most 1.2e-7
relative, the size of what another CPU's float32 kernels change), side by side.

    python -m bench.float_order             # W4A8 and W8A8 on digits
                                            #   -> bench/results/float_order_digits_cpu.json and .md
    python -m bench.float_order --quick     # CI: 4 calibration trajectories

Rows per recipe (the command's defaults): the weight codes and static activation scales that differ
between the two models, and each model's relative eps error per step against the original on
held-out inputs (a calibration set of another seed). Where the codes differ widely while the error
does not, the two models are equally close twins: a FID ratio that tells them apart is the draw's.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import accel
from accel.calib.collect import CalibConfig, CalibrationSet, calibrate
from accel.quant.layers import QuantLayer, activation_quantizers
from accel.report import table
from bench.common import HERE, RESULTS, write_results
from bench.spread import RECIPES

HELD_OUT_SEED = 7
COLUMNS = {
    "recipe": "recipe",
    "codes_changed_pct": "weight codes changed (%)",
    "scales_changed": "activation scales changed",
    "scale_change_max": "largest scale change (relative)",
    "error": "eps error per step",
    "error_nudged": "eps error per step, nudged set",
}


@dataclass(frozen=True)
class Settings:
    calib_samples: int
    held_out_samples: int


FULL = Settings(calib_samples=64, held_out_samples=32)
QUICK = Settings(calib_samples=4, held_out_samples=2)


def nudged(calib: CalibrationSet, seed: int = 0) -> CalibrationSet:
    """``calib`` with the last mantissa bit of its inputs set at random (half of them change)."""
    x = calib.x.clone()
    generator = torch.Generator().manual_seed(seed)
    x.view(torch.int32).bitwise_xor_(
        torch.randint(0, 2, x.shape, generator=generator, dtype=torch.int32)
    )
    return CalibrationSet(x, calib.t, calib.cond, calib.meta)


@torch.no_grad()
def eps_error(original, model, held_out: CalibrationSet) -> float:
    """sqrt(sum |eps_q - eps|^2 / sum |eps|^2) over the held-out inputs."""
    error = total = 0.0
    for x, t, cond in held_out.batches(64):
        reference = original(x, t, original.to_model(cond))
        error += float(((model(x, t, model.to_model(cond)) - reference) ** 2).sum())
        total += float((reference**2).sum())
    return (error / total) ** 0.5


def differences(first, second) -> dict:
    """The weight codes and activation scales that differ between two quantized models."""
    layers = [
        (a, b)
        for a, b in zip(first.module.modules(), second.module.modules())
        if isinstance(a, QuantLayer)
    ]
    codes = [(ca, cb) for a, b in layers for ca, cb in zip(a.weight_codes(), b.weight_codes())]
    changed = sum(int((ca != cb).sum()) for ca, cb in codes)
    scales = [
        float(((qa.scale - qb.scale).abs() / qa.scale.abs()).max())
        for qa, qb in zip(activation_quantizers(first.module), activation_quantizers(second.module))
    ]
    return {
        "codes_changed_pct": 100 * changed / sum(ca.numel() for ca, _ in codes),
        "scales_changed": f"{sum(change > 0 for change in scales)} of {len(scales)}",
        "scale_change_max": max(scales, default=0.0),
    }


def calibration_files(original, settings: Settings, work: Path) -> tuple:
    """The recorded calibration set and its nudged twin (files the quantize stage reads), and the
    held-out inputs the error is measured on."""
    recorded = work / "recorded.safetensors"
    calib = calibrate(
        original, CalibConfig(samples=settings.calib_samples), recorded, progress=False
    )
    twin = work / "nudged.safetensors"
    nudged(calib).save(twin)
    held_out = CalibConfig(samples=settings.held_out_samples, seed=HELD_OUT_SEED)
    return (
        recorded,
        twin,
        calibrate(original, held_out, work / "held-out.safetensors", progress=False),
    )


def recipe_row(
    recipe: str, original, calib_files: tuple[Path, Path], held_out, settings: Settings
) -> dict:
    """``recipe`` quantized from each calibration file, the two models compared."""
    models = [
        accel.run_stage(
            "quantize",
            original,
            calib=str(path),
            calib_samples=settings.calib_samples,
            progress=False,
            **RECIPES[recipe],
        ).model
        for path in calib_files
    ]
    return {
        "recipe": recipe,
        **differences(*models),
        "error": eps_error(original, models[0], held_out),
        "error_nudged": eps_error(original, models[1], held_out),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="CI settings")
    parser.add_argument("--out", type=Path, help="markdown report (a .json beside it)")
    args = parser.parse_args(argv)
    settings, mode = (QUICK, "quick") if args.quick else (FULL, "full")
    out = args.out or (
        HERE / "float_order_quick.md" if args.quick else RESULTS / "float_order_digits_cpu.md"
    )
    start = time.perf_counter()
    original = accel.load("digits")
    with tempfile.TemporaryDirectory() as work:
        recorded, twin, held_out = calibration_files(original, settings, Path(work))
        rows = [
            recipe_row(recipe, original, (recorded, twin), held_out, settings) for recipe in RECIPES
        ]
    results = {"mode": mode, "settings": vars(settings), "rows": rows}
    body = (
        f"## Recorded against nudged calibration set ({settings.calib_samples} trajectories; "
        f"error on {settings.held_out_samples} held-out trajectories, seed {HELD_OUT_SEED})\n\n"
        f"{table(COLUMNS, rows)}\n"
    )
    command = f"python -m bench.float_order{' --quick' if args.quick else ''}"
    print(write_results(out, f"Float order ({mode})", command, start, body, results))


if __name__ == "__main__":
    main()
