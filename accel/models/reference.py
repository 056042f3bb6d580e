"""The built-in reference model ``digits``: a small diffusers UNet2DModel trained on 16x16 digits.

It is small enough to sample 2,000 images at 50 DDIM steps in about 1.5 minutes on 2 CPU cores, and
has what every compression technique acts on: GroupNorm, self-attention at 8x8 and 4x4, skip
concatenations in the decoder, a time embedding. ``train_reference`` retrains it with the committed
settings (fixed seed); the weights match the committed ones only on the same machine and library
versions.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path

import torch

from accel.core.files import atomic_dir, ensure_writable_dir
from accel.core.processes import current_processes
from accel.data import DIGITS_SHAPE, digits_images
from accel.train import NoisePrediction, TrainConfig, loss_curve, train

REFERENCE_DIR = Path(__file__).parent / "digits"

UNET_CONFIG = dict(
    sample_size=DIGITS_SHAPE[1],
    in_channels=DIGITS_SHAPE[0],
    out_channels=DIGITS_SHAPE[0],
    layers_per_block=1,
    block_out_channels=(24, 48, 96),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
    attention_head_dim=16,
)

# The cosine schedule keeps more signal at high noise than the linear one, which matters at 16x16.
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_schedule="squaredcos_cap_v2",
    prediction_type="epsilon",
    clip_sample=True,
)


# The committed weights: 5,000 steps of batch 128, AdamW at 2e-3 with 200 warm-up steps and EMA
# 0.999.
REFERENCE_TRAINING = TrainConfig(
    steps=5000, batch_size=128, lr=2e-3, warmup_steps=200, ema_decay=0.999, checkpoint_every=250
)


def build_reference_unet():
    from diffusers import UNet2DModel

    return UNet2DModel(**UNET_CONFIG)


def build_noise_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(**SCHEDULER_CONFIG)


def _record(config: TrainConfig, result) -> dict:
    """The training record committed beside the weights."""
    import diffusers

    return {
        "config": config.to_dict(),
        "unet_config": {k: list(v) if isinstance(v, tuple) else v for k, v in UNET_CONFIG.items()},
        "scheduler_config": SCHEDULER_CONFIG,
        "data": "sklearn load_digits, 1797 images, 8x8 "
        "bilinear-upsampled to 16x16, scaled to [-1, 1]",
        "loss_per_tenth_of_training": loss_curve(result.losses),
        "final_loss_mean_last_200": round(sum(result.losses[-200:]) / len(result.losses[-200:]), 5),
        "wall_time_s": round(result.elapsed_s, 1),
        "processes": result.processes,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
        "params": sum(p.numel() for p in result.network.parameters()),
    }


def train_reference(
    out_dir: str | Path,
    config: TrainConfig = REFERENCE_TRAINING,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Train the reference model with accel's training loop and write it as a diffusers folder (plus
    ``training.json``) to ``out_dir``.

    A non-empty ``out_dir`` is refused unless ``overwrite``. Work happens in ``<out_dir>.partial``;
    an interrupted run resumes from its last checkpoint there, and ``out_dir`` appears only when
    training is complete. Under ``accelerate launch`` every process trains and the main one writes.
    """
    out_dir = ensure_writable_dir(out_dir, overwrite)
    work_dir = out_dir.with_name(out_dir.name + ".partial")
    work_dir.mkdir(exist_ok=True)
    torch.manual_seed(config.seed)
    unet = build_reference_unet()
    images, _ = digits_images()
    task = NoisePrediction(images, SCHEDULER_CONFIG)
    result = train(
        unet,
        task,
        config,
        work_dir,
        run={"job": "train-reference", "config": config.to_dict()},
        forward_of=lambda module: lambda x, t, cond: module(x, t).sample,
        desc="train digits",
        progress=progress,
    )
    record = _record(config, result)
    if current_processes().is_main:
        with atomic_dir(out_dir, overwrite) as staging:
            result.network.save_pretrained(staging, safe_serialization=True)
            build_noise_scheduler().save_config(staging)
            (staging / "training.json").write_text(json.dumps(record, indent=2) + "\n")
        shutil.rmtree(work_dir)
    return record
