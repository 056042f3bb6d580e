"""The two distillation objectives as training-loop tasks (``loss(forward, batch_size, generator,
device)``).

- ``ProgressiveStage`` (Salimans & Ho 2022, Algorithm 2): z_t from a clean image at one of the
  student's N timesteps; the teacher takes two DDIM steps t -> t' -> t''; the target x~ is the clean
  image for which one DDIM step of the student from z_t lands exactly on z_t''; loss max(SNR_t, 1) x
  ||x~ - x0_student||^2, the paper's "truncated SNR" weighting (without it the x-space loss vanishes
  where SNR -> 0, the first step of a short sampler).
- ``GuidanceStage`` (Meng et al. 2023, stage one): a student that takes the guidance weight w as
  input learns, in one call, the teacher's guided output eps_u + w (eps_c - eps_u) at w drawn
  uniformly from the student's range and t uniform over the training timesteps (plain regression in
  the teacher's parameterization: the combined output is what the paper's stage one matches).
- ``ConsistencyDistillation`` (Song et al. 2023; LCM's skipping-step solver): z at t_{n+k}; the
  teacher's DDIM step to t_n; loss d(f_student(z, t_{n+k}), f_target(z_{t_n}, t_n)) with f = c_skip
  x + c_out x0 and the target network an EMA of the student. d is pseudo-Huber, sqrt(||a - b||^2 +
  c^2) - c with iCT's c = 0.00054 sqrt(dim) (Song & Dhariwal 2023): it outweighs L2 where the solver
  step is off (large residuals) and LPIPS, the CM paper's choice, needs an ImageNet network accel
  does not ship.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from accel.distillation.schedule import CLEAN, Schedule, boundary_scalings, student_timesteps
from accel.train.tasks import Forward

# (net, x, t, cond, guidance weights or None)
Output = Callable[
    [nn.Module, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None],
    torch.Tensor,
]


@dataclass(frozen=True)
class Guidance:
    """The classifier-free guidance a distillation target carries: weights drawn uniformly from
    [low, high] (one weight: low = high), applied by the teacher as two evaluations (cond and the
    null class, one batched call) or taken as its input (``teacher_input``: a guidance-distilled
    teacher); the student takes w as input where ``student_input``, else learns the one weight
    baked in."""

    low: float
    high: float
    null_class: int
    teacher_input: bool
    student_input: bool

    def draw(self, count: int, generator: torch.Generator) -> torch.Tensor:
        return self.low + (self.high - self.low) * torch.rand(count, generator=generator)


class _Distillation:
    def __init__(
        self,
        teacher: nn.Module,
        teacher_prediction: str,
        output_of: Output,
        schedule: Schedule,
        images: torch.Tensor,
        cond_fn,
        student_prediction: str,
        guidance: Guidance | None = None,
        labels: torch.Tensor | None = None,
        null_dropout: tuple[int, float] | None = None,
    ):
        """``teacher``: the teacher's network, called as ``output_of(teacher, x_t, t, cond, w)``
        under no_grad; ``images``: N x C x H x W clean images in [-1, 1]; ``guidance``: the
        guidance the target carries (None: none); ``labels``: each image's class (a batch pairs
        an image with its own class; without them ``cond_fn`` draws the conditioning);
        ``null_dropout``: (null class, share of labels it replaces), so a student keeps the
        unconditional model that two-call guidance needs."""
        self.teacher = teacher.eval().requires_grad_(False)
        self.teacher_prediction, self.output_of, self.schedule = (
            teacher_prediction,
            output_of,
            schedule,
        )
        self.images, self.student_prediction = images, student_prediction
        self.cond_fn = cond_fn or (lambda count, generator: None)
        self.guidance, self.labels, self.null_dropout = guidance, labels, null_dropout

    def to(self, device) -> None:
        self.teacher.to(device)
        self.schedule.to(device)

    def _batch(self, batch_size: int, generator: torch.Generator, timesteps: list[int], device):
        index = torch.randint(0, len(self.images), (batch_size,), generator=generator)
        clean = self.images[index]
        noise = torch.randn(clean.shape, generator=generator)
        t = torch.tensor(timesteps)[
            torch.randint(0, len(timesteps), (batch_size,), generator=generator)
        ]
        cond = (
            self.labels[index] if self.labels is not None else self.cond_fn(batch_size, generator)
        )
        if self.null_dropout is not None:
            null, share = self.null_dropout
            cond = torch.where(torch.rand(batch_size, generator=generator) < share, null, cond)
        w = self.guidance.draw(batch_size, generator).to(device) if self.guidance else None
        t = t.to(device)
        return (
            self.schedule.add_noise(clean.to(device), noise.to(device), t),
            t,
            cond.to(device) if cond is not None else None,
            w,
        )

    @torch.no_grad()
    def _teacher_output(self, z: torch.Tensor, t: torch.Tensor, cond, w=None) -> torch.Tensor:
        """The teacher's output at guidance weights ``w``: eps_u + w (eps_c - eps_u) from one
        batched call on [cond, null] (as accel samples a guided model), or its own w input."""
        guidance = self.guidance
        if guidance is None or guidance.teacher_input:
            return self.output_of(self.teacher, z, t, cond, w)
        null = torch.full_like(cond, guidance.null_class)
        both = self.output_of(
            self.teacher, torch.cat([z, z]), t.repeat(2), torch.cat([cond, null]), None
        )
        conditional, unconditional = both.chunk(2)
        return unconditional + w.view(-1, 1, 1, 1) * (conditional - unconditional)

    def _student(self, forward: Forward, z: torch.Tensor, t: torch.Tensor, cond, w):
        """The student's output: w is its input where it takes one."""
        if self.guidance is not None and self.guidance.student_input:
            return forward(z, t, cond, w)
        return forward(z, t, cond)

    @torch.no_grad()
    def _teacher_step(
        self, z: torch.Tensor, t: torch.Tensor, s: torch.Tensor, cond, w=None
    ) -> torch.Tensor:
        output = self._teacher_output(z, t, cond, w)
        return self.schedule.ddim_step(output, z, t, s, self.teacher_prediction)


