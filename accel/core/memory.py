"""Whether a model fits in this machine's free memory, asked before loading it: a Stable Diffusion
UNet in float32 is 3.4 GB, and a stage holds the original and its own copy at once."""

from __future__ import annotations

from pathlib import Path

from accel.core.errors import AccelError

MEMINFO = Path("/proc/meminfo")


def available_bytes() -> int | None:
    """The kernel's estimate of memory available without swapping (Linux); None elsewhere."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_fits(needed: int, what: str) -> None:
    """Refuse ``what`` in one line, with the estimate, where it needs more than is available."""
    available = available_bytes()
    if available is not None and needed > available:
        raise AccelError(
            f"{what} needs about {needed / 1e9:.1f} GB of memory and {available / 1e9:.1f} GB is "
            "available: free memory, use a larger machine, or a smaller model"
        )
