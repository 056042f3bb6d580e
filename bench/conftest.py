"""pytest-benchmark setup for the latency micro-benchmarks (``pytest bench --benchmark-only``).

``--models DIR`` times every model in DIR (accel artifacts, diffusers folders, exported .onnx files)
beside the built-in ``digits``; ``python -m bench.run`` passes the quantized and exported models it
builds. Without it, ``digits`` and its fp32 ONNX export (written to a temporary folder) are timed.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

PYTORCH_BATCHES = (1, 256)  # one image (latency), and a sampling batch (throughput)
EXPORTED_BATCHES = (1,)


def pytest_addoption(parser):
    parser.addoption(
        "--models", help="folder of models to time beside digits (artifacts, .onnx files)"
    )


def pytest_configure(config):
    if config.getoption("--models") or not config.getoption("benchmark_only", False):
        return
    import accel
    from accel.export.onnx import export_onnx

    folder = Path(tempfile.mkdtemp(prefix="accel-bench-"))
    config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))
    export_onnx(accel.load("digits"), folder / "digits-fp32.onnx")
    config.option.models = str(folder)


def pytest_generate_tests(metafunc):
    if "model_to_time" not in metafunc.fixturenames:
        return
    folder = metafunc.config.getoption("--models")
    models = [("digits", "digits")]
    if folder:
        models += [
            (path.name, str(path))
            for path in sorted(Path(folder).iterdir())
            if not path.name.startswith(".")
        ]
    cases = [
        (label, source, batch)
        for label, source in models
        for batch in (EXPORTED_BATCHES if source.endswith((".onnx", ".plan")) else PYTORCH_BATCHES)
    ]
    metafunc.parametrize(
        "model_to_time", cases, ids=[f"{label}-b{batch}" for label, _, batch in cases]
    )