class GuidanceStage(_Distillation):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.timesteps = list(range(self.schedule.train_steps))

    def loss(
        self, forward: Forward, batch_size: int, generator: torch.Generator, device
    ) -> torch.Tensor:
        z, t, cond, w = self._batch(batch_size, generator, self.timesteps, device)
        target = self._teacher_output(z, t, cond, w)
        return ((self._student(forward, z, t, cond, w) - target) ** 2).mean()


class ProgressiveStage(_Distillation):
    def __init__(self, *args, student_steps: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.timesteps = student_timesteps(self.schedule, student_steps)
        self.jump = self.schedule.train_steps // student_steps  # diffusers' DDIM: prev = t - T // N

    def loss(
        self, forward: Forward, batch_size: int, generator: torch.Generator, device
    ) -> torch.Tensor:
        z, t, cond, w = self._batch(batch_size, generator, self.timesteps, device)
        target = self.target(z, t, cond, w)
        output = self._student(forward, z, t, cond, w)
        x0, _ = self.schedule.x0_and_eps(output, z, t, self.student_prediction)
        alpha, sigma = self.schedule.alpha_sigma(t)
        weight = (alpha**2 / sigma**2).clamp(min=1.0)
        return (weight * (x0 - target) ** 2).mean()

    @torch.no_grad()
    def target(self, z: torch.Tensor, t: torch.Tensor, cond, w=None) -> torch.Tensor:
        """x~ (Algorithm 2): two teacher DDIM steps, then the x whose one DDIM step from z_t gives
        z_t''."""
        end = (t - self.jump).clamp(min=CLEAN)
        middle = t - self.jump // 2
        z_middle = self._teacher_step(z, t, middle, cond, w)
        z_end = self._teacher_step(z_middle, middle, end, cond, w)
        alpha_t, sigma_t = self.schedule.alpha_sigma(t)
        alpha_end, sigma_end = self.schedule.alpha_sigma(end)
        ratio = sigma_end / sigma_t
        return (z_end - ratio * z) / (alpha_end - ratio * alpha_t)


class ConsistencyDistillation(_Distillation):
    def __init__(
        self, *args, student: nn.Module, skip: int, target_ema: float, loss: str, **kwargs
    ):
        super().__init__(*args, **kwargs)
        self.target_network = copy.deepcopy(student).eval().requires_grad_(False)
        self.skip, self.target_ema, self.kind = skip, target_ema, loss
        # LCM's solver grid: t_{n+k} in {k - 1, 2k - 1, ..., T - 1}, t_n = t_{n+k} - k (at least 0,
        # where f = id)
        self.timesteps = list(range(skip - 1, self.schedule.train_steps, skip))
        self.huber_c = 0.00054 * math.sqrt(self.images[0].numel())

    def to(self, device) -> None:
        super().to(device)
        self.target_network.to(device)

    def consistency(self, output: torch.Tensor, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x0, _ = self.schedule.x0_and_eps(output, z, t, self.student_prediction)
        c_skip, c_out = boundary_scalings(t)
        return c_skip * z + c_out * x0

    def loss(
        self, forward: Forward, batch_size: int, generator: torch.Generator, device
    ) -> torch.Tensor:
        z, t, cond, w = self._batch(batch_size, generator, self.timesteps, device)
        earlier = (t - self.skip).clamp(min=0)
        student_w = w if self.guidance is not None and self.guidance.student_input else None
        with torch.no_grad():
            z_earlier = self._teacher_step(z, t, earlier, cond, w)
            target_output = self.output_of(self.target_network, z_earlier, earlier, cond, student_w)
            target = self.consistency(target_output, z_earlier, earlier)
        online = self.consistency(self._student(forward, z, t, cond, w), z, t)
        if self.kind == "l2":
            return ((online - target) ** 2).mean()
        distance = ((online - target) ** 2).flatten(1).sum(1)
        return ((distance + self.huber_c**2).sqrt() - self.huber_c).mean()

    @torch.no_grad()
    def after_step(self, network: nn.Module) -> None:
        """The target network follows the student: theta- <- mu theta- + (1 - mu) theta."""
        for target, online in zip(self.target_network.parameters(), network.parameters()):
            target.lerp_(online, 1.0 - self.target_ema)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.target_network.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.target_network.load_state_dict(state)
