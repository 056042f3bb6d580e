"""One calling convention over every supported network: ``eps = denoiser(x_t, t, cond=None,
step=None)``, with the sampler the network is meant to be run with and the step hooks that act on
its calls."""

from __future__ import annotations

import functools
import itertools
from typing import Any

import torch
import torch.nn as nn

from accel.core.errors import AccelError
from accel.core.guidance_input import guidance_weight, has_weight_embedding
from accel.core.hooks import StepCall, StepHook, Trajectory
from accel.core.sampling_checks import refuse_sampling, refuse_text_states
from accel.core.sampling_spec import SamplingSpec

# diffusers class name -> how the adapter calls it
DIFFUSERS_KINDS = {
    "UNet2DModel": "unet",
    "UNet2DConditionModel": "unet-text",
    "DiTTransformer2DModel": "dit",
    "Transformer2DModel": "dit",
    "PixArtTransformer2DModel": "dit-text",
}
# the text states a text-conditioned network attends to: CLIP's 77 tokens (Stable Diffusion's UNet),
# T5's 120 (PixArt-alpha); used for the stand-in conditioning
TEXT_TOKENS = {"unet-text": 77, "dit-text": 120}


class Denoiser(nn.Module):
    """A noise-prediction network with its noise schedule, its sampler, and where it came from.

    ``module`` is a diffusers UNet2DModel, UNet2DConditionModel, DiTTransformer2DModel /
    Transformer2DModel, or any module called as ``module(x_t, t)`` / ``module(x_t, t, cond)``
    returning eps (or an object with ``.sample``). Plain modules must give ``sample_shape``.
    ``scheduler_config`` is the noise schedule the network was trained with; ``sampling`` the
    sampler it is meant to be run with (default DDIM, 50 steps).
    """

    def __init__(
        self,
        module: nn.Module,
        scheduler_config: dict[str, Any],
        *,
        source: str = "",
        sample_shape: tuple[int, int, int] | None = None,
        weights_bytes: int | None = None,
        notes: tuple[str, ...] = (),
        cond_kind: str | None = None,
        sampling: SamplingSpec | None = None,
        runtime: str = "PyTorch",
    ):
        super().__init__()
        self.module = module
        self.runtime = runtime  # what runs the network: PyTorch, or the runtime of an exported file
        self.kind = DIFFUSERS_KINDS.get(type(module).__name__, "module")
        self.scheduler_config = dict(scheduler_config)
        self.sampling = sampling or SamplingSpec()
        self.source = source
        # the model a chain of transforms started from: an artifact of it keeps it
        self.origin = source
        self.weights_bytes = weights_bytes
        self.notes = list(notes)
        # given for modules that cannot say (an exported graph); else from the config
        self._cond_kind = cond_kind
        # what accel did to the base model, in order (artifact accel.json)
        self.transforms: list[dict] = []
        self.hooks: dict[str, StepHook] = {}  # by name, run in the order they were added
        # a text-conditioned network's prompts as encoder states (P x tokens x width), cycled
        # over the samples; None: zero states (see default_cond). The empty prompt's (tokens x
        # width) are the unconditional half of classifier-free guidance.
        self.text_states: torch.Tensor | None = None
        self.null_text_states: torch.Tensor | None = None
        self.sample_shape = tuple(sample_shape) if sample_shape else self._shape_from_config()

    def add_hook(self, name: str, hook: StepHook) -> None:
        """Attach ``hook`` under ``name`` (replacing a hook of that name)."""
        self.hooks.pop(name, None)
        self.hooks[name] = hook

    def remove_hook(self, name: str) -> None:
        self.hooks.pop(name, None)

    def start_trajectory(self, trajectory: Trajectory) -> None:
        """Called by the sampler before each trajectory: every hook forgets per-trajectory state."""
        for hook in self.hooks.values():
            hook.reset(trajectory)

    @property
    def config(self) -> dict[str, Any]:
        """The diffusers config of the wrapped model ({} for plain modules)."""
        return dict(getattr(self.module, "config", {}) or {})

    def _shape_from_config(self) -> tuple[int, int, int]:
        config = self.config
        if "in_channels" not in config or "sample_size" not in config:
            raise AccelError("a plain module needs sample_shape=(channels, height, width)")
        size = config["sample_size"]
        height, width = (size, size) if isinstance(size, int) else size
        return (config["in_channels"], height, width)

    @property
    def cond_kind(self) -> str | None:
        """None (unconditional), "class" (integer labels) or "text" (encoder hidden states)."""
        if self._cond_kind is not None:
            return self._cond_kind
        config = self.config
        if self.kind in TEXT_TOKENS:
            return "text"
        if self.kind == "dit" and config.get("num_embeds_ada_norm"):
            return "class"
        if self.kind == "unet" and config.get("num_class_embeds"):
            return "class"
        return None

    @property
    def classes(self) -> int | None:
        """How many classes a class-conditional model takes (None for other models)."""
        if self.cond_kind != "class":
            return None
        config = self.config
        return config.get("num_class_embeds") or config.get("num_embeds_ada_norm")

    @property
    def null_class(self) -> int | None:
        """The label that samples the unconditional model (classifier-free guidance), or None where
        the network was built without one: a DiT's label table has a row after its classes."""
        # an exported graph's runtime says which kind of network it was exported from
        kinds = (self.kind, getattr(self.module, "exported_kind", None))
        is_dit = "dit" in (*kinds, DIFFUSERS_KINDS.get(self.config.get("_class_name")))
        return self.classes if is_dit and self.cond_kind == "class" else None

    @property
    def guidance_range(self) -> tuple[float, float] | None:
        """The guidance weights a guidance-distilled student takes as input (one call per step);
        None for a network that runs guidance as two evaluations, or none."""
        return getattr(self.module, "guidance_range", None)

    def evaluations_per_step(self, spec: SamplingSpec | None = None) -> int:
        """Network evaluations one step of ``spec`` (default: the model's own sampler) runs: a
        guided step evaluates cond and uncond, except in a student that takes the weight."""
        spec = spec or self.sampling
        return 1 if self.guidance_range else spec.evaluations_per_step

    def class_labels(self, count: int, spec: SamplingSpec | None = None) -> torch.Tensor:
        """The label of each of ``count`` samples as ``spec`` (default: the model's own sampler)
        draws them: a cycle over its labels, or over every class."""
        spec = spec or self.sampling
        cycle = torch.tensor(spec.labels or range(self.classes), dtype=torch.long)
        return cycle[torch.arange(count) % len(cycle)]

    def check_sampling(self, spec: SamplingSpec) -> None:
        """Refuse labels and guidance this model cannot take."""
        refuse_sampling(self, spec)

    @property
    def text_width(self) -> int | None:
        """The width of the text states a text-conditioned network attends to (None for others)."""
        if self.cond_kind != "text":
            return None
        config = self.config
        return config.get("caption_channels") or config["cross_attention_dim"]

    def require_text(self, source: str) -> None:
        if self.cond_kind != "text":
            raise AccelError(
                f"{source}: {self.source} is not text-conditioned; prompts apply to text models"
            )

    def use_text_states(self, states: torch.Tensor, source="the text states", null=None) -> None:
        """Condition every sample, calibration and training batch on ``states`` (P x tokens x
        width: one prompt's encoder states per row, cycled), and guide with ``null`` (the empty
        prompt's, tokens x width), refusing states this network cannot attend to."""
        refuse_text_states(self, states, null, source)
        self.text_states = states.detach().float().cpu()
        if null is not None:
            null = null.detach().reshape(states.shape[1:]).float().cpu()
        self.null_text_states = null

    def default_cond(self, count: int, generator: torch.Generator) -> torch.Tensor | None:
        """Conditioning for training, calibration and sampling: uniform random class labels; for a
        text model its prompts' states (``use_text_states``), cycled from a random first prompt,
        or zero states where it has none."""
        if self.cond_kind == "class":
            return torch.randint(0, self.classes, (count,), generator=generator)
        if self.cond_kind == "text":
            if self.text_states is not None:
                first = torch.randint(0, len(self.text_states), (1,), generator=generator)
                return self.text_states[(first + torch.arange(count)) % len(self.text_states)]
            # an exported graph's runtime says which kind of network it was exported from
            kind = getattr(self.module, "exported_kind", self.kind)
            tokens = TEXT_TOKENS.get(kind, TEXT_TOKENS["unet-text"])
            return torch.zeros(count, tokens, self.text_width)
        return None

    def _first_tensor(self) -> torch.Tensor:
        return next(itertools.chain(self.parameters(), self.buffers()), torch.empty(0))

    @property
    def device(self) -> torch.device:
        return self._first_tensor().device

    @property
    def dtype(self) -> torch.dtype:
        return self._first_tensor().dtype

    def to_model(self, cond: torch.Tensor | None) -> torch.Tensor | None:
        """Move conditioning to the model's device (and float conditioning to its dtype)."""
        if cond is None:
            return None
        return (
            cond.to(self.device, self.dtype) if cond.is_floating_point() else cond.to(self.device)
        )

    def example_inputs(self, batch_size: int, t: int = 500, seed: int = 0):
        """(x_t, t, cond) for timing and tracing: seeded noise, a mid-trajectory timestep, default
        conditioning."""
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn((batch_size, *self.sample_shape), generator=generator).to(
            self.device, self.dtype
        )
        cond = self.to_model(self.default_cond(batch_size, generator))
        return x, torch.full((batch_size,), t, device=self.device), cond

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor | int,
        cond: torch.Tensor | None = None,
        step: int | None = None,
        guidance: float | None = None,
    ) -> torch.Tensor:
        """eps for ``x_t`` at timesteps ``t``; ``step`` is the call's index in the sampler's
        trajectory (hooks); ``guidance``: the weight a guidance-distilled student applies (default:
        its sampler's)."""
        t = torch.as_tensor(t, device=x_t.device)
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        weight = None
        if self.guidance_range:
            weight = self.sampling.guidance if guidance is None else guidance
            weight = torch.as_tensor(weight, dtype=torch.float32, device=x_t.device)
            weight = weight.expand(x_t.shape[0]) if weight.ndim == 0 else weight
        call = StepCall(x_t, t, cond, step, weight)
        hooks = list(self.hooks.values())
        for hook in hooks:
            call = hook.pre_forward(call)
        run = self._eps_call
        for hook in reversed(hooks):
            run = functools.partial(hook.new_forward, forward=run)
        output = run(call)
        for hook in reversed(hooks):
            output = hook.post_forward(call, output)
        return output

    def _eps_call(self, call: StepCall) -> torch.Tensor:
        return self.eps_of(self.module, call.x_t, call.t, call.cond, call.guidance)

    def eps_of(
        self,
        module: nn.Module,
        x_t: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor | None,
        guidance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """eps from ``module`` called as this model's network is (a training loop passes its wrapped
        copy); no hooks. ``guidance``: per-sample weights, for a guidance-distilled network."""
        if guidance is not None:
            if not has_weight_embedding(module):
                # an exported graph's runtime: the weight is one of the graph's inputs
                return module(x_t, t, cond, guidance)
            with guidance_weight(module, guidance):
                return self.eps_of(module, x_t, t, cond)
        if self.kind == "unet":
            out = module(x_t, t, class_labels=cond).sample
        elif self.kind == "unet-text":
            if cond is None:
                raise AccelError("UNet2DConditionModel needs cond (encoder_hidden_states)")
            out = module(x_t, t, encoder_hidden_states=cond).sample
        elif self.kind == "dit":
            out = module(x_t, timestep=t, class_labels=cond).sample
        elif self.kind == "dit-text":
            # PixArt's micro-conditions (resolution, aspect ratio) exist only at 1024x1024
            none = {"resolution": None, "aspect_ratio": None}
            out = module(x_t, encoder_hidden_states=cond, timestep=t, added_cond_kwargs=none).sample
        else:
            out = module(x_t, t) if cond is None else module(x_t, t, cond)
            out = getattr(out, "sample", out)
        # DiT-style models with learned variance return [eps, variance] along channels.
        if out.shape[1] == 2 * x_t.shape[1]:
            out = out[:, : x_t.shape[1]]
        return out
