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
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from accel.core import registry
from accel.core.errors import ConfigError
from accel.core.files import atomic_file, ensure_writable_file
from accel.export.attention import with_export_attention
from accel.export.checked_graphs import write_cached_graph, write_full_graph
from accel.export.config import (
    BLOCKED_OPSET,
    DEFAULT_OPSET,
    DTYPES,
    EXPORT,
    ExportConfig,
)
from accel.export.graph import FEATURE, check_disk_room, data_file, input_names, metadata
from accel.export.parity import (
    TOLERANCE,
    max_rel,
    parity_inputs,
)
from accel.export.steps import (
    CachedStepGraph,
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
    """The opset to write: 19, or 21 when layers go out blocked (INT4, per-group or per-token
    scales); a chosen one is checked against them."""
    wants_blocks = bool(blocked) and not config.weights_on_int8_grid
    if config.opset is None:
        return BLOCKED_OPSET if wants_blocks else DEFAULT_OPSET
    if wants_blocks and config.opset < BLOCKED_OPSET:
        raise ConfigError(
            "ExportConfig",
            "opset",
            f"{config.opset} is too low for INT4: {len(blocked)} layers "
            f"(first: {blocked[0]}) need blocked Q/DQ (INT4 weights, per-group or per-token "
            f"scales) from opset {BLOCKED_OPSET}; use opset {BLOCKED_OPSET}, or "
            "`int8_grid` to write 4-bit weight codes on the INT8 grid",
        )
    return config.opset


def export_copy(denoiser):
    """A float32 CPU copy of ``denoiser`` to convert and trace (its step hooks start fresh in the
    copy and are not traced: the graph is one denoiser call)."""
    return copy.deepcopy(denoiser).float().cpu().eval()


def _to_export_form(denoiser, config: ExportConfig, opset: int) -> dict:
    """Every applied transform's layers rewritten into traceable ops; their counts, summed."""
    request = registry.FormRequest(
        blocked=opset >= BLOCKED_OPSET and not config.weights_on_int8_grid,
        target=config.target,
        run_calibration=lambda: _calibration_pass(denoiser, config.range_samples),
    )
    counts = {"qdq_layers": 0, "int4_layers": 0}
    for form in _export_forms(denoiser):
        for key, value in form.convert(denoiser.module, request).items():
            counts[key] = counts.get(key, 0) + value
    return counts


def _calibration_pass(denoiser, samples: int) -> None:
    """``denoiser`` over inputs from ``samples`` trajectories of its own sampler (cached as the
    quantize stage's calibration sets are)."""
    from accel.calib.collect import CalibConfig, calibrate

    calib = calibrate(denoiser, CalibConfig(samples=samples), progress=False)
    calib.run_through(denoiser, "output ranges", progress=False)


def check_target(denoiser, config: ExportConfig) -> None:
    """A target the model's form can take: ort-cpu's integer kernels need quantized layers."""
    if config.target == "ort-cpu" and not _export_forms(denoiser):
        raise config.invalid(
            "target",
            "ort-cpu shapes quantized layers for ONNX Runtime's integer kernels; this model has "
            "none (quantize it first, or export with the default target)",
        )


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
    check_target(denoiser, config)
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
        record = write_full_graph(
            prepared, partial, opset, config, tolerance, start, data_file(out).name
        )
        if cached_out is not None:
            graph, expected, _ = prepared.cached
            record["cached_graph"] = {
                **write_cached_graph(
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
    counts = _to_export_form(denoiser, config, opset)
    counts["export_attention"] = (
        with_export_attention(denoiser.module) if config.dtype == "fp32" else 0
    )
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
        metadata(denoiser, opset, form, config),
        cached,
    )


def _as_dtype(args: tuple, dtype: torch.dtype) -> tuple:
    """Floating-point inputs in the graph's dtype; integer timesteps and labels as they are."""
    return tuple(a.to(dtype) if a is not None and a.is_floating_point() else a for a in args)
