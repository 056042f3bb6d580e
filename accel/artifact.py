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


def write_model_files(denoiser, folder: Path, transforms: list[dict] | None = None) -> None:
    """Write config.json, scheduler_config.json, accel.json and model.safetensors into ``folder``."""
    from safetensors.torch import save_file

    import accel

    if not hasattr(denoiser.module, "to_json_string"):
        raise AccelError("only diffusers models can be saved as artifacts (a plain module has no config to rebuild it)")
    (folder / "config.json").write_text(denoiser.module.to_json_string())
    (folder / "scheduler_config.json").write_text(json.dumps(denoiser.scheduler_config, indent=2) + "\n")
    record = {"format": ARTIFACT_FORMAT, "accel_version": accel.__version__, "base": denoiser.source,
              "transforms": transforms or []}
    (folder / "accel.json").write_text(json.dumps(record, indent=2) + "\n")
    state = {k: v.detach().contiguous().cpu() for k, v in denoiser.module.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))


def load_artifact_module(folder: Path, config: dict) -> nn.Module:
    """Rebuild the network of an artifact: its class from config.json, then its weights."""
    import diffusers
    from safetensors.torch import load_file

    record = json.loads((folder / "accel.json").read_text())
    if record.get("format") != ARTIFACT_FORMAT:
        raise AccelError(f"{folder} has artifact format {record.get('format')}; this accel reads {ARTIFACT_FORMAT}")
    if record.get("transforms"):
        names = ", ".join(t.get("name", "?") for t in record["transforms"])
        raise AccelError(f"{folder} was made with transforms ({names}) this accel version cannot rebuild")
    module = getattr(diffusers, config["_class_name"]).from_config(config)
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise AccelError(f"{folder} has no model.safetensors")
    missing, unexpected = module.load_state_dict(load_file(str(weights)), strict=False)
    if missing or unexpected:
        raise AccelError(f"{weights} does not match config.json ({len(missing)} missing, {len(unexpected)} unexpected)")
    return module
