"""accel against its peers at the same widths: NVIDIA Model Optimizer, optimum-quanto and torchao,
each with its documented defaults (bench/peer_recipes.py), on a built-in model.

    python -m bench.peers                  # digits, 2,000 samples, DDIM 50
                                           #   -> bench/results/peers_digits_cpu.md, .json
    python -m bench.peers --model digits-dit --samples 1000
    python -m bench.peers --quick          # a smoke run: 32 samples, DDIM 6

The peers install with ``pip install -e '.[peers]'``; a peer that is not installed is left out and
the report says so. Rows: accel's W8A8 and W4A8 (``accel quantize`` with the command's defaults),
its dynamic W8A8 with and without a calibration set (ACCEL_RECIPES), and every peer recipe beside
the accel rows of its widths, all sampled by accel's sampler from the same seed and noise beside
the original in one run. Time to quantize counts recording the
calibration set wherever one is used: accel records its own; the peers that calibrate share one
recording of the same size, whose time is added to each. Size is what is stored: accel's packed
weights file, ``torch.save`` of a peer's state dict, or for a fake-quantized peer (Model Optimizer
keeps float weights in PyTorch until a TensorRT build) its weights at its quantizers' widths.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import accel
from accel.calib.collect import CalibConfig, calibrate
from accel.evaluate import evaluate_many
from accel.quant.layers import QuantLayer
from accel.report import table
from bench.common import (
    goal,
    one_model_args,
    one_model_output,
    quality_row,
    reference_model,
    write_results,
)
from bench.peer_recipes import RECIPES, nominal_bytes, saved_bytes, versions

MODELS = ("digits", "digits-dit")


@dataclass(frozen=True)
class AccelRecipe:
    widths: str
    scales: str  # of the activations: "static" (calibrated) or "dynamic" (per token, at run time)
    keys: dict  # the quantize stage's settings, as ``accel quantize`` flags give them
    variant: str = ""  # named after the label where one widths and scales have two recipes

    @property
    def label(self) -> str:
        scales = " dynamic" if self.scales == "dynamic" else ""
        return f"accel {self.widths}{scales}" + (f", {self.variant}" if self.variant else "")


DYNAMIC_W8A8 = {"bits": 8, "act_bits": 8, "dynamic_act": True}
ACCEL_RECIPES = (
    AccelRecipe("W8A8", "static", {"bits": 8, "act_bits": 8}),
    # torchao's scheme: `accel quantize --bits 8 --act-bits 8 --dynamic-act`
    AccelRecipe("W8A8", "dynamic", DYNAMIC_W8A8),
    # ... as torchao runs it, from the weights alone: no calibration set (no bias correction),
    # per-channel absmax weight ranges (no MSE search)
    AccelRecipe(
        "W8A8",
        "dynamic",
        {**DYNAMIC_W8A8, "no_bias_correction": True, "range": "minmax"},
        variant="data-free",
    ),
    AccelRecipe("W4A8", "static", {"bits": 4, "act_bits": 8}),
)
COLUMNS = {
    "name": "recipe",
    "widths": "widths",
    "scales": "activation scales",
    "layers": "layers quantized",
    "quantize_s": "quantize (s)",
    "size_mb": "size (MB)",
    "size_kind": "size as",
    "fid": "FID",
    "fid_ratio": "FID ratio",
    "psnr_db": "PSNR to original (dB)",
    "feature_distance": "feature distance to original",
    "seconds_per_image": "time/image (s)",
}


@dataclass(frozen=True)
class Settings:
    n: int
    steps: int | None  # the sampler's (None: the model's own, DDIM 50)
    calib_samples: int | None  # None: the command's default
    batch_size: int


FULL = Settings(n=2000, steps=None, calib_samples=None, batch_size=500)
QUICK = Settings(n=32, steps=6, calib_samples=4, batch_size=32)


@dataclass
class Quantized:
    """One row's model before it is sampled."""

    name: str
    widths: str
    scales: str
    model: object  # a Denoiser
    seconds: float
    layers: int
    size_kind: str
    calibrates: bool  # ran a calibration set through the network
    packs_weights: bool = True


