"""What a training step optimizes: each task draws its own batch from a per-step generator and
returns a loss.

- ``NoisePrediction``: the DDPM objective, ||eps - eps_theta(x_t, t)||^2 on x_t = sqrt(abar_t) x_0 +
  sqrt(1 - abar_t) eps, t uniform over the training schedule (the reference model's training;
  fine-tuning on real images, as Diff-Pruning does);
- ``NoisePrediction`` with ``labels``: class-conditional training, each image with its own label,
  replaced by the null class with probability ``label_dropout`` (classifier-free guidance's joint
  training of the conditional and unconditional model; 10% in DiT);
- ``NoisePrediction`` with a ``teacher``: the DDPM loss plus ``teacher_weight`` x ||eps_teacher -
  eps_theta||^2 on the same x_t (output distillation, as BK-SDM recovers its pruned U-Nets): the
  original's prediction is a lower-variance target than the sampled noise, and it carries what the
  original learned;
- ``TeacherDistillation``: data-free fine-tuning, ||eps_teacher(x_t, t) - eps_theta(x_t, t)||^2 on
  x_t built the same way from the teacher's own samples: the student learns to predict what the
  original predicts, at every noise level, without a training set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# eps(x_t, t, cond)
Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


@dataclass(frozen=True)
class ClassLabels:
    """Each training image's class; ``null`` (the label classifier-free guidance samples the
    unconditional model with) replaces it with probability ``dropout``."""

    labels: torch.Tensor  # int64, one per image
    null: int
    dropout: float = 0.1

    def for_batch(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        batch = self.labels[index].clone()
        batch[torch.rand(len(index), generator=generator) < self.dropout] = self.null
        return batch


class NoisePrediction:
    def __init__(
        self,
        images: torch.Tensor,
        scheduler_config: dict,
        cond_fn=None,
        teacher=None,
        teacher_weight: float = 0.0,
        labels: ClassLabels | None = None,
    ):
        """``images``: N x C x H x W in [-1, 1]; ``cond_fn(count, generator)``: conditioning for a
        batch, or None; ``teacher``: an ``accel`` Denoiser whose eps is a second target, weighted
        ``teacher_weight``; ``labels``: each image's class (class-conditional training, replaces
        ``cond_fn``)."""
        from diffusers import DDPMScheduler

        self.images = images
        self.scheduler = DDPMScheduler.from_config(scheduler_config)
        self.cond_fn = cond_fn or (lambda count, generator: None)
        self.teacher = teacher.eval().requires_grad_(False) if teacher is not None else None
        self.teacher_weight = teacher_weight
        self.labels = labels

    def to(self, device) -> None:
        if self.teacher is not None:
            self.teacher.to(device)

    def noisy_batch(self, batch_size: int, generator: torch.Generator, device):
        index = torch.randint(0, len(self.images), (batch_size,), generator=generator)
        clean = self.images[index]
        noise = torch.randn(clean.shape, generator=generator)
        t = torch.randint(
            0, self.scheduler.config.num_train_timesteps, (batch_size,), generator=generator
        )
        noisy = self.scheduler.add_noise(clean, noise, t)
        if self.labels is not None:
            cond = self.labels.for_batch(index, generator)
        else:
            cond = self.cond_fn(batch_size, generator)
        cond = cond.to(device) if cond is not None else None
        return index, noisy.to(device), t.to(device), noise.to(device), cond

    def loss(
        self, forward: Forward, batch_size: int, generator: torch.Generator, device
    ) -> torch.Tensor:
        _, noisy, t, noise, cond = self.noisy_batch(batch_size, generator, device)
        prediction = forward(noisy, t, cond)
        loss = F.mse_loss(prediction, noise)
        if self.teacher is not None and self.teacher_weight:
            with torch.no_grad():
                target = self.teacher(noisy, t, cond)
            loss = loss + self.teacher_weight * F.mse_loss(prediction, target)
        return loss


class TeacherDistillation(NoisePrediction):
    """``teacher``: an ``accel`` Denoiser (the original model), called without gradients."""

    def __init__(
        self,
        teacher,
        images: torch.Tensor,
        scheduler_config: dict,
        cond_fn=None,
        labels: ClassLabels | None = None,
    ):
        super().__init__(images, scheduler_config, cond_fn, teacher, labels=labels)

    def loss(
        self, forward: Forward, batch_size: int, generator: torch.Generator, device
    ) -> torch.Tensor:
        _, noisy, t, _, cond = self.noisy_batch(batch_size, generator, device)
        with torch.no_grad():
            target = self.teacher(noisy, t, cond)
        return F.mse_loss(forward(noisy, t, cond), target)
