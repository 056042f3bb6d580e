"""Writing outputs completely or not at all, and reading the JSON accel writes.

Every writer in accel goes through ``atomic_dir`` (artifacts, report folders) or ``atomic_file``
(ONNX files, engines, calibration sets, checkpoints, benchmark JSON): the output is built under a
temporary name beside its target and renamed into place only when complete, so an interrupted or
failed run leaves the target as it was. Finished outputs get the permissions the user's umask gives
any new file (a temporary directory is created 0700, which would keep a shared model folder from the
rest of a team).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from accel.core.errors import AccelError, ConfigError


def ensure_writable_dir(out: str | Path, overwrite: bool) -> Path:
    """Refuse an existing non-empty ``out`` unless ``overwrite``; check its parent exists."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise AccelError(
            f"{out} exists and is not empty; choose another `out`, or pass `overwrite`"
        )
    if not out.parent.is_dir():
        raise AccelError(f"cannot write {out}: folder {out.parent} does not exist")
    return out


def ensure_writable_file(
    out: str | Path, suffixes: tuple[str, ...], what: str, overwrite: bool
) -> Path:
    """Check an output file's suffix (``what`` names the accepted kinds), its folder, and that it
    may be written."""
    out = Path(out)
    if out.suffix not in suffixes:
        raise ConfigError("output", "out", f"{out}: give {what}")
    if not out.parent.is_dir():
        raise AccelError(f"cannot write {out}: folder {out.parent} does not exist")
    if out.exists() and not overwrite:
        raise AccelError(f"{out} exists; choose another `out`, or pass `overwrite`")
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _as_new_file(path: Path) -> None:
    """Give ``path`` (and, for a folder, everything in it) the modes the umask gives new files and
    folders."""
    mask = _umask()
    targets = [path] if path.is_file() else [path, *path.rglob("*")]
    for target in targets:
        target.chmod((0o777 if target.is_dir() else 0o666) & ~mask)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def atomic_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder of ``out`` to fill; it replaces ``out`` only if the block
    completes."""
    out = ensure_writable_dir(out, overwrite)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    replaced = out.with_name(f"{staging.name}.replaced")
    try:
        yield staging
        _as_new_file(staging)
        if out.exists():
            os.replace(out, replaced)  # kept until the new folder is in place
        os.replace(staging, out)
    finally:
        if replaced.exists():
            # put the old one back on failure
            _remove(replaced) if out.exists() else os.replace(replaced, out)
        if staging.exists():
            _remove(staging)


@contextmanager
def atomic_file(out: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``out`` (same suffix, not yet created) for a writer to create;
    it replaces ``out`` only if the block completes. Callers that must refuse an existing file check
    it first (``ensure_writable_file``); ``overwrite=False`` refuses here."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise AccelError(f"{out} exists; choose another `out`, or pass `overwrite`")
    if not out.parent.is_dir():
        raise AccelError(f"cannot write {out}: folder {out.parent} does not exist")
    partial = out.with_name(f".{out.stem}.{uuid.uuid4().hex[:8]}.partial{out.suffix}")
    try:
        yield partial
        _as_new_file(partial)
        os.replace(partial, out)
    finally:
        _remove(partial)


def write_text(out: str | Path, text: str) -> None:
    """``out`` holds ``text``, written atomically."""
    with atomic_file(out) as partial:
        partial.write_text(text)


def parse_json_object(text: str | bytes, what: str) -> dict:
    """``text`` as a JSON object; anything else (corrupt JSON, a list, a number) is a one-line error
    naming ``what`` (a file, or a file's metadata)."""
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        raise AccelError(f"{what} is not valid JSON ({error})")
    if not isinstance(value, dict):
        raise AccelError(f"{what} must hold a JSON object, not {type(value).__name__}")
    return value


def read_json_object(path: Path) -> dict:
    try:
        text = path.read_bytes()
    except OSError as error:
        raise AccelError(f"cannot read {path}: {error.strerror or error}")
    return parse_json_object(text, str(path))
