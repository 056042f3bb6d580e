"""The quantization ablation (Q-Diffusion's story, measured on this model): W4A8 from the naive recipe to the
full one, one ingredient at a time, plus W8A8. Every row samples the same seeds and initial noise as the
original, with the original's sampler, so FID ratios and PSNR compare like with like."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from accel.calib.collect import CalibConfig
from accel.metrics.digits_cnn import to_uint8
from accel.metrics.quality import FidSetup, psnr_db
from accel.quant import quantize_
from accel.quant.config import QuantConfig
from accel.sampling import DEFAULT_BATCH, sample

NAIVE = dict(w_range="minmax", a_range="minmax", split_shortcut=False, recon_iters=0)


def ablation_configs(full: QuantConfig, calib: CalibConfig) -> list[tuple[str, QuantConfig, CalibConfig]]:
    """(row name, quantization, calibration) from naive W4A8 to ``full``'s recipe, then W8A8 with that recipe."""
    w4a8 = replace(full, w_bits=4, a_bits=8)
    naive = replace(w4a8, **NAIVE)
    last_step, timestep_aware = replace(calib, policy="last"), calib if calib.policy != "last" else CalibConfig()
    mse = replace(naive, w_range=full.w_range, a_range=full.a_range)
    split = replace(mse, split_shortcut=True)
    rows = [("W4A8 naive (min/max, last-step calibration)", naive, last_step),
            ("+ timestep-aware calibration", naive, timestep_aware),
            ("+ MSE-searched ranges", mse, timestep_aware),
            ("+ split shortcut", split, timestep_aware)]
    if full.recon_iters:
        rows.append((f"+ reconstruction ({full.recon_iters} iters/block)",
                     replace(split, recon_iters=full.recon_iters), timestep_aware))
    rows.append(("W8A8 (same recipe)", replace(rows[-1][1], w_bits=8), timestep_aware))
    return rows


def run_ablation(load_original, calib_for, full: QuantConfig, calib: CalibConfig, fid: FidSetup, n: int,
                 seed: int, batch_size: int = DEFAULT_BATCH, progress: bool = True) -> dict:
    """``load_original()`` gives a fresh full-precision denoiser; ``calib_for(calib_config)`` its calibration set."""
    original = load_original()
    original_images = to_uint8(sample(original, n, seed, batch_size=batch_size, progress=progress).images)
    original_fid = fid.scores(original_images)["fid"]
    rows = []
    for name, config, calib_config in ablation_configs(full, calib):
        model = load_original()
        quantize_(model, config, calib_for(calib_config), progress=progress)
        images = to_uint8(sample(model, n, seed, batch_size=batch_size, progress=progress).images)
        score = fid.scores(images)["fid"]
        rows.append({"name": name, "config": config.to_dict(), "calibration": calib_config.to_dict(), "fid": score,
                     "fid_ratio": None if score is None or not original_fid else score / original_fid,
                     "psnr_db": psnr_db(original_images, images)})
    return {"samples": n, "sampler": original.sampling.to_dict(), "seed": seed, "original_fid": original_fid,
            "rows": rows}


def markdown(ablation: dict) -> str:
    lines = [f"## Ablation ({ablation['samples']} samples, {ablation['sampler']['name']} "
             f"{ablation['sampler']['steps']} steps, seed {ablation['seed']}; original FID "
             f"{_fmt(ablation['original_fid'])})", "", "| recipe | FID | FID ratio | PSNR to original (dB) |",
             "|---|---|---|---|"]
    lines += [f"| {r['name']} | {_fmt(r['fid'])} | {_fmt(r['fid_ratio'])} | {_fmt(r['psnr_db'])} |"
              for r in ablation["rows"]]
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}" if np.isfinite(value) else "inf"
