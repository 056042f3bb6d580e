"""The built-in reference model ``digits``: a small diffusers UNet2DModel trained on 16x16 digits.

It is small enough to sample 2,000 images at 50 DDIM steps in about 1.5 minutes on 2 CPU cores, and has
what every compression technique acts on: GroupNorm, self-attention at 8x8 and 4x4, skip concatenations in
the decoder, a time embedding. ``train_reference`` reproduces the committed weights (fixed seed, CPU).
"""
from __future__ import annotations

import copy
import json
import math
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from accel.core.checkpoint import load_checkpoint, load_optimizer_state, optimizer_state, save_checkpoint
from accel.core.config import Config
from accel.core.errors import AccelError
from accel.core.files import atomic_dir, ensure_writable_dir
from accel.data import DIGITS_SHAPE, digits_images

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


@dataclass(frozen=True)
class TrainReferenceConfig(Config):
    steps: int = 5000
    batch_size: int = 128
    lr: float = 2e-3
    warmup_steps: int = 200
    ema_decay: float = 0.999
    seed: int = 0
    checkpoint_every: int = 250


def build_reference_unet():
    from diffusers import UNet2DModel

    return UNet2DModel(**UNET_CONFIG)


def build_noise_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(**SCHEDULER_CONFIG)


def _learning_rate(step: int, config: TrainReferenceConfig) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress)))


class _Trainer:
    """Noise-prediction training with an EMA copy, resumable from ``<work>/checkpoint/``."""

    def __init__(self, config: TrainReferenceConfig, work_dir: Path):
        self.config = config
        self.checkpoint_path = work_dir / "checkpoint"
        torch.manual_seed(config.seed)
        self.unet = build_reference_unet()
        self.ema = copy.deepcopy(self.unet).requires_grad_(False)
        self.scheduler = build_noise_scheduler()
        self.optimizer = torch.optim.AdamW(self.unet.parameters(), lr=config.lr, weight_decay=0.0)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.images, _ = digits_images()
        self.step = 0
        self.losses: list[float] = []
        self.elapsed_s = 0.0
        if self.checkpoint_path.exists():
            self._restore()

    def _restore(self) -> None:
        tensors, state = load_checkpoint(self.checkpoint_path)
        if state.get("config") != self.config.to_dict():
            raise AccelError(f"{self.checkpoint_path} was written with other settings; remove it to start over")
        for name, network in (("unet", self.unet), ("ema", self.ema)):
            network.load_state_dict({k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(name + ".")})
        load_optimizer_state(self.optimizer, "optimizer", tensors, state["optimizer"])
        self.generator.set_state(tensors["generator"])
        self.step, self.losses, self.elapsed_s = state["step"], state["losses"], state["elapsed_s"]

    def _save_checkpoint(self) -> None:
        optimizer_tensors, optimizer_json = optimizer_state(self.optimizer, "optimizer")
        tensors = {**{f"unet.{k}": v for k, v in self.unet.state_dict().items()},
                   **{f"ema.{k}": v for k, v in self.ema.state_dict().items()},
                   **optimizer_tensors, "generator": self.generator.get_state()}
        state = dict(config=self.config.to_dict(), optimizer=optimizer_json, step=self.step, losses=self.losses,
                     elapsed_s=self.elapsed_s)
        save_checkpoint(self.checkpoint_path, tensors, state)

    def _train_step(self) -> float:
        config, g = self.config, self.generator
        index = torch.randint(0, len(self.images), (config.batch_size,), generator=g)
        clean = self.images[index]
        noise = torch.randn(clean.shape, generator=g)
        timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, (config.batch_size,), generator=g)
        noisy = self.scheduler.add_noise(clean, noise, timesteps)
        loss = torch.nn.functional.mse_loss(self.unet(noisy, timesteps).sample, noise)
        for group in self.optimizer.param_groups:
            group["lr"] = _learning_rate(self.step, config)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.unet.parameters(), 1.0)
        self.optimizer.step()
        with torch.no_grad():
            for ema_p, p in zip(self.ema.parameters(), self.unet.parameters()):
                ema_p.lerp_(p, 1.0 - config.ema_decay)
        return loss.item()

    def run(self) -> None:
        config = self.config
        with tqdm(total=config.steps, initial=self.step, desc="train digits", unit="step") as bar:
            while self.step < config.steps:
                start = time.perf_counter()
                self.losses.append(self._train_step())
                self.step += 1
                self.elapsed_s += time.perf_counter() - start
                bar.update(1)
                if self.step % 50 == 0:
                    bar.set_postfix(loss=f"{sum(self.losses[-50:]) / 50:.4f}")
                if self.step % config.checkpoint_every == 0 and self.step < config.steps:
                    self._save_checkpoint()

    def record(self) -> dict:
        """The training record committed beside the weights."""
        tenth = max(1, len(self.losses) // 10)
        curve = [sum(self.losses[i:i + tenth]) / len(self.losses[i:i + tenth])
                 for i in range(0, len(self.losses), tenth)]
        import diffusers

        return {
            "config": self.config.to_dict(),
            "unet_config": {k: list(v) if isinstance(v, tuple) else v for k, v in UNET_CONFIG.items()},
            "scheduler_config": SCHEDULER_CONFIG,
            "data": "sklearn load_digits, 1797 images, 8x8 bilinear-upsampled to 16x16, scaled to [-1, 1]",
            "loss_per_tenth_of_training": [round(x, 5) for x in curve],
            "final_loss_mean_last_200": round(sum(self.losses[-200:]) / len(self.losses[-200:]), 5),
            "wall_time_s": round(self.elapsed_s, 1),
            "machine": {"platform": platform.platform(), "processor": platform.machine(),
                        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()},
            "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
            "params": sum(p.numel() for p in self.ema.parameters()),
        }


def train_reference(out_dir: str | Path, config: TrainReferenceConfig = TrainReferenceConfig(),
                    overwrite: bool = False) -> dict:
    """Train the reference model and write it as a diffusers folder (plus ``training.json``) to ``out_dir``.

    A non-empty ``out_dir`` is refused unless ``overwrite``. Work happens in ``<out_dir>.partial``; an
    interrupted run resumes from its last checkpoint there, and ``out_dir`` appears only when training is
    complete.
    """
    out_dir = ensure_writable_dir(out_dir, overwrite)
    work_dir = out_dir.with_name(out_dir.name + ".partial")
    work_dir.mkdir(exist_ok=True)
    trainer = _Trainer(config, work_dir)
    trainer.run()
    record = trainer.record()
    with atomic_dir(out_dir, overwrite) as staging:
        trainer.ema.save_pretrained(staging, safe_serialization=True)
        trainer.scheduler.save_config(staging)
        (staging / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(work_dir)
    return record
