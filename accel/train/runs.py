"""A training run's work folder: its checkpoints until its result is written, and the rules for
resuming: an interrupted run continues only when asked to (``resume``), and only with the settings
it was started with."""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

from accel.core.errors import AccelError
from accel.core.files import read_json_object, write_text

RUN = "run.json"  # what identifies the run that owns a work folder


def work_dir_for(out: str | Path) -> Path:
    """Where a command that trains keeps its checkpoints until its result ``out`` is written:
    ``<out>.partial``."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


@contextlib.contextmanager
def work_folder(work_dir: Path | None, prefix: str = "accel-") -> Iterator[Path]:
    """``work_dir`` itself, or a temporary folder (removed afterwards) when there is none to
    keep."""
    if work_dir is not None:
        yield Path(work_dir)
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as temporary:
        yield Path(temporary)


def check_same_run(state: dict, run: dict, folder: Path) -> None:
    if state.get("run") != run:
        saved = state.get("run") or {}
        differing = sorted(k for k in set(saved) | set(run) if saved.get(k) != run.get(k)) or [
            "its format"
        ]
        raise AccelError(
            f"the checkpoint in {folder} belongs to another run ({', '.join(differing)} differ); "
            "remove it, or resume with the settings it was written with"
        )


def check_leftovers(work_dir: Path, resume: bool, run: dict) -> None:
    """Refuse a leftover run in ``work_dir`` unless resuming, and another run's leftovers even
    then."""
    if work_dir.is_dir() and any(work_dir.iterdir()) and not resume:
        raise AccelError(
            f"{work_dir} holds an interrupted run: pass `resume` to continue it, or remove it to "
            "start over"
        )
    if (work_dir / RUN).is_file():
        check_same_run(read_json_object(work_dir / RUN), run, work_dir)


def record_run(work_dir: Path, run: dict) -> None:
    """Mark ``work_dir`` as ``run``'s (done just before the first thing is written there)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    write_text(work_dir / RUN, json.dumps({"run": run}, indent=2) + "\n")