def _accel(name: str, recipe: AccelRecipe, settings: Settings, seed: int, work: Path) -> Quantized:
    """``accel quantize`` with the command's defaults beside ``recipe``'s flags, recording its own
    calibration set."""
    keys = {} if settings.calib_samples is None else {"calib_samples": settings.calib_samples}
    original = reference_model(name, settings.steps)  # loaded outside the time, as for the peers
    start = time.perf_counter()
    result = accel.run_stage(
        "quantize",
        original,
        seed=seed,
        calib=str(work / f"calib-{recipe.label}.safetensors"),
        progress=False,
        **recipe.keys,
        **keys,
    )
    seconds = time.perf_counter() - start
    layers = sum(isinstance(m, QuantLayer) for m in result.model.module.modules())
    calibrates = "calibration" in result.record
    # fake-quantized in PyTorch like Model Optimizer; its integer speed is bench.ort_int8's
    return Quantized(
        recipe.label,
        recipe.widths,
        recipe.scales,
        result.model,
        seconds,
        layers,
        "packed file",
        calibrates,
        packs_weights=False,
    )


def _peer(recipe, name: str, settings: Settings, calib, calib_s: float) -> Quantized:
    model = reference_model(name, settings.steps)
    start = time.perf_counter()
    recipe.apply(model.module, lambda: calib.run_through(model, recipe.label, progress=False))
    seconds = time.perf_counter() - start + (calib_s if recipe.calibrates else 0.0)
    # an inference model: torch's FLOP counter (the evaluation's MACs) hooks every input that
    # requires grad, and fails on Model Optimizer's weight quantizers (a leaf without grad_fn)
    model.module.requires_grad_(False)
    packed = recipe.packs_weights
    # the evaluation reports this size (its own measure reads accel's layers only)
    model.weights_bytes = saved_bytes(model.module) if packed else nominal_bytes(model.module)
    kind = "torch.save" if packed else "at its widths (fake-quantized)"
    layers = recipe.quantized_layers(model.module)
    return Quantized(
        recipe.label,
        recipe.widths,
        recipe.scales,
        model,
        seconds,
        layers,
        kind,
        recipe.calibrates,
        packed,
    )


def _calibration(name: str, settings: Settings, seed: int, work: Path):
    """The peers' calibration set: the size accel's own defaults record, and its seconds."""
    config = CalibConfig(samples=settings.calib_samples or CalibConfig().samples, seed=seed)
    start = time.perf_counter()
    calib = calibrate(
        reference_model(name, settings.steps), config, work / "peers.safetensors", progress=False
    )
    return calib, time.perf_counter() - start


def quantized_rows(name: str, settings: Settings, seed: int, work: Path) -> list[Quantized]:
    """accel's W8A8 rows then the peers at 8 bits, accel's W4A8 then the peers at 4-bit weights."""
    calib, calib_s = _calibration(name, settings, seed, work)
    rows = []
    for widths in ("W8A8", "W4A8"):
        rows += [_accel(name, r, settings, seed, work) for r in ACCEL_RECIPES if r.widths == widths]
        rows += [
            _peer(recipe, name, settings, calib, calib_s)
            for recipe in RECIPES
            if recipe.widths == widths and recipe.available()
        ]
    return rows


