"""The pruning ablation (Diff-Pruning's Table 1, measured on this model): every criterion at the same ratio and the
same fine-tuning budget, then the default criterion at other ratios. Every row samples the same seeds and
initial noise as the original with the original's sampler, and times its step against the original's at the
same batch, interleaved."""
from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from accel.metrics.digits_cnn import to_uint8
from accel.metrics.latency import step_latency_ms
from accel.metrics.quality import FidSetup, psnr_db
from accel.metrics.size import count_macs, count_params
from accel.prune import prune_
from accel.prune.config import CRITERIA, DISTILL_WEIGHT, PruneConfig
from accel.prune.finetune import finetune
from accel.sampling import sample
from accel.train import TrainConfig
from accel.train.data import TrainingImages

RATIOS = (0.2, 0.3, 0.5)


def ablation_configs(config: PruneConfig) -> list[tuple[str, PruneConfig]]:
    rows = [(f"{criterion} @ {config.ratio:g}", replace(config, criterion=criterion)) for criterion in CRITERIA]
    rows += [(f"{config.criterion} @ {ratio:g}", replace(config, ratio=ratio)) for ratio in RATIOS
             if ratio != config.ratio]
    return rows


def run_ablation(load_original, images: TrainingImages, config: PruneConfig, train_config: TrainConfig | None,
                 fid: FidSetup, n: int, seed: int, batch_size: int, distill_weight: float = DISTILL_WEIGHT,
                 progress: bool = True) -> dict:
    """``load_original()`` gives a fresh copy of the model being pruned; ``train_config`` None: no fine-tuning."""
    original = load_original()
    original_images = to_uint8(sample(original, n, seed, batch_size=batch_size, progress=progress).images)
    original_fid = fid.scores(original_images)["fid"]
    rows = []
    for name, row_config in ablation_configs(config):
        start = time.perf_counter()
        model = load_original()
        record = prune_(model, row_config, images.images)
        if train_config is not None:
            with tempfile.TemporaryDirectory() as work:
                finetune(model, original, images, train_config, Path(work), {"ablation": name}, distill_weight,
                         progress)
        pruned_images = to_uint8(sample(model, n, seed, batch_size=batch_size, progress=progress).images)
        score = fid.scores(pruned_images)["fid"]
        original_ms, pruned_ms = step_latency_ms([original, model], batch_size, warmup=2, repeats=5)
        rows.append({"name": name, "config": row_config.to_dict(), "fid": score,
                     "fid_ratio": None if score is None or not original_fid else score / original_fid,
                     "psnr_db": psnr_db(original_images, pruned_images),
                     "macs_ratio": count_macs(model) / count_macs(original),
                     "params_ratio": count_params(model) / count_params(original),
                     "step_speedup": original_ms / pruned_ms,
                     "importance_timesteps": record["importance"].get("timesteps"),
                     "wall_s": time.perf_counter() - start})
    return {"samples": n, "sampler": original.sampling.to_dict(), "seed": seed, "original_fid": original_fid,
            "latency_batch": batch_size, "finetune": train_config and train_config.to_dict(),
            "data": images.describe(), "distill_weight": distill_weight, "rows": rows}


def markdown(ablation: dict) -> str:
    steps = ablation["finetune"]["steps"] if ablation["finetune"] else 0
    lines = [f"## Pruning ablation ({ablation['samples']} samples, {ablation['sampler']['name']} "
             f"{ablation['sampler']['steps']} steps, seed {ablation['seed']}; original FID "
             f"{_fmt(ablation['original_fid'])}; each row fine-tuned {steps} steps on {ablation['data']})", "",
             "| criterion @ ratio | FID | FID ratio | PSNR to original (dB) | MACs ratio | params ratio | "
             f"step speedup (batch {ablation['latency_batch']}) |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {_fmt(r['fid'])} | {_fmt(r['fid_ratio'])} | {_fmt(r['psnr_db'])} | "
              f"{_fmt(r['macs_ratio'])} | {_fmt(r['params_ratio'])} | {_fmt(r['step_speedup'])} |"
              for r in ablation["rows"]]
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}" if np.isfinite(value) else "inf"
