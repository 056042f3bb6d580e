"""The accel artifact: a directory any accel command can load, written completely or not at all.

Layout: config.json (the base model's diffusers config), scheduler_config.json (its noise schedule),
accel.json (the transforms applied, in order, with their versioned configs; the sampler the model is
meant to be run with; the library version; a SHA-256 of the weights), model.safetensors (each
transform's stored form of the weights), text_states.safetensors for a text model given prompts (the
conditioning it was made and measured with, used again when it loads), plus the report files and
samples.png of the command that wrote it.

Loading gives a fresh base network each recorded transform's structure through the registry, checks
that the weights file is the one accel.json was written with, and loads it strictly.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch.nn as nn

from accel.core import registry
from accel.core.denoiser import Denoiser
from accel.core.errors import AccelError, ConfigError
from accel.core.files import read_json_object
from accel.core.sampling_spec import SamplingSpec
from accel.core.version import __version__
from accel.core.weights import (
    NULL_STATES_KEY,
    STATES_KEY,
    conditioning_state,
    file_sha256,
    load_stored_state,
    stored_state,
)

MARKER = "accel.json"
WEIGHTS = "model.safetensors"
TEXT_STATES = "text_states.safetensors"
# 2: versioned transform configs, the sampling spec and a weights hash; 1: accel 0.1 (DDIM 50
# implied)
FORMAT = 2


def write_model_files(denoiser: Denoiser, folder: Path) -> None:
    """Write config.json, scheduler_config.json, model.safetensors and accel.json into ``folder`` (a
    staging folder of ``atomic_dir``)."""
    from safetensors.torch import save_file

    if not hasattr(denoiser.module, "to_json_string"):
        raise AccelError(
            "only diffusers models can be saved as artifacts "
            "(a plain module has no config to rebuild it)"
        )
    (folder / "config.json").write_text(denoiser.module.to_json_string())
    (folder / "scheduler_config.json").write_text(
        json.dumps(denoiser.scheduler_config, indent=2) + "\n"
    )
    save_file(stored_state(denoiser), str(folder / WEIGHTS))
    states = conditioning_state(denoiser)
    if states:
        save_file(states, str(folder / TEXT_STATES))
    record = {
        "format": FORMAT,
        "accel_version": __version__,
        "base": denoiser.source,
        "origin": denoiser.origin,
        "transforms": denoiser.transforms,
        "sampling": denoiser.sampling.to_dict(),
        "weights_sha256": file_sha256(folder / WEIGHTS),
    }
    (folder / MARKER).write_text(json.dumps(record, indent=2) + "\n")


def read_record(folder: Path) -> dict:
    """accel.json, its structure checked: every problem is one line naming the file."""
    path = folder / MARKER
    record = read_json_object(path)
    if record.get("format") not in (1, FORMAT):
        raise AccelError(
            f"{path} has artifact format {record.get('format')!r}; this accel reads formats 1 and "
            f"{FORMAT}"
        )
    transforms = record.get("transforms", [])
    if not isinstance(transforms, list) or not all(
        isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("config"), dict)
        for t in transforms
    ):
        raise AccelError(
            f"{path}: 'transforms' must be a list of objects with a 'name' and a 'config'"
        )
    if record["format"] == FORMAT and not isinstance(record.get("weights_sha256"), str):
        raise AccelError(f"{path} lacks the weights hash ('weights_sha256') its format requires")
    return record


def load_artifact(
    folder: Path,
    module: nn.Module,
    scheduler_config: dict,
    name: str,
    notes: tuple[str, ...],
    weights_bytes: int | None,
) -> Denoiser:
    """The Denoiser an artifact describes, built on ``module`` (a fresh base network from
    config.json)."""
    record = read_record(folder)
    try:
        sampling = SamplingSpec.from_dict(record["sampling"]) if "sampling" in record else None
        denoiser = Denoiser(
            module,
            scheduler_config,
            source=name,
            weights_bytes=weights_bytes,
            notes=notes,
            sampling=sampling,
        )
        denoiser.origin = str(record.get("origin", record.get("base", name)))
        for entry in record["transforms"]:
            _rebuild(denoiser, entry, folder / MARKER)
    except ConfigError as error:
        raise AccelError(f"{folder / MARKER}: {error}")
    load_stored_state(denoiser, _checked_weights(folder, record), folder / WEIGHTS)
    if (folder / TEXT_STATES).is_file():
        from safetensors.torch import load_file

        stored = load_file(str(folder / TEXT_STATES))
        if STATES_KEY not in stored:
            raise AccelError(f"{folder / TEXT_STATES} has no '{STATES_KEY}' tensor")
        null = stored.get(NULL_STATES_KEY)
        denoiser.use_text_states(stored[STATES_KEY], str(folder / TEXT_STATES), null)
    return denoiser


def _rebuild(denoiser: Denoiser, entry: dict, path: Path) -> None:
    """Give ``denoiser`` the structure and step hooks of one recorded transform, and record it again
    (config upgraded)."""
    transform = registry.get(entry["name"])
    entry = {**entry, "config": transform.config.from_dict(entry["config"]).to_dict()}
    registry.check_can_follow(denoiser.transforms, transform.name)
    for give_back in (transform.rebuild, transform.attach):
        if give_back is None:
            continue
        try:
            give_back(denoiser, entry)
        # the record came from a file
        except (
            KeyError,
            TypeError,
            ValueError,
            AttributeError,
        ) as error:
            raise AccelError(
                f"{path}: its {transform.name} record does not describe this model "
                f"({type(error).__name__}: {error})"
            )
    denoiser.transforms.append(entry)


def _checked_weights(folder: Path, record: dict) -> dict:
    from safetensors.torch import load_file

    weights = folder / WEIGHTS
    if not weights.is_file():
        raise AccelError(f"{folder} has no {WEIGHTS}")
    expected = record.get("weights_sha256")
    if expected is not None and file_sha256(weights) != expected:
        raise AccelError(
            f"{weights} is not the file {MARKER} was written with (its SHA-256 differs): "
            "the weights were replaced or damaged; restore them or write the artifact again"
        )
    return load_file(str(weights))
