"""The noise schedule as distillation uses it: alpha_t and sigma_t at integer timesteps (t = -1 is
the clean end, alpha = 1, as diffusers' DDIM takes it with ``set_alpha_to_one``), the three network
parameterizations, the DDIM step, and the consistency boundary scalings, each written to match the
diffusers scheduler the student is then sampled with (tests compare them)."""

from __future__ import annotations

import torch

from accel.core.errors import AccelError
from accel.core.sampling_spec import PREDICTION_TYPES

CLEAN = -1  # the timestep "after" t = 0: alpha_bar = 1 (DDIM's final_alpha_cumprod)
SIGMA_DATA = 0.5  # consistency boundary condition (LCM, diffusers' LCMScheduler)
TIMESTEP_SCALING = 10  # LCM's scaling of the integer timestep inside c_skip / c_out


class Schedule:
    """alpha_t = sqrt(alpha_bar_t) and sigma_t = sqrt(1 - alpha_bar_t) from a model's training
    schedule."""

    def __init__(self, scheduler_config: dict):
        from diffusers import DDIMScheduler

        if "FlowMatch" in str(scheduler_config.get("_class_name", "")):
            raise AccelError(
                f"the teacher's schedule is {scheduler_config['_class_name']} (flow "
                "matching): accel distills DDPM-family schedules (betas, alpha_bar) only"
            )
        try:
            ddim = DDIMScheduler.from_config(scheduler_config)
        # diffusers' answer to a beta_schedule it does not know
        except NotImplementedError as error:
            raise AccelError(f"accel cannot step the teacher's noise schedule: {error}")
        if ddim.config.thresholding:
            raise AccelError(
                "the teacher's schedule uses dynamic thresholding, which accel's distillation "
                "solver does not reproduce; set thresholding to false in its scheduler_config.json"
            )
        self.alphas_cumprod = ddim.alphas_cumprod.float()
        self.train_steps = int(ddim.config.num_train_timesteps)
        self.clip = float(ddim.config.clip_sample_range) if ddim.config.clip_sample else None

    def to(self, device) -> Schedule:
        self.alphas_cumprod = self.alphas_cumprod.to(device)
        return self

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample (alpha_t, sigma_t), shaped to broadcast over N x C x H x W."""
        alpha_bar = torch.where(
            t >= 0, self.alphas_cumprod[t.clamp(min=0)], torch.ones_like(t, dtype=torch.float)
        )
        return alpha_bar.sqrt().view(-1, 1, 1, 1), (1 - alpha_bar).sqrt().view(-1, 1, 1, 1)

    def add_noise(self, clean: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = self.alpha_sigma(t)
        return alpha * clean + sigma * noise

    def x0_and_eps(self, output: torch.Tensor, z: torch.Tensor, t: torch.Tensor, prediction: str):
        """The clean-image and noise estimates a network output means, for each parameterization."""
        alpha, sigma = self.alpha_sigma(t)
        if prediction == "epsilon":
            return (z - sigma * output) / alpha, output
        if prediction == "v_prediction":  # v = alpha eps - sigma x0 (Salimans & Ho 2022, eq. 10)
            return alpha * z - sigma * output, alpha * output + sigma * z
        if prediction == "sample":
            return output, (z - alpha * output) / sigma.clamp(min=1e-8)
        raise AccelError(
            f"prediction type must be one of {', '.join(PREDICTION_TYPES)}, got {prediction!r}"
        )

    def ddim_step(
        self,
        output: torch.Tensor,
        z: torch.Tensor,
        t: torch.Tensor,
        s: torch.Tensor,
        prediction: str,
    ) -> torch.Tensor:
        """z_s from z_t, deterministic DDIM, as diffusers' DDIMScheduler(eta=0) steps: x0 clipped
        where the schedule clips, eps taken from the output before clipping."""
        x0, eps = self.x0_and_eps(output, z, t, prediction)
        if self.clip is not None:
            x0 = x0.clamp(-self.clip, self.clip)
        alpha_s, sigma_s = self.alpha_sigma(s)
        return alpha_s * x0 + sigma_s * eps


def boundary_scalings(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_skip, c_out) of the consistency function f(x, t) = c_skip x + c_out x0(x, t): c_skip(0) =
    1 and c_out(0) = 0, so f is the identity at t = 0 (Song et al. 2023, eq. 3, with LCM's timestep
    scaling)."""
    scaled = t.float().clamp(min=0) * TIMESTEP_SCALING
    c_skip = SIGMA_DATA**2 / (scaled**2 + SIGMA_DATA**2)
    c_out = scaled / (scaled**2 + SIGMA_DATA**2).sqrt()
    return c_skip.view(-1, 1, 1, 1), c_out.view(-1, 1, 1, 1)


def student_timesteps(schedule: Schedule, steps: int) -> list[int]:
    """The timesteps of an N-step DDIM student: diffusers' "trailing" spacing, so the first step is
    at t = T - 1 where x_T is pure noise ("leading" starts lower, and at one step it asks the
    network at t = 0)."""
    from diffusers import DDIMScheduler

    ddim = DDIMScheduler(num_train_timesteps=schedule.train_steps, timestep_spacing="trailing")
    ddim.set_timesteps(steps)
    return ddim.timesteps.tolist()
