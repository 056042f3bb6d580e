"""The pruning benchmark: the criterion/ratio ablation and the pruned model's measured speed, PyTorch and ONNX
Runtime, on this machine.

    python -m bench.prune            # full: 2,000 samples, DDIM 50, 1,000 fine-tuning steps per row
                                     #   -> bench/results/prune_digits_cpu.json and .md
    python -m bench.prune --quick    # CI: a few hundred samples and a few fine-tuning steps, same code

Speed rows time the original and the pruned model (the default recipe: diff-pruning at 0.3) step by step,
interleaved, at batch 1 and at the sampling batch, first in PyTorch, then both exported to fp32 ONNX and run by
ONNX Runtime on the CPU. Fine-tuning does not change the architecture, so the speed rows do not fine-tune.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import accel
from accel.metrics.latency import step_latency_ms
from accel.metrics.quality import fid_setup
from accel.prune.ablation import markdown as ablation_markdown, run_ablation
from accel.prune.config import FINETUNE
from accel.train.data import training_images
from bench.run import write_results

HERE = Path(__file__).parent


@dataclass(frozen=True)
class Settings:
    n: int                  # samples per ablation row
    steps: int              # DDIM steps
    finetune_steps: int
    train_batch: int
    importance_batch: int
    timestep_stride: int
    sampling_batch: int     # samples per call, and the large batch of the speed rows
    repeats: int            # timed calls per model in the speed rows


FULL = Settings(n=2000, steps=50, finetune_steps=FINETUNE.steps, train_batch=FINETUNE.batch_size,
                importance_batch=64, timestep_stride=10, sampling_batch=500, repeats=20)
# CI: under 5 minutes on 2 cores
QUICK = Settings(n=200, steps=20, finetune_steps=30, train_batch=32, importance_batch=16, timestep_stride=50,
                 sampling_batch=200, repeats=5)


def speed_rows(settings: Settings, work: Path) -> list[dict]:
    """Step latency of the original and the pruned model, PyTorch then ONNX Runtime, at batch 1 and the
    sampling batch; each pair timed interleaved in one call."""
    from accel.data import digits_images
    from accel.export.onnx import export_onnx

    original, pruned = accel.load("digits"), accel.load("digits")
    config = accel.PruneConfig(importance_batch=settings.importance_batch, timestep_stride=settings.timestep_stride)
    accel.prune_(pruned, config, digits_images()[0])
    accel.save(pruned, work / "pruned")
    pairs = {"PyTorch fp32": (original, pruned)}
    export_onnx(original, work / "original.onnx")
    export_onnx(accel.load(work / "pruned"), work / "pruned.onnx")
    pairs["ONNX Runtime fp32 (CPU)"] = (accel.load(work / "original.onnx"), accel.load(work / "pruned.onnx"))
    rows = []
    for runtime, models in pairs.items():
        for batch in (1, settings.sampling_batch):
            original_ms, pruned_ms = step_latency_ms(list(models), batch, warmup=3, repeats=settings.repeats)
            rows.append({"runtime": runtime, "batch": batch, "original_ms": original_ms, "pruned_ms": pruned_ms,
                         "speedup": original_ms / pruned_ms})
    return rows


def speed_markdown(rows: list[dict], repeats: int) -> str:
    lines = [f"## Speed: diff-pruning @ 0.3 vs the original (median of {repeats} interleaved calls per model)", "",
             "| runtime | batch | original ms/step | pruned ms/step | speedup |", "|---|---|---|---|---|"]
    lines += [f"| {r['runtime']} | {r['batch']} | {r['original_ms']:.2f} | {r['pruned_ms']:.2f} | "
              f"{r['speedup']:.2f}x |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI settings")
    parser.add_argument("--out", type=Path, help="markdown report, a .json beside it (default: full settings to "
                        "bench/results/prune_digits_cpu.md; quick ones to bench/prune_quick.md)")
    args = parser.parse_args(argv)
    settings, mode = (QUICK, "quick") if args.quick else (FULL, "full")
    out = args.out or (HERE / "prune_quick.md" if args.quick else HERE / "results" / "prune_digits_cpu.md")
    start = time.perf_counter()
    sampling = {"steps": settings.steps}
    original = accel.load("digits", sampling=sampling)
    config = accel.PruneConfig(importance_batch=settings.importance_batch, timestep_stride=settings.timestep_stride)
    train_config = replace(FINETUNE, steps=settings.finetune_steps, batch_size=settings.train_batch,
                           warmup_steps=min(FINETUNE.warmup_steps, settings.finetune_steps // 4))
    ablation = run_ablation(lambda: accel.load("digits", sampling=sampling), training_images(None, original), config,
                            train_config, fid_setup(original.sample_shape), settings.n, seed=0,
                            batch_size=settings.sampling_batch)
    with tempfile.TemporaryDirectory() as work:
        speed = speed_rows(settings, Path(work))
    command = f"python -m bench.prune{' --quick' if args.quick else ''}"
    text = write_results(out, f"Pruning benchmark ({mode})", command, start,
                         ablation_markdown(ablation) + "\n" + speed_markdown(speed, settings.repeats),
                         {"mode": mode, "settings": vars(settings), "ablation": ablation, "speed": speed})
    print(text)


if __name__ == "__main__":
    main()
