"""What every benchmark shares: writing its markdown and JSON with the machine, threads, versions
and commit they came from, and the one way a benchmark judges a measured number against its goal."""

from __future__ import annotations

import argparse
import platform
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"


def reference_model(name: str, steps: int | None):
    """A built-in reference model, sampled with DDIM ``steps`` (None: its own sampler)."""
    import accel

    return accel.load(name, sampling={"steps": steps} if steps else None)


def quality_row(report) -> dict:
    """A quantized model's measures against the original, from its side-by-side report."""
    return {
        "size_mb": report.compressed.size_bytes / 1e6,
        "fid": report.compressed.fid,
        "original_fid": report.original.fid,
        "fid_ratio": report.delta.fid_ratio,
        "psnr_db": report.delta.psnr_db_vs_original,
        "feature_distance": report.delta.feature_distance_vs_original,
    }


def one_model_args(
    description: str, models: tuple[str, ...], default_samples: int, argv: list[str] | None
) -> argparse.Namespace:
    """The command line of a benchmark of one built-in model at a time: --quick, --model, --seed,
    --samples, --out."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--model", choices=models, default=models[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--samples", type=int, help=f"samples per model (default {default_samples})"
    )
    parser.add_argument("--out", type=Path, help="markdown report (a .json beside it)")
    return parser.parse_args(argv)


def one_model_output(bench: str, args: argparse.Namespace) -> tuple[Path, str]:
    """Where such a benchmark writes (bench/<bench>_<model>_quick.md, or its full result under
    bench/results/) and the command that reproduces the run."""
    stem = f"{bench}_{args.model}"
    out = args.out or (HERE / f"{stem}_quick.md" if args.quick else RESULTS / f"{stem}_cpu.md")
    flags = f" --model {args.model}" + "".join(
        f" --{flag} {value}"
        for flag, value, default in (("seed", args.seed, 0), ("samples", args.samples, None))
        if value != default
    )
    return out, f"python -m bench.{bench}{' --quick' if args.quick else ''}{flags}"


def goal(label: str, measured: float | None, bound: float, at_least: bool = False) -> dict:
    """``measured`` against ``bound`` (at most, or ``at_least``): the goal's record, whose ``line``
    is its markdown."""
    met = None if measured is None else (measured >= bound if at_least else measured <= bound)
    word = "unmeasured" if met is None else "met" if met else "missed"
    shown = "-" if measured is None else f"{measured:.3g}"
    return {
        "goal": label,
        "bound": bound,
        "at_least": at_least,
        "measured": measured,
        "met": met,
        "line": f"{label} ({'at least' if at_least else 'at most'} {bound:g}): {word} ({shown})",
    }


def machine() -> dict:
    """The CPU (lscpu's model name), cores, threads of each runtime, versions and commit a result
    came from."""
    import onnxruntime
    import torch

    import accel
    from accel.evaluate import device_name
    from accel.report.schema import threads

    return {
        "machine": device_name(torch.device("cpu")),
        "threads": threads(),
        "versions": {
            "accel": accel.__version__,
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version(),
        },
        "commit": _commit(),
    }


def write_results(
    out: Path,
    title: str,
    command: str,
    start: float,
    body: str,
    results: dict,
    model: str = "digits",
) -> str:
    """A benchmark's markdown (title, machine, threads, versions, the command and its wall time,
    then ``body``) at ``out`` and its JSON (``results`` with the same context) beside it; returns
    the markdown."""
    from accel.core.files import write_text
    from accel.report import to_json

    context, wall_s = machine(), time.perf_counter() - start
    threads = ", ".join(f"{runtime} {count}" for runtime, count in context["threads"].items())
    versions = ", ".join(f"{name} {version}" for name, version in context["versions"].items())
    text = (
        f"# {title}: {model} on {context['machine']}\n\nthreads: {threads}; {versions}; commit "
        f"{context['commit']}; `{command}` in {wall_s:.0f} s\n\n" + body
    )
    write_text(out, text)
    write_text(
        out.with_suffix(".json"),
        to_json({**results, **context, "command": command, "wall_s": wall_s}),
    )
    return text


def _commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=HERE,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
