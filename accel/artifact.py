"""The accel artifact: a directory any accel command can load, written completely or not at all.

Layout (shared/GUIDE.md): config.json, scheduler_config.json, accel.json, model.safetensors, and the
report files and samples.png of the command that wrote it.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch.nn as nn

from accel.errors import AccelError

ARTIFACT_FORMAT = 1


def ensure_writable_dir(out: str | Path, overwrite: bool) -> Path:
    """Refuse an existing non-empty ``out`` unless ``overwrite``; check its parent exists."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise AccelError(f"{out} exists and is not empty; choose another --out or pass --overwrite")
    if not out.parent.is_dir():
        raise AccelError(f"cannot write {out}: folder {out.parent} does not exist")
    return out


def ensure_writable_file(out: str | Path, suffixes: tuple[str, ...], what: str, overwrite: bool) -> Path:
    """Check an output file's suffix (``what`` names the accepted kinds), its folder, and that it may be written."""
    out = Path(out)
    if out.suffix not in suffixes:
        raise AccelError(f"--out {out}: give {what}")
    if not out.parent.is_dir():
        raise AccelError(f"cannot write {out}: folder {out.parent} does not exist")
    if out.exists() and not overwrite:
        raise AccelError(f"{out} exists; choose another --out or pass --overwrite")
    return out


@contextmanager
def atomic_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``out`` to fill; it replaces ``out`` only if the block completes."""
    out = ensure_writable_dir(out, overwrite)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield staging
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def model_state(denoiser) -> dict:
    """The tensors stored in model.safetensors: quantized layers as packed integer codes plus scales."""
    from accel.quant.pack import packed_state

    return packed_state(denoiser.module)


def write_model_files(denoiser, folder: Path) -> None:
    """Write config.json, scheduler_config.json, accel.json and model.safetensors into ``folder``."""
    from safetensors.torch import save_file

    import accel

    if not hasattr(denoiser.module, "to_json_string"):
        raise AccelError("only diffusers models can be saved as artifacts (a plain module has no config to rebuild it)")
    (folder / "config.json").write_text(denoiser.module.to_json_string())
    (folder / "scheduler_config.json").write_text(json.dumps(denoiser.scheduler_config, indent=2) + "\n")
    record = {"format": ARTIFACT_FORMAT, "accel_version": accel.__version__, "base": denoiser.source,
              "transforms": denoiser.transforms}
    (folder / "accel.json").write_text(json.dumps(record, indent=2) + "\n")
    save_file(model_state(denoiser), str(folder / "model.safetensors"))


def load_artifact_module(folder: Path, config: dict) -> nn.Module:
    """Rebuild the network of an artifact: its class from config.json, then its weights."""
    import diffusers
    from safetensors.torch import load_file

    record = json.loads((folder / "accel.json").read_text())
    if record.get("format") != ARTIFACT_FORMAT:
        raise AccelError(f"{folder} has artifact format {record.get('format')}; this accel reads {ARTIFACT_FORMAT}")
    module = getattr(diffusers, config["_class_name"]).from_config(config)
    for transform in record.get("transforms", []):
        rebuild = REBUILDERS.get(transform.get("name"))
        if rebuild is None:
            raise AccelError(f"{folder} was made with a transform ('{transform.get('name')}') this accel version "
                             "cannot rebuild")
        rebuild(module, transform)
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise AccelError(f"{folder} has no model.safetensors")
    from accel.quant.pack import load_packed_state

    load_packed_state(module, load_file(str(weights)))
    return module


def _rebuild_quantized(module: nn.Module, transform: dict) -> None:
    from accel.quant.apply import rebuild_quantized

    rebuild_quantized(module, transform)


def _rebuild_optimized(module: nn.Module, transform: dict) -> None:
    from accel.optimize.apply import rebuild_optimized

    rebuild_optimized(module, transform)


# transform name -> how to give a fresh base its structure
REBUILDERS = {"quantize": _rebuild_quantized, "optimize": _rebuild_optimized}
