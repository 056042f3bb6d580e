"""``accel.load``: a Denoiser from the built-in name, a local diffusers folder, an accel artifact,
or the local Hugging Face cache. Nothing is downloaded."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch.nn as nn

from accel.artifact import MARKER, load_artifact
from accel.core import registry
from accel.core.denoiser import DIFFUSERS_KINDS, Denoiser
from accel.core.errors import AccelError, one_line
from accel.core.files import read_json_object
from accel.core.memory import check_fits
from accel.core.sampling_spec import SamplingSpec
from accel.models.prompts import PIPELINE_INDEX, pipeline_folder, text_states
from accel.models.reference import REFERENCES, SAMPLING_FILE

BUILTIN_MODELS = {name: reference.folder for name, reference in REFERENCES.items()}
MODEL_SUBFOLDERS = ("unet", "transformer")
LOAD_COPIES = 2
# diffusers' DDPMScheduler defaults, used only when a model folder carries no scheduler config.
FALLBACK_SCHEDULER = {
    "_class_name": "DDPMScheduler",
    "num_train_timesteps": 1000,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "prediction_type": "epsilon",
}


def load(
    source: str | Path | nn.Module | Denoiser,
    device: str | None = None,
    sampling: dict | None = None,
    prompts: str | Path | None = None,
) -> Denoiser:
    """Return the denoiser named by ``source``, in eval mode, on ``device`` (default: where it
    loads).

    ``sampling`` changes the sampler it comes with (``{"steps": 20}``, ``{"name": "dpm++"}``);
    another sampler name starts from that sampler's own settings, keeping the step count and what
    the network predicts. ``prompts``: a text-conditioned model's conditioning from then on (a text
    file through the pipeline's text encoder, or stored states: ``accel.models.prompts``).
    """
    if isinstance(source, Denoiser):
        denoiser = source
    elif isinstance(source, nn.Module):
        denoiser = Denoiser(source, FALLBACK_SCHEDULER, source=type(source).__name__)
    else:
        denoiser = _load_path(_resolve(str(source)), str(source))
    if prompts is not None:
        denoiser.require_text(f"--prompts {prompts}")
        states, null = text_states(prompts, _pipeline_place(source, denoiser))
        denoiser.use_text_states(states, f"--prompts {prompts}", null)
    if sampling:
        denoiser.sampling = denoiser.sampling.changed(sampling)
    denoiser.check_sampling(denoiser.sampling)
    denoiser.eval()
    return denoiser.to(device) if device else denoiser


def _pipeline_place(source, denoiser: Denoiser) -> Path | None:
    """Where a pipeline's text encoder may be: around the model's folder, or around the folder the
    model was made from (an artifact of a pipeline's UNet)."""
    if not isinstance(source, (str, Path)):
        return None
    given = _resolve(str(source))
    for place in (given, Path(denoiser.origin)):
        if place.is_dir() and pipeline_folder(place) is not None:
            return place
    return given


def model_path(name: str) -> Path:
    """The folder or file ``name`` loads from: a built-in model's folder, a local path, or the hub
    cache."""
    return _resolve(name)


def _resolve(name: str) -> Path:
    if name in BUILTIN_MODELS:
        return BUILTIN_MODELS[name]
    path = Path(name).expanduser()
    if path.exists():
        return path
    if _looks_like_hub_id(name):
        return _from_hub_cache(name)
    raise AccelError(
        f"no model at '{name}': give a local diffusers folder, an accel artifact, or one of "
        f"{', '.join(BUILTIN_MODELS)}"
    )


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def _from_hub_cache(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        raise AccelError(
            f"'{repo_id}' is not a local path and not in the Hugging Face "
            "cache; accel never downloads: fetch it where there is network "
            f"(huggingface-cli download {repo_id}) and pass the folder"
        )


def _model_folder(path: Path) -> Path:
    """The folder holding the network's config.json: the path itself, or its unet/ or
    transformer/."""
    if path.is_file():
        raise AccelError(
            f"{path} is a file; give the folder of a diffusers model or an accel artifact"
        )
    if (path / "config.json").is_file():
        return path
    for sub in MODEL_SUBFOLDERS:
        if (path / sub / "config.json").is_file():
            return path / sub
    if (path / PIPELINE_INDEX).is_file():
        raise AccelError(
            f"{path} is a pipeline folder without a denoiser: no config.json in its "
            f"{' or '.join(f'{sub}/' for sub in MODEL_SUBFOLDERS)}"
        )
    raise AccelError(
        f"{path} is not a diffusers model folder (no config.json in it or in unet/ or transformer/)"
    )


def _scheduler_config(model_dir: Path) -> tuple[dict, tuple[str, ...]]:
    for candidate in (
        model_dir / "scheduler_config.json",
        model_dir.parent / "scheduler" / "scheduler_config.json",
        model_dir / "scheduler" / "scheduler_config.json",
    ):
        if candidate.is_file():
            return _checked_schedule(candidate), ()
    return dict(FALLBACK_SCHEDULER), (
        "no scheduler_config.json found: assuming DDPM, linear betas, 1000 steps",
    )


def _checked_schedule(path: Path) -> dict:
    """The noise schedule in ``path``, checked by building the default sampler on it once."""
    schedule = read_json_object(path)
    try:
        SamplingSpec().scheduler(schedule)
    except Exception as error:  # diffusers raises many types for values that describe no schedule
        raise AccelError(f"{path} does not describe a noise schedule ({one_line(error)})")
    return schedule


def _check_safetensors(files: list[Path]) -> None:
    from safetensors import safe_open

    for file in files:
        try:
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 (safetensors' handle is no dict)
                    handle.get_slice(key)
        except Exception as error:
            raise AccelError(f"{file} is not a readable safetensors file ({one_line(error)})")


def _load_path(path: Path, name: str) -> Denoiser:
    loader = registry.file_loader(path.suffix) if path.is_file() else None
    if loader is not None:
        return loader(path, name)
    model_dir = _model_folder(path)
    config = read_json_object(model_dir / "config.json")
    class_name = config.get("_class_name")
    if not isinstance(class_name, str) or class_name not in DIFFUSERS_KINDS:
        raise AccelError(
            f"{model_dir / 'config.json'} describes '{class_name}'; accel loads "
            f"{', '.join(DIFFUSERS_KINDS)}"
        )
    weight_files = sorted(model_dir.glob("*.safetensors"))
    _check_safetensors(weight_files)
    scheduler_config, notes = _scheduler_config(model_dir)
    weights_bytes = sum(f.stat().st_size for f in weight_files) or None
    # the network, and diffusers' read of the file while it fills it
    check_fits(LOAD_COPIES * (weights_bytes or 0), f"loading {model_dir}")
    if (model_dir / MARKER).is_file():
        module = _from_config(model_dir, class_name, config)
        return load_artifact(model_dir, module, scheduler_config, name, notes, weights_bytes)
    module = _from_pretrained(model_dir, class_name)
    return Denoiser(
        module,
        scheduler_config,
        source=name,
        weights_bytes=weights_bytes,
        notes=notes,
        sampling=_own_sampling(model_dir),
    )


def _own_sampling(model_dir: Path) -> SamplingSpec | None:
    """The sampler a diffusers folder says it is meant to be run with (``sampling.json``: the
    built-in ``digits-dit`` carries its guidance scale there), or None for the default."""
    path = model_dir / SAMPLING_FILE
    return SamplingSpec.from_dict(read_json_object(path)) if path.is_file() else None


def _from_config(model_dir: Path, class_name: str, config: dict) -> nn.Module:
    """A fresh (randomly initialised) network of the class and shape config.json describes."""
    import diffusers

    try:
        with _diffusers_quiet():
            return getattr(diffusers, class_name).from_config(config)
    # diffusers raises many types for values that do not describe a network
    except Exception as error:
        raise AccelError(
            f"{model_dir / 'config.json'} does not describe a {class_name} ({one_line(error)})"
        )


def _from_pretrained(model_dir: Path, class_name: str) -> nn.Module:
    import diffusers

    model_class = getattr(diffusers, class_name)
    try:
        with _diffusers_quiet():
            return model_class.from_pretrained(model_dir, local_files_only=True)
    except Exception as error:
        raise AccelError(f"cannot load weights from {model_dir}: {one_line(error)}")


@contextlib.contextmanager
def _diffusers_quiet():
    """diffusers logs its own line before raising (a folder without weights): the error says it
    once."""
    logger = logging.getLogger("diffusers")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)
