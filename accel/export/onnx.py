"""Export a denoiser to ONNX (float, or Q/DQ for quantized layers) and check it with ONNX Runtime.

The graph computes eps exactly as ``Denoiser`` does: inputs ``sample`` (N, C, H, W) and ``timestep``
(N,) int64, plus ``class_labels`` (N,) int64 or ``encoder_hidden_states`` (N, L, D) when the model
is conditional; output ``eps``. Floating-point inputs, weights and ``eps`` are float32, or float16
with ``dtype="fp16"``. Batch is dynamic (and height/width for UNets). The model's sampling metadata
(scheduler, sample shape, conditioning, diffusers config) travels in the file's metadata, so
``accel eval --model x.onnx`` can sample from it without the original. Export works on a copy: the
caller's model is never moved, cast or converted.

Opset 19 by default: what NVIDIA's diffusion demo exports for TensorRT 10, and enough for
per-channel INT8 DequantizeLinear. Opset 21 (chosen automatically when a transform has layers that
want blocked scales: 4-bit or per-group-scaled linear layers) adds INT4 and blocked scales, so those
layers go out as blocked DequantizeLinear, 4-bit weights as INT4; ``int8_grid=True`` keeps every
weight on the INT8 grid instead. How a transform's layers become exportable ops is the transform's
``ExportForm`` in the registry; this module traces, checks and runs what they give.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from accel.core import registry
from accel.core.errors import AccelError, ConfigError
from accel.core.files import atomic_file, ensure_writable_file
from accel.export.config import (
    BLOCKED_OPSET,
    CACHED_STEP_KEY,
    DEFAULT_OPSET,
    DTYPES,
    EXPORT,
    METADATA_KEY,
    ExportConfig,
)
from accel.export.graph import FEATURE, input_names, metadata, op_counts, write_graph
from accel.export.parity import (
    TOLERANCE,
    check_parity,
    max_rel,
    ort_outputs,
    parity_inputs,
)
from accel.export.steps import (
    CachedStepGraph,
    EpsGraph,
    FullStepGraph,
    cached_graph_path,
    cached_step_macs,
    from_other_steps,
    reference_cached_step,
    reference_full_step,
    step_splitter,
)


def _export_forms(denoiser) -> list[registry.ExportForm]:
    return [t.export for t in registry.applied(denoiser) if t.export is not None]


def resolve_opset(config: ExportConfig, blocked: list[str]) -> int:
    """The opset to write: 19, or 21 when layers go out blocked (INT4); a chosen one is checked
    against them."""
    wants_blocks = bool(blocked) and not config.int8_grid
    if config.opset is None:
        return BLOCKED_OPSET if wants_blocks else DEFAULT_OPSET
    if wants_blocks and config.opset < BLOCKED_OPSET:
        raise ConfigError(
            "ExportConfig",
            "opset",
            f"{config.opset} is too low for INT4: {len(blocked)} linear layers "
            f"(first: {blocked[0]}) need blocked INT4/INT8 DequantizeLinear "
            f"from opset {BLOCKED_OPSET}; use opset {BLOCKED_OPSET}, or "
            "`int8_grid` to write their 4-bit codes on the INT8 grid",
        )
    return config.opset


def export_copy(denoiser):
    """A float32 CPU copy of ``denoiser`` to convert and trace (its step hooks start fresh in the
    copy and are not traced: the graph is one denoiser call)."""
    return copy.deepcopy(denoiser).float().cpu().eval()


def _to_export_form(denoiser, blocked: bool) -> dict:
    """Every applied transform's layers rewritten into traceable ops; their counts, summed."""
    counts = {"qdq_layers": 0, "int4_layers": 0}
    for form in _export_forms(denoiser):
        for key, value in form.convert(denoiser.module, blocked).items():
            counts[key] = counts.get(key, 0) + value
    return counts


@dataclass
class _Prepared:
    """The model in its exported form, cast to the graph's dtype, with the parity gate's inputs and
    references."""

    denoiser: object
    names: list[str]  # the graph's inputs
    checks: list[tuple]  # parity inputs, in the graph's dtype
    expected: list[np.ndarray]  # eps of the exported form on them, in float32: the gate's reference
    form: str  # float or qdq
    counts: dict  # Q/DQ and INT4 layers
    form_vs_model: float  # max relative gap between the exported form and the model as given
    meta: dict
    # a cached model's (cached-step graph, its expected eps, MACs of a cached step)
    cached: tuple | None = None


