"""DistillConfig: which step distillation, to how many sampling steps, with which student
parameterization. Frozen; round-trips to JSON. The training budgets (``PROGRESSIVE``,
``CONSISTENCY``) are TrainConfigs."""

from __future__ import annotations

from dataclasses import dataclass

from accel.core.config import Config, one_of
from accel.core.errors import ConfigError
from accel.core.sampling_spec import PREDICTION_TYPES
from accel.train.config import TrainConfig

METHODS = ("progressive", "consistency")
LOSSES = ("pseudo-huber", "l2")
MAX_STEPS = 64


@dataclass(frozen=True)
class DistillConfig(Config):
    method: str = one_of("progressive", METHODS)
    steps: int = 4  # the student's sampling steps (progressive: a power of two)
    # what the student's network outputs. v (Salimans & Ho 2022): x0 = alpha z - sigma v stays
    # bounded where alpha -> 0, while eps gives x0 = (z - sigma eps) / alpha, which a 1-4 step
    # sampler's first step (t = 999, alpha = 5e-5 on digits' cosine schedule) blows up by 2e4
    # (bench.distill's parameterization rows)
    prediction_type: str = one_of("v_prediction", PREDICTION_TYPES)
    # progressive: the first stage's teacher runs DDIM at this many steps; each stage halves it
    teacher_steps: int = 32
    # consistency: the teacher's DDIM solver jumps this many training timesteps (LCM: 1000 / 50 =
    # 20)
    solver_skip: int = 20
    target_ema: float = 0.95  # consistency: EMA of the target network (CM and LCM: 0.95)
    loss: str = one_of("pseudo-huber", LOSSES)  # consistency: iCT's pseudo-Huber, or plain L2
    # guidance distillation (Meng et al. 2023): the student takes the guidance weight w as input
    # for w in [low, high] and computes the teacher's guided output in one call. None: the student
    # learns the teacher's own guidance (its sampler's weight) baked in
    guidance_range: tuple[float, ...] | None = None
    # class models with a null class: the share of training labels replaced by the null class, so
    # the student keeps the unconditional model and is sampled with two-call guidance (the
    # alternative to a w input; 0.1 as DiT's training)
    label_dropout: float = 0.0
    seed: int = 0

    def validate(self) -> None:
        if not 1 <= self.steps <= MAX_STEPS:
            raise self.invalid("steps", f"must be between 1 and {MAX_STEPS}, got {self.steps}")
        if self.method == "progressive" and not _power_of_two(self.steps):
            raise self.invalid(
                "steps",
                f"must be a power of two for progressive distillation (each stage halves "
                f"the steps), got {self.steps}",
            )
        if self.method == "progressive" and (
            not _power_of_two(self.teacher_steps)
            or not 2 * self.steps <= self.teacher_steps <= 2 * MAX_STEPS
        ):
            raise self.invalid(
                "teacher_steps",
                f"must be a power of two from 2 x steps ({2 * self.steps}) to "
                f"{2 * MAX_STEPS}, got {self.teacher_steps}",
            )
        if not 1 <= self.solver_skip <= 500:
            raise self.invalid(
                "solver_skip", f"must be between 1 and 500 timesteps, got {self.solver_skip}"
            )
        if not 0.0 <= self.target_ema < 1.0:
            raise self.invalid("target_ema", f"must be in [0, 1), got {self.target_ema}")
        if self.guidance_range is not None:
            _check_range(self, self.guidance_range)
        if not 0.0 <= self.label_dropout < 1.0:
            raise self.invalid("label_dropout", f"must be in [0, 1), got {self.label_dropout}")
        if self.label_dropout and self.guidance_range is not None:
            raise self.invalid(
                "label_dropout",
                "keeps the null class for two-call guidance; a student with a guidance range "
                "takes w instead (give one or the other)",
            )

    def stages(self) -> list[int]:
        """Progressive: the student's step count at each stage (teacher_steps / 2, / 4, ... down to
        steps)."""
        stages, steps = [], self.teacher_steps // 2
        while steps >= self.steps:
            stages.append(steps)
            steps //= 2
        return stages


def _check_range(config: DistillConfig, weights: tuple[float, ...]) -> None:
    if len(weights) != 2:
        raise config.invalid("guidance_range", f"must be two weights, low,high, got {weights}")
    low, high = weights
    if low < 1:
        raise config.invalid(
            "guidance_range", f"must start at 1 (no guidance) or more, got {low:g}"
        )
    if low >= high:
        raise config.invalid(
            "guidance_range",
            f"must be low,high with low < high, got {low:g},{high:g} (a single weight: leave the "
            "range out and the student learns the teacher's own guidance)",
        )


def parse_range(value) -> tuple[float, ...]:
    """``1,6`` (a flag) or [1, 6] (a recipe) as a tuple of floats."""
    if isinstance(value, str):
        try:
            return tuple(float(part) for part in value.split(","))
        except ValueError:
            raise ConfigError(
                "DistillConfig", "guidance_range", f"must be low,high (e.g. 1,6), got {value!r}"
            )
    return value


def _power_of_two(value: int) -> bool:
    return value >= 1 and value & (value - 1) == 0


# Training budgets (2-core CPU, digits: README): each progressive stage, and the one consistency
# run. Batch 64 at about 0.3 s per step (two teacher calls and one student step); 32 -> 4 steps is
# three stages, about 10 minutes.
PROGRESSIVE = TrainConfig(
    steps=600, batch_size=64, lr=5e-4, warmup_steps=50, ema_decay=0.999, checkpoint_every=100
)
CONSISTENCY = TrainConfig(
    steps=3000, batch_size=64, lr=5e-4, warmup_steps=50, ema_decay=0.999, checkpoint_every=100
)
