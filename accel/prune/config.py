"""PruneConfig: how many channels go, chosen by which importance criterion. Frozen; round-trips to
JSON."""

from __future__ import annotations

from dataclasses import dataclass

from accel.core.config import Config, one_of
from accel.train.config import TrainConfig

CRITERIA = ("random", "magnitude", "taylor", "diff-pruning")


@dataclass(frozen=True)
class PruneConfig(Config):
    # fraction of each coupled channel group (and of each attention's heads) removed
    ratio: float = 0.3
    criterion: str = one_of("diff-pruning", CRITERIA)
    # Diff-Pruning: gradients accumulate from t = 0 upward until the loss falls below threshold x
    # its running maximum (0.05: the paper's CIFAR-10 runs; 0 accumulates every timestep of the
    # grid)
    threshold: float = 0.05
    round_to: int = 8  # kept widths are multiples of this (tensor cores want multiples of 8)
    importance_batch: int = 64  # images per gradient pass (Diff-Pruning: one batch of 128)
    # gradient passes at t = 0, stride, 2 x stride, ... (Diff-Pruning steps through every t; a
    # stride of 10 sees the same curve at a tenth of the cost)
    timestep_stride: int = 10
    seed: int = 0

    def validate(self) -> None:
        if not 0.0 < self.ratio < 1.0:
            raise self.invalid("ratio", f"must be between 0 and 1 (exclusive), got {self.ratio}")
        if not 0.0 <= self.threshold < 1.0:
            raise self.invalid("threshold", f"must be in [0, 1), got {self.threshold}")
        if self.round_to < 1:
            raise self.invalid("round_to", f"must be at least 1, got {self.round_to}")
        if self.importance_batch < 1:
            raise self.invalid(
                "importance_batch", f"must be at least 1, got {self.importance_batch}"
            )
        if self.timestep_stride < 1:
            raise self.invalid("timestep_stride", f"must be at least 1, got {self.timestep_stride}")

    @property
    def needs_gradients(self) -> bool:
        return self.criterion in ("taylor", "diff-pruning")


# Fine-tuning after pruning: half the reference's peak learning rate, a short warm-up, EMA 0.999
# (with warm-up); 1,000 steps is 20% of the reference's training (Diff-Pruning fine-tunes for 10-20%
# of the original's). On digits at 0.3, 1,000 steps: lr 5e-4 gave FID ratio 1.28, 1e-3 gave 1.00
# (2,000 samples, DDIM 50).
FINETUNE = TrainConfig(
    steps=1000, batch_size=128, lr=1e-3, warmup_steps=50, ema_decay=0.999, checkpoint_every=100
)


@dataclass(frozen=True)
class FinetuneConfig(Config):
    """How the pruned model recovers: its training steps (the rest of the budget is ``FINETUNE``)
    and, on images, the weight of the original's eps as a second target beside the DDPM loss
    (accel/prune/finetune.py)."""

    steps: int = FINETUNE.steps  # 0: no fine-tuning
    distill_weight: float = 1.0  # 0: the DDPM loss alone, as Diff-Pruning
    # class models with a null class: the share of training labels replaced by the null class, so
    # the pruned model keeps the unconditional model guidance needs (0.1, as DiT trains)
    label_dropout: float = 0.1

    def validate(self) -> None:
        if not 0.0 <= self.label_dropout < 1.0:
            raise self.invalid("label_dropout", f"must be in [0, 1), got {self.label_dropout}")
        if self.steps < 0:
            raise self.invalid("steps", f"must be 0 (no fine-tuning) or more, got {self.steps}")
        if self.distill_weight < 0:
            raise self.invalid("distill_weight", f"must be 0 or more, got {self.distill_weight}")