@torch.no_grad()
def export_onnx(
    denoiser, out: str | Path, config: ExportConfig = ExportConfig(), overwrite: bool = False
) -> dict:
    """Write ``denoiser`` as ONNX to ``out`` (atomically), check it, and compare ONNX Runtime with
    PyTorch.

    A model whose steps come in two forms (feature caching) is written as two graphs: ``out`` runs a
    full step and also returns the feature to carry (``FEATURE``); ``x.cached.onnx`` beside it runs
    a cached step from that feature. Two static graphs rather than one with an If node: each runtime
    optimizes each graph whole (TensorRT builds one engine per graph with its own tactics), and the
    cached graph holds only the shallow levels' weights, so the pair is barely larger than one file.

    Returns the export record: form (float or qdq), opset, dtype, ops, Q/DQ counts, parity errors
    and tolerance (and the cached graph's, under ``cached_graph``).
    """
    registry.check_can_follow(denoiser.transforms, EXPORT)
    out = ensure_writable_file(out, (".onnx",), "a .onnx file", overwrite)
    cached_out = cached_graph_path(out) if step_splitter(denoiser) is not None else None
    if cached_out is not None:
        ensure_writable_file(cached_out, (".onnx",), "a .onnx file", overwrite)
    opset = resolve_opset(
        config,
        [name for form in _export_forms(denoiser) for name in form.blocked_layers(denoiser.module)],
    )
    check_disk_room(denoiser, out, config)
    start = time.perf_counter()
    prepared = _prepare(export_copy(denoiser), config, opset)
    tolerance = TOLERANCE[prepared.form, config.dtype]
    data_files = [data_file(out)] + ([data_file(cached_out)] if cached_out else [])
    try:
        record = _write_graphs(prepared, out, cached_out, opset, config, tolerance, start)
    except BaseException:
        for file in data_files:  # a large graph's weights, written before the graph lands
            file.unlink(missing_ok=True)
        raise
    written = [file for file in data_files if file.is_file()]
    if written:
        record["external_data"] = [file.name for file in written]
    record["bytes"] = sum(
        file.stat().st_size for file in [out, *([cached_out] if cached_out else []), *written]
    )
    return record


def data_file(graph: Path) -> Path:
    """Where a graph over 2 GB keeps its weights: ``x.onnx.data`` beside ``x.onnx``."""
    return graph.with_name(graph.name + ".data")


# the tracer's per-tensor files, the data file they are gathered into, then the final one
TRACE_COPIES = 3


def check_disk_room(denoiser, out: Path, config: ExportConfig) -> None:
    """Refuse before starting where the graph's weights cannot be written (in one line, nothing
    written)."""
    per_value = torch.empty((), dtype=DTYPES[config.dtype]).element_size()
    needed = TRACE_COPIES * sum(p.numel() for p in denoiser.parameters()) * per_value
    free = shutil.disk_usage(out.parent if out.parent.is_dir() else Path.cwd()).free
    if needed > free:
        raise AccelError(
            f"exporting to {out.parent} needs about {needed / 1e9:.1f} GB of free disk (the "
            f"weights traced, gathered and written: {TRACE_COPIES} copies); "
            f"{free / 1e9:.1f} GB free"
        )


def _write_graphs(prepared, out, cached_out, opset, config, tolerance, start) -> dict:
    """The full-step graph (and a cached model's cached-step graph), each checked, landed
    together."""
    with contextlib.ExitStack() as stack:
        partial = stack.enter_context(atomic_file(out))
        if cached_out is not None:
            cached_partial = stack.enter_context(atomic_file(cached_out))
            prepared.meta["step_graphs"] = {
                "cached": cached_out.name,
                "feature": FEATURE,
                "macs_cached": prepared.cached[2],
            }
        record = _write_full_graph(
            prepared, partial, opset, config, tolerance, start, data_file(out).name
        )
        if cached_out is not None:
            graph, expected, _ = prepared.cached
            record["cached_graph"] = {
                **_write_cached_graph(
                    graph,
                    partial,
                    cached_partial,
                    prepared.names,
                    prepared.checks,
                    expected,
                    tolerance,
                    opset,
                    out.name,
                ),
                "out": str(cached_out),
            }
    return record


def _prepare(denoiser, config: ExportConfig, opset: int) -> _Prepared:
    """``denoiser`` (a copy) converted to its exported form and cast, with what the parity gate
    compares."""
    checks = parity_inputs(denoiser)
    as_given_full = [reference_full_step(denoiser, args) for args in checks]
    counts = _to_export_form(denoiser, blocked=opset >= BLOCKED_OPSET and not config.int8_grid)
    form = "qdq" if counts["qdq_layers"] else "float"
    # The gate's reference: the float32 PyTorch model in its exported form. For a quantized model
    # that form differs from the fake-quantized model by design (attention in float); that
    # difference is reported apart. A network no transform rewrote is its own exported form: its
    # outputs are computed once (15 images of SD1.5's UNet are minutes on a CPU).
    expected_full = (
        [reference_full_step(denoiser, args) for args in checks]
        if _export_forms(denoiser)
        else as_given_full
    )
    as_given = [eps.numpy() for eps, _ in as_given_full]
    expected = [eps.numpy() for eps, _ in expected_full]
    cached = None
    if step_splitter(denoiser) is not None:
        graph = CachedStepGraph(denoiser).eval()
        features = from_other_steps([feature for _, feature in expected_full])
        cached = (
            graph,
            [
                reference_cached_step(denoiser, args, feature).numpy()
                for args, feature in zip(checks, features)
            ],
            cached_step_macs(graph, checks[0], features[0]),
        )
    denoiser.to(DTYPES[config.dtype])
    return _Prepared(
        denoiser,
        input_names(denoiser),
        [_as_dtype(args, DTYPES[config.dtype]) for args in checks],
        expected,
        form,
        counts,
        max_rel(expected, as_given),
        metadata(denoiser, opset, form, config.dtype),
        cached,
    )


def _write_full_graph(
    prepared: _Prepared,
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
        "opset": opset,
        "dtype": config.dtype,
        **prepared.counts,
        "export_s": time.perf_counter() - start,
        "ops": op_counts(model),
        "exported_form_vs_model_max_rel": prepared.form_vs_model,
        "parity": _checked(parity, ""),
    }


def _write_cached_graph(
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


def _as_dtype(args: tuple, dtype: torch.dtype) -> tuple:
    """Floating-point inputs in the graph's dtype; integer timesteps and labels as they are."""
    return tuple(a.to(dtype) if a is not None and a.is_floating_point() else a for a in args)
