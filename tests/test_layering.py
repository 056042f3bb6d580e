"""The layering in pyproject.toml's import-linter contracts holds (CI runs the same command)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.skipif(
    shutil.which("lint-imports") is None, reason="import-linter is not installed (.[dev] has it)"
)
def test_import_contracts_are_kept():
    result = subprocess.run(
        ["lint-imports", "--no-logo", "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


@pytest.mark.slow
def test_kernel_references_import_without_triton():
    """Machines without Triton (macOS, Windows) still get the references every model runs
    through."""
    probe = (
        "import sys; sys.modules['triton'] = None; import accel.kernels as k; "
        "assert callable(k.group_norm_reference) and callable(k.attention_reference); "
        "assert not hasattr(k, 'group_norm'); import accel; print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.strip() == "ok", result.stderr[-2000:]
