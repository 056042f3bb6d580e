"""The denoisers users deploy, at their real sizes, randomly initialised: Stable Diffusion 1.5's
UNet, DiT-XL/2 and PixArt-alpha (a text-conditioned transformer).

No pretrained weights can be downloaded here, so accel measures what does not depend on them (that
a stage runs, its time and memory, the exported graph's parity, latency at native size, the output
error of a transformed network against the original) on networks built from the published
configurations. Each architecture is a JSON file beside this module: the network's and noise
schedule's config.json values as the hub folders named in ``source`` hold them, and the published
parameter count the built network is checked against (tests/test_architectures.py).

``width_divisor`` divides every width (channels, head dimensions, text-state width) and keeps depth,
head counts, resolution and token counts: the same structure, small enough for CI.
``resolution_divisor`` divides the sample size too: attention over Stable Diffusion's 4,096 latent
pixels costs the same at any width, 3 s a call at 1/8 width on a 2-core AMD EPYC, so CI's quick
runs take 16x16 latents.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from accel.core.errors import ConfigError
from accel.core.files import atomic_dir

ARCHITECTURES_DIR = Path(__file__).parent
NAMES = tuple(sorted(path.stem for path in ARCHITECTURES_DIR.glob("*.json")))

# the config keys that are widths, per class (a UNet2DConditionModel's attention_head_dim is its
# head count, a diffusers naming quirk, so it is not among them)
WIDTH_KEYS = {
    "UNet2DConditionModel": ("block_out_channels", "cross_attention_dim"),
    "DiTTransformer2DModel": ("attention_head_dim",),
    "PixArtTransformer2DModel": ("attention_head_dim", "cross_attention_dim", "caption_channels"),
    "AutoencoderKL": ("block_out_channels",),
    "CLIPTextConfig": ("hidden_size", "intermediate_size", "projection_dim"),
}


@dataclass(frozen=True)
class Architecture:
    name: str
    description: str
    source: str  # the hub folder and files the values come from
    network_class: str  # a diffusers model class
    network: dict  # its config.json values
    scheduler: dict  # the noise schedule it was trained with
    published_parameters: int
    conditioning: dict  # kind ("text" / "class"), and tokens x width or classes
    parts: dict  # a pipeline's other networks' config values (SD1.5: text_encoder, vae)

    def network_config(self, width_divisor: int = 1, resolution_divisor: int = 1) -> dict:
        config = narrowed(self.network_class, self.network, width_divisor)
        return at_resolution(config, resolution_divisor)

    def build(
        self, width_divisor: int = 1, seed: int = 0, resolution_divisor: int = 1
    ) -> torch.nn.Module:
        """The network, randomly initialised from ``seed`` (diffusers' own initialisation)."""
        import diffusers

        torch.manual_seed(seed)
        network_class = getattr(diffusers, self.network_class)
        return network_class.from_config(self.network_config(width_divisor, resolution_divisor))

    def save(
        self, out: str | Path, width_divisor: int = 1, seed: int = 0, resolution_divisor: int = 1
    ) -> Path:
        """A diffusers model folder (config.json, safetensors weights, scheduler_config.json) that
        ``accel.load`` and diffusers' ``from_pretrained`` read."""
        network = self.build(width_divisor, seed, resolution_divisor)
        with atomic_dir(out) as staging:
            network.save_pretrained(staging, safe_serialization=True)
            write_json(staging / "scheduler_config.json", self.scheduler)
        return Path(out)


def architecture(name: str) -> Architecture:
    if name not in NAMES:
        raise ConfigError(
            "Architecture", "name", f"must be one of {', '.join(NAMES)}, got {name!r}"
        )
    values = json.loads((ARCHITECTURES_DIR / f"{name}.json").read_text())
    parts = {key: values.pop(key) for key in ("text_encoder", "vae") if key in values}
    values.pop("parameters_note", None)  # for the reader of the file
    return Architecture(name=name, parts=parts, **values)


def narrowed(kind: str, config: dict, divisor: int) -> dict:
    """``config`` (of a diffusers class or a transformers config class, ``kind``) with its widths
    divided by ``divisor``; GroupNorm's group count shrinks to one that divides every channel
    count."""
    if divisor == 1:
        return dict(config)
    if divisor < 1:
        raise ConfigError("Architecture", "width_divisor", f"must be 1 or more, got {divisor}")
    config = dict(config)
    for key in WIDTH_KEYS[kind]:
        config[key] = _divided(config[key], divisor, key)
    if "block_out_channels" in config:
        channels = config["block_out_channels"]
        config["norm_num_groups"] = math.gcd(config["norm_num_groups"], *channels)
    return config


def at_resolution(config: dict, divisor: int) -> dict:
    """``config`` with its sample size divided by ``divisor``."""
    if divisor == 1:
        return dict(config)
    return {**config, "sample_size": _divided(config["sample_size"], divisor, "sample_size")}


def _divided(value, divisor: int, key: str):
    if isinstance(value, list):
        return [_divided(item, divisor, key) for item in value]
    if value % divisor:
        raise ConfigError(
            "Architecture", "width_divisor", f"{divisor} does not divide {key} = {value}"
        )
    return value // divisor


def write_json(path: Path, values: dict) -> None:
    path.write_text(json.dumps(values, indent=2) + "\n")
