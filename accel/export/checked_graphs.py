"""Each exported graph written and held to the parity gate: ONNX Runtime's outputs against
PyTorch's on the same inputs, or the export fails and nothing is written."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from accel.core.errors import AccelError
from accel.export.config import CACHED_STEP_KEY, METADATA_KEY, ExportConfig
from accel.export.graph import FEATURE, data_file, op_counts, write_graph
from accel.export.parity import check_parity, ort_outputs
from accel.export.steps import EpsGraph, FullStepGraph, cached_graph_path, from_other_steps


def write_full_graph(
    prepared,
    path: Path,
    opset: int,
    config: ExportConfig,
    tolerance: float,
    start: float,
    data_name: str,
) -> dict:
    """The (full-step) graph at ``path``, checked: the export record."""
    graph = (FullStepGraph if prepared.cached else EpsGraph)(prepared.denoiser).eval()
    outputs = ["eps", FEATURE] if prepared.cached else ["eps"]
    model = write_graph(
        graph,
        prepared.checks[0],
        prepared.names,
        outputs,
        path,
        opset,
        {METADATA_KEY: prepared.meta},
        data_name,
    )
    parity = check_parity(str(path), prepared.names, prepared.checks, prepared.expected, tolerance)
    return {
        "form": prepared.form,
        "target": prepared.meta["target"],
        "opset": opset,
        "dtype": config.dtype,
        **prepared.counts,
        "export_s": time.perf_counter() - start,
        "ops": op_counts(model),
        "exported_form_vs_model_max_rel": prepared.form_vs_model,
        "parity": _checked(parity, ""),
    }


def write_cached_graph(
    graph: nn.Module,
    full_path: Path,
    path: Path,
    names: list[str],
    checks: list[tuple],
    expected: list[np.ndarray],
    tolerance: float,
    opset: int,
    full_name: str,
) -> dict:
    """The cached-step graph, checked as a sampler runs it: fed by the features ONNX Runtime's full
    step (at ``full_path``, to be renamed ``full_name``) wrote."""
    full_outputs = ort_outputs(str(full_path), names, checks, FEATURE)
    inputs = [
        (*args, feature)
        for args, feature in zip(
            checks, from_other_steps([torch.from_numpy(f) for f in full_outputs])
        )
    ]
    names = [*names, FEATURE]
    model = write_graph(
        graph,
        inputs[0],
        names,
        ["eps"],
        path,
        opset,
        {CACHED_STEP_KEY: {"of": full_name}},
        data_file(cached_graph_path(path.with_name(full_name))).name,
    )
    parity = check_parity(str(path), names, inputs, expected, tolerance)
    return {
        "ops": op_counts(model),
        "parity": _checked(parity, "cached-step graph fed by the full step's: "),
    }


def _checked(parity: dict, what: str) -> dict:
    if not parity["met"]:
        raise AccelError(
            f"ONNX Runtime disagrees with PyTorch: {what}max relative error "
            f"{parity['max_rel']:.2e} > {parity['tolerance']:g}; nothing was written"
        )
    return parity
