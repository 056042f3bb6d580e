"""The one training loop every capability that trains shares (the reference model, fine-tuning after
pruning, step distillation), its config, its tasks (noise prediction, distillation from a teacher)
and its data sources."""

from accel.train.config import TRAINING_KEYS, TrainConfig
from accel.train.loop import TrainResult, checkpoint_state, loss_curve, train
from accel.train.runs import work_dir_for
from accel.train.tasks import ClassLabels, NoisePrediction, TeacherDistillation

__all__ = [
    "TRAINING_KEYS",
    "ClassLabels",
    "NoisePrediction",
    "TeacherDistillation",
    "TrainConfig",
    "TrainResult",
    "checkpoint_state",
    "loss_curve",
    "train",
    "work_dir_for",
]
