"""TrainConfig: the settings of every training run (the reference model, fine-tuning after pruning,
distillation)."""

from __future__ import annotations

from dataclasses import dataclass

from accel.core.config import Config
from accel.core.stages import Key


@dataclass(frozen=True)
class TrainConfig(Config):
    steps: int = 1000
    batch_size: int = 128  # per process: `accelerate launch` on N devices trains on N x batch_size
    lr: float = 2e-3
    warmup_steps: int = 200  # linear warm-up, then cosine decay to min_lr_ratio x lr
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.0
    ema_decay: float = 0.999  # 0: no EMA (the trained weights themselves are the result)
    grad_clip: float = 1.0  # max global gradient norm; 0: no clipping
    seed: int = 0
    checkpoint_every: int = 250

    def validate(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise self.invalid(name, f"must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise self.invalid("lr", f"must be positive, got {self.lr}")
        if self.warmup_steps < 0:
            raise self.invalid("warmup_steps", f"must be 0 or more, got {self.warmup_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise self.invalid("min_lr_ratio", f"must be between 0 and 1, got {self.min_lr_ratio}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise self.invalid("ema_decay", f"must be in [0, 1), got {self.ema_decay}")
        if self.grad_clip < 0 or self.weight_decay < 0:
            raise self.invalid(
                "grad_clip" if self.grad_clip < 0 else "weight_decay", "must be 0 or more"
            )

    def learning_rate(self, step: int) -> float:
        """Linear warm-up, then cosine decay; a warm-up longer than the run shrinks to end one step
        early (a short fine-tuning run on a budget made for a long one still reaches its peak
        rate)."""
        import math

        warmup = min(self.warmup_steps, max(self.steps - 1, 0))
        if step < warmup:
            return self.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, self.steps - warmup)
        return self.lr * (
            self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
        )


# The keys every training stage shares (prune's fine-tuning, distillation): a "train" role holds its
# TrainConfig, a "data" role its DataConfig
TRAINING_KEYS = {
    "lr": Key("train", "lr"),
    "train-batch": Key("train", "batch_size"),
    "checkpoint-every": Key("train", "checkpoint_every"),
    "data": Key("data", "source"),
    "teacher-samples": Key("data", "teacher_samples"),
}