def run_rows(name: str, settings: Settings, seed: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as work:
        quantized = quantized_rows(name, settings, seed, Path(work))
    evaluations = evaluate_many(
        [reference_model(name, settings.steps)] + [q.model for q in quantized],
        accel.EvalConfig(n=settings.n, seed=seed, batch_size=settings.batch_size),
        command="bench",
        model_name=name,
    )
    return [
        {
            "name": q.name,
            "widths": q.widths,
            "scales": q.scales,
            "layers": q.layers,
            "quantize_s": q.seconds,
            "calibrates": q.calibrates,
            "size_kind": q.size_kind,
            "packs_weights": q.packs_weights,
            **quality_row(e.report),
            "size_ratio": e.report.compressed.size_bytes / e.report.original.size_bytes,
            "seconds_per_image": e.report.compressed.sampling_s_per_image,
            "original_seconds_per_image": e.report.original.sampling_s_per_image,
        }
        for q, e in zip(quantized, evaluations)
    ]


def _compared(peer: dict, own: dict) -> bool:
    """Same widths means the same layers too: a peer that leaves layers float (torchao's default
    filter takes nn.Linear only, not the convolutions) is not measured against accel."""
    return peer["layers"] >= own["layers"]


def _own(rows: list[dict], peer: dict) -> list[dict]:
    """accel's rows a peer is measured against: same widths and the same kind of activation scales
    where accel has them, else accel's static rows of those widths."""
    own = [r for r in rows if r["name"].startswith("accel ") and r["widths"] == peer["widths"]]
    same = [r for r in own if _scales(r) == _scales(peer)]
    return same or [r for r in own if _scales(r) == "static"]


def _scales(row: dict) -> str:
    return row.get("scales", "static")  # rows written before accel had dynamic scales


def _calibrates(row: dict) -> bool:
    return row.get("calibrates", True)  # rows written before the key: accel's all calibrated


def goals(rows: list[dict]) -> list[dict]:
    """accel's FID ratio at most each peer's at the same widths and kind of activation scales
    (where the peer quantizes as many layers); the quantize time of each accel 8-bit row within 2x
    of the fastest 8-bit peer's of its kind (calibrated or not)."""
    peers = [r for r in rows if not r["name"].startswith("accel ")]
    out = [
        goal(f"{own['name']}'s FID ratio, against {p['name']}'s", own["fid_ratio"], p["fid_ratio"])
        for p in peers
        for own in _own(rows, p)
        if _compared(p, own)
    ]
    for own in (r for r in rows if r["name"].startswith("accel ") and r["widths"] == "W8A8"):
        kind = [p for p in peers if p["widths"] == "W8A8" and _calibrates(p) == _calibrates(own)]
        if kind:
            fastest = min(kind, key=lambda p: p["quantize_s"])
            out.append(
                goal(
                    f"{own['name']}'s quantize time (s), against 2x the fastest such 8-bit "
                    f"peer's ({fastest['name']}, {fastest['quantize_s']:.1f} s)",
                    own["quantize_s"],
                    2 * fastest["quantize_s"],
                )
            )
    return out


def not_compared(rows: list[dict]) -> list[str]:
    peers = (p for p in rows if not p["name"].startswith("accel "))
    return [
        f"{p['name']}: quantizes {p['layers']} layers, accel {own['layers']}; its FID is not "
        "measured against accel's"
        for p in peers
        if not _compared(p, own := _own(rows, p)[0])
    ]


def body(results: dict) -> str:
    settings, rows = results["settings"], results["rows"]
    installed = ", ".join(f"{d} {v or 'not installed'}" for d, v in results["peers"].items())
    lines = [
        f"Peers: {installed}.",
        "",
        f"## Rows ({settings['n']} samples, DDIM {settings['steps'] or 50}, seed "
        f"{results['seed']}; original's FID {rows[0]['original_fid']:.2f}, "
        f"{rows[0]['original_seconds_per_image']:.3f} s/image)",
        "",
        table(COLUMNS, rows),
    ]
    if results["goals"]:
        lines += ["", "## Goals", ""] + [f"- {g['line']}" for g in results["goals"]]
        lines += [f"- Not compared: {line}" for line in not_compared(rows)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = one_model_args(__doc__, MODELS, FULL.n, argv)
    settings, mode = (QUICK, "quick") if args.quick else (FULL, "full")
    settings = replace(settings, n=args.samples or settings.n)
    out, command = one_model_output("peers", args)
    start = time.perf_counter()
    rows = run_rows(args.model, settings, args.seed)
    results = {
        "mode": mode,
        "model": args.model,
        "settings": vars(settings),
        "seed": args.seed,
        "peers": versions(),
        "rows": rows,
        "goals": [] if args.quick else goals(rows),  # a quick run's FID says nothing
    }
    print(
        write_results(
            out, f"Peers ({mode})", command, start, body(results), results, args.model
        )  # fmt: skip
    )


if __name__ == "__main__":
    main()
