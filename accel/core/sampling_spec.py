"""``SamplingSpec``: the sampler a model is meant to be run with. It travels with the model
(``Denoiser.sampling``, saved in ``accel.json``), so a 4-step student is evaluated, calibrated and
exported with its own 4 steps.

The noise schedule itself (betas, timesteps, what the network predicts) is the model's training
scheduler config (``scheduler_config.json``); the spec names the sampler built on it: a short name
or any diffusers scheduler class, its step count, DDIM's eta, and settings layered over the schedule
config.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from typing import Any

from accel.core.config import Config, one_of

# short name -> (diffusers class, settings over the schedule config)
SAMPLERS = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    # DPM-Solver++ (Lu et al. 2022), second order multistep: what Stable Diffusion users run at
    # 20-25 steps
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
}
# Samplers that draw fresh noise at every step: two models run with them from the same x_T follow
# different trajectories, so PSNR between their samples is meaningless unless the sampler runs are
# identical.
STOCHASTIC = {
    "DDPMScheduler",
    "DDPMParallelScheduler",
    "EulerAncestralDiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "LCMScheduler",
    "TCDScheduler",
}
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


@dataclass(frozen=True)
class SamplingSpec(Config):
    name: str = "ddim"  # a key of SAMPLERS or a diffusers scheduler class name
    steps: int = 50
    eta: float = 0.0  # DDIM only: 0 is deterministic, 1 is DDPM-like
    # None: as its training schedule says
    prediction_type: str | None = one_of(None, PREDICTION_TYPES)
    options: dict[str, Any] = field(default_factory=dict)  # more settings over the schedule config
    # classifier-free guidance (class-conditional models with a null class): eps_u + w (eps_c -
    # eps_u), one batched network call on the conditional and unconditional halves; 1: no guidance,
    # one evaluation per step
    guidance: float = 1.0
    # the classes sample i is drawn with: labels[i % len(labels)]; None: a balanced cycle over all
    # of the model's classes (so an FID covers every class)
    labels: tuple[int, ...] | None = None

    def validate(self) -> None:
        if self.guidance < 1:
            raise self.invalid("guidance", f"must be 1 (none) or more, got {self.guidance}")
        if self.labels is not None and (not self.labels or min(self.labels) < 0):
            raise self.invalid("labels", f"must be class indices (0 or more), got {self.labels}")
        if not is_sampler(self.name):
            raise self.invalid("name", NOT_A_SAMPLER.format(self.name))
        if self.steps < 1:
            raise self.invalid("steps", f"must be at least 1, got {self.steps}")
        if self.eta < 0:
            raise self.invalid("eta", f"must be 0 or more, got {self.eta}")
        if self.eta and self.scheduler_class != "DDIMScheduler":
            raise self.invalid("eta", f"applies to DDIM only ({self.name} has none)")

    @property
    def scheduler_class(self) -> str:
        return SAMPLERS[self.name][0] if self.name in SAMPLERS else self.name

    @property
    def stochastic(self) -> bool:
        algorithm = str(self.settings().get("algorithm_type", ""))
        return self.scheduler_class in STOCHASTIC or self.eta > 0 or algorithm.startswith("sde")

    def settings(self) -> dict:
        """What the spec layers over the model's schedule config."""
        preset = SAMPLERS[self.name][1] if self.name in SAMPLERS else {}
        chosen = {"prediction_type": self.prediction_type} if self.prediction_type else {}
        return {**preset, **self.options, **chosen}

    def scheduler(self, schedule_config: dict):
        """A fresh diffusers scheduler on the model's schedule, with this spec's timesteps set."""
        scheduler = _diffusers_scheduler(self.scheduler_class).from_config(
            {**schedule_config, **self.settings()}
        )
        scheduler.set_timesteps(self.steps)
        return scheduler

    def step_kwargs(self, scheduler, generator) -> dict:
        """Keyword arguments for ``scheduler.step``: the noise generator and eta where the sampler
        takes them."""
        accepted = inspect.signature(scheduler.step).parameters
        kwargs = {"generator": generator} if "generator" in accepted else {}
        if "eta" in accepted:
            kwargs["eta"] = self.eta
        return kwargs

    @property
    def guided(self) -> bool:
        return self.guidance != 1.0

    @property
    def evaluations_per_step(self) -> int:
        """Network evaluations a step really runs: a guided step evaluates cond and uncond."""
        return 2 if self.guided else 1

    def describe(self) -> str:
        text = f"{self.name} {self.steps} steps" + (f", eta {self.eta:g}" if self.eta else "")
        if self.guided:
            text += f", guidance {self.guidance:g}"
        if self.labels is not None:
            text += f", labels {','.join(map(str, self.labels))}"
        return text

    def changed(self, changes: dict) -> SamplingSpec:
        """This spec with ``changes`` (``{"steps": 20}``); another sampler name starts from that
        sampler's own settings, keeping the step count and what the network predicts."""
        spec = self
        if changes.get("name", self.name) != self.name:
            spec = SamplingSpec(steps=self.steps, prediction_type=self.prediction_type)
        return replace(spec, **changes)


@dataclass(frozen=True)
class SamplerChange(Config):
    """Changes to a model's own sampler, as ``--sampler``, ``--steps`` and ``--eta`` give them; None
    keeps what the model has."""

    name: str | None = None
    steps: int | None = None
    eta: float | None = None
    guidance: float | None = None
    labels: tuple[int, ...] | None = None

    def validate(self) -> None:
        if self.name is not None and not is_sampler(self.name):
            raise self.invalid("name", NOT_A_SAMPLER.format(self.name))
        if self.steps is not None and self.steps < 1:
            raise self.invalid("steps", f"must be at least 1, got {self.steps}")
        if self.eta is not None and self.eta < 0:
            raise self.invalid("eta", f"must be 0 or more, got {self.eta}")
        if self.guidance is not None or self.labels is not None:
            SamplingSpec(guidance=self.guidance or 1.0, labels=self.labels)

    def applied_to(self, spec: SamplingSpec) -> SamplingSpec:
        given = {
            "name": self.name,
            "steps": self.steps,
            "eta": self.eta,
            "guidance": self.guidance,
            "labels": self.labels,
        }
        return spec.changed({key: value for key, value in given.items() if value is not None})


NOT_A_SAMPLER = (
    "'{}' is not a sampler: give " + ", ".join(SAMPLERS) + " or a diffusers scheduler class name "
    "(e.g. EulerDiscreteScheduler)"
)


def is_sampler(name: str) -> bool:
    return name in SAMPLERS or _diffusers_scheduler(name) is not None


def _diffusers_scheduler(class_name: str):
    import diffusers

    candidate = getattr(diffusers, class_name, None) if class_name.isidentifier() else None
    is_scheduler = isinstance(candidate, type) and issubclass(candidate, diffusers.SchedulerMixin)
    return candidate if is_scheduler else None
