"""Export a denoiser to ONNX (float, or Q/DQ for quantized layers) and check it with ONNX Runtime.

The graph computes eps exactly as ``Denoiser`` does: inputs ``sample`` (N, C, H, W) and ``timestep`` (N,)
int64, plus ``class_labels`` (N,) int64 or ``encoder_hidden_states`` (N, L, D) when the model is conditional;
output ``eps``. Floating-point inputs, weights and ``eps`` are float32, or float16 with ``dtype="fp16"``. Batch
is dynamic (and height/width for UNets). The model's sampling metadata (scheduler, sample shape, conditioning,
diffusers config) travels in the file's metadata, so ``accel eval --model x.onnx`` can sample from it without
the original. Export works on a copy: the caller's model is never moved, cast or converted.

Opset 19 by default: what NVIDIA's diffusion demo exports for TensorRT 10, and enough for per-channel INT8
DequantizeLinear. Opset 21 (chosen automatically when a transform has layers that want blocked scales: 4-bit
or per-group-scaled linear layers) adds INT4 and blocked scales, so those layers go out as blocked
DequantizeLinear, 4-bit weights as INT4; ``int8_grid=True`` keeps every weight on the INT8 grid instead.
How a transform's layers become exportable ops is the transform's ``ExportForm`` in the registry; this module
traces, checks and runs what they give.
"""
from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from accel.core import registry
from accel.core.errors import AccelError, ConfigError
from accel.core.files import atomic_file, ensure_writable_file
from accel.export.config import (BLOCKED_OPSET, CACHED_STEP_KEY, DEFAULT_OPSET, DTYPES, EXPORT, METADATA_KEY,
                                 ExportConfig)
from accel.export.graph import FEATURE, op_counts, write_graph
from accel.export.parity import PARITY_TIMESTEPS, TOLERANCE, check_parity, max_rel, ort_outputs, parity_inputs

class _EpsGraph(nn.Module):
    """What is traced: the denoiser's own eps computation (conditioning routing, learned-variance slicing)."""

    def __init__(self, denoiser):
        super().__init__()
        self.denoiser = denoiser

    def forward(self, sample, timestep, cond=None):
        return self.denoiser.eps_of(self.denoiser.module, sample, timestep, cond)


class _FullStepGraph(_EpsGraph):
    """A cached model's full step: eps, and the feature its cached steps read (``FEATURE``)."""

    def forward(self, sample, timestep, cond=None):
        with step_splitter(self.denoiser).capturing() as captured:
            eps = super().forward(sample, timestep, cond)
        return eps, captured.feature


class _CachedStepGraph(_EpsGraph):
    """A cached model's cached step: eps from the inputs and the feature of the last full step."""

    def forward(self, sample, timestep, *cond_and_feature):
        *cond, feature = cond_and_feature
        with step_splitter(self.denoiser).reusing(feature):
            return super().forward(sample, timestep, *cond)


CACHED_SUFFIX = ".cached.onnx"


def step_splitter(denoiser):
    """The two forms of step of a model whose hook splits them (feature caching), or None."""
    return next((hook.splitter for hook in denoiser.hooks.values() if hook.splitter is not None), None)


def cached_graph_path(out: Path) -> Path:
    """Where the cached-step graph of ``out`` (the full-step graph) goes: beside it, x.onnx -> x.cached.onnx."""
    return out.with_name(out.stem + CACHED_SUFFIX)


def input_names(denoiser) -> list[str]:
    cond = {"class": ["class_labels"], "text": ["encoder_hidden_states"]}.get(denoiser.cond_kind, [])
    return ["sample", "timestep", *cond]


def metadata(denoiser, opset: int, form: str, dtype: str) -> dict:
    from accel.metrics.size import count_macs, count_params

    return {"kind": denoiser.kind, "cond_kind": denoiser.cond_kind, "sample_shape": list(denoiser.sample_shape),
            "scheduler_config": denoiser.scheduler_config, "config": denoiser.config, "source": denoiser.source,
            "transforms": denoiser.transforms, "sampling": denoiser.sampling.to_dict(),
            "params": count_params(denoiser), "macs": count_macs(denoiser), "opset": opset, "form": form,
            "dtype": dtype, "inputs": input_names(denoiser)}


def _export_forms(denoiser) -> list[registry.ExportForm]:
    return [t.export for t in registry.applied(denoiser) if t.export is not None]


def resolve_opset(config: ExportConfig, blocked: list[str]) -> int:
    """The opset to write: 19, or 21 when layers go out blocked (INT4); a chosen one is checked against them."""
    wants_blocks = bool(blocked) and not config.int8_grid
    if config.opset is None:
        return BLOCKED_OPSET if wants_blocks else DEFAULT_OPSET
    if wants_blocks and config.opset < BLOCKED_OPSET:
        raise ConfigError("ExportConfig", "opset", f"{config.opset} is too low for INT4: {len(blocked)} linear "
                          f"layers (first: {blocked[0]}) need blocked INT4/INT8 DequantizeLinear from opset "
                          f"{BLOCKED_OPSET}; use opset {BLOCKED_OPSET}, or `int8_grid` to write their 4-bit codes "
                          "on the INT8 grid")
    return config.opset


def export_copy(denoiser):
    """A float32 CPU copy of ``denoiser`` to convert and trace (its step hooks start fresh in the copy and are
    not traced: the graph is one denoiser call)."""
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
    """The model in its exported form, cast to the graph's dtype, with the parity gate's inputs and references."""

    denoiser: object
    names: list[str]  # the graph's inputs
    checks: list[tuple]  # parity inputs, in the graph's dtype
    expected: list[np.ndarray]  # eps of the exported form on them, in float32: the gate's reference
    form: str  # float or qdq
    counts: dict  # Q/DQ and INT4 layers
    form_vs_model: float  # max relative gap between the exported form and the model as given
    meta: dict
    cached: tuple | None = None  # a cached model's (cached-step graph, its expected eps, MACs of a cached step)


@torch.no_grad()
def export_onnx(denoiser, out: str | Path, config: ExportConfig = ExportConfig(), overwrite: bool = False) -> dict:
    """Write ``denoiser`` as ONNX to ``out`` (atomically), check it, and compare ONNX Runtime with PyTorch.

    A model whose steps come in two forms (feature caching) is written as two graphs: ``out`` runs a full step
    and also returns the feature to carry (``FEATURE``); ``x.cached.onnx`` beside it runs a cached step from that
    feature. Two static graphs rather than one with an If node: each runtime optimizes each graph whole (TensorRT
    builds one engine per graph with its own tactics), and the cached graph holds only the shallow levels'
    weights, so the pair is barely larger than one file.

    Returns the export record: form (float or qdq), opset, dtype, ops, Q/DQ counts, parity errors and tolerance
    (and the cached graph's, under ``cached_graph``).
    """
    registry.check_can_follow(denoiser.transforms, EXPORT)
    out = ensure_writable_file(out, (".onnx",), "a .onnx file", overwrite)
    cached_out = cached_graph_path(out) if step_splitter(denoiser) is not None else None
    if cached_out is not None:
        ensure_writable_file(cached_out, (".onnx",), "a .onnx file", overwrite)
    opset = resolve_opset(config, [name for form in _export_forms(denoiser)
                                   for name in form.blocked_layers(denoiser.module)])
    start = time.perf_counter()
    prepared = _prepare(export_copy(denoiser), config, opset)
    tolerance = TOLERANCE[prepared.form, config.dtype]
    with contextlib.ExitStack() as stack:
        partial = stack.enter_context(atomic_file(out))
        if cached_out is not None:
            cached_partial = stack.enter_context(atomic_file(cached_out))
            prepared.meta["step_graphs"] = {"cached": cached_out.name, "feature": FEATURE,
                                            "macs_cached": prepared.cached[2]}
        record = _write_full_graph(prepared, partial, opset, config, tolerance, start)
        if cached_out is not None:
            graph, expected, _ = prepared.cached
            record["cached_graph"] = {**_write_cached_graph(graph, partial, cached_partial, prepared.names,
                                                            prepared.checks, expected, tolerance, opset, out.name),
                                      "out": str(cached_out)}
    record["bytes"] = out.stat().st_size + (cached_out.stat().st_size if cached_out else 0)
    return record


def _prepare(denoiser, config: ExportConfig, opset: int) -> _Prepared:
    """``denoiser`` (a copy) converted to its exported form and cast, with what the parity gate compares."""
    checks = parity_inputs(denoiser)
    as_given = [_reference_full_step(denoiser, args)[0].numpy() for args in checks]
    counts = _to_export_form(denoiser, blocked=opset >= BLOCKED_OPSET and not config.int8_grid)
    form = "qdq" if counts["qdq_layers"] else "float"
    # The gate's reference: the float32 PyTorch model in its exported form. For a quantized model that form
    # differs from the fake-quantized model by design (attention in float); that difference is reported apart.
    expected_full = [_reference_full_step(denoiser, args) for args in checks]
    expected = [eps.numpy() for eps, _ in expected_full]
    cached = None
    if step_splitter(denoiser) is not None:
        graph = _CachedStepGraph(denoiser).eval()
        features = _from_other_steps([feature for _, feature in expected_full])
        cached = (graph, [_reference_cached_step(denoiser, args, feature).numpy()
                          for args, feature in zip(checks, features)], _cached_macs(graph, checks[0], features[0]))
    denoiser.to(DTYPES[config.dtype])
    return _Prepared(denoiser, input_names(denoiser), [_as_dtype(args, DTYPES[config.dtype]) for args in checks],
                     expected, form, counts, max_rel(expected, as_given),
                     metadata(denoiser, opset, form, config.dtype), cached)


def _write_full_graph(prepared: _Prepared, path: Path, opset: int, config: ExportConfig, tolerance: float,
                      start: float) -> dict:
    """The (full-step) graph at ``path``, checked: the export record."""
    graph = (_FullStepGraph if prepared.cached else _EpsGraph)(prepared.denoiser).eval()
    outputs = ["eps", FEATURE] if prepared.cached else ["eps"]
    model = write_graph(graph, prepared.checks[0], prepared.names, outputs, path, opset,
                        {METADATA_KEY: prepared.meta})
    parity = check_parity(str(path), prepared.names, prepared.checks, prepared.expected, tolerance)
    return {"form": prepared.form, "opset": opset, "dtype": config.dtype, **prepared.counts,
            "export_s": time.perf_counter() - start, "ops": op_counts(model),
            "exported_form_vs_model_max_rel": prepared.form_vs_model, "parity": _checked(parity, "")}


def _write_cached_graph(graph: nn.Module, full_path: Path, path: Path, names: list[str], checks: list[tuple],
                        expected: list[np.ndarray], tolerance: float, opset: int, full_name: str) -> dict:
    """The cached-step graph, checked as a sampler runs it: fed by the features ONNX Runtime's full step (at
    ``full_path``, to be renamed ``full_name``) wrote."""
    full_outputs = ort_outputs(str(full_path), names, checks, FEATURE)
    inputs = [(*args, feature) for args, feature in zip(checks, _from_other_steps(
        [torch.from_numpy(f) for f in full_outputs]))]
    names = [*names, FEATURE]
    model = write_graph(graph, inputs[0], names, ["eps"], path, opset, {CACHED_STEP_KEY: {"of": full_name}})
    parity = check_parity(str(path), names, inputs, expected, tolerance)
    return {"ops": op_counts(model), "parity": _checked(parity, "cached-step graph fed by the full step's: ")}


def _from_other_steps(features: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each parity input's cached feature taken from the next timestep's input of the same batch size, as a
    sampler's cached step reads a feature an earlier step wrote (from its own input, the cached step would
    reproduce the full step exactly and test less)."""
    per_batch = len(PARITY_TIMESTEPS)
    return [features[i - i % per_batch + (i + 1) % per_batch] for i in range(len(features))]


def _reference_full_step(denoiser, args: tuple) -> tuple[torch.Tensor, torch.Tensor | None]:
    """eps (and a cached model's feature) computed by the model itself, not by the graphs that are traced: the
    parity gate's reference."""
    splitter = step_splitter(denoiser)
    if splitter is None:
        return denoiser.eps_of(denoiser.module, *args), None
    with splitter.capturing() as captured:
        eps = denoiser.eps_of(denoiser.module, *args)
    return eps, captured.feature


def _reference_cached_step(denoiser, args: tuple, feature: torch.Tensor) -> torch.Tensor:
    with step_splitter(denoiser).reusing(feature):
        return denoiser.eps_of(denoiser.module, *args)


def _checked(parity: dict, what: str) -> dict:
    if not parity["met"]:
        raise AccelError(f"ONNX Runtime disagrees with PyTorch: {what}max relative error {parity['max_rel']:.2e} > "
                         f"{parity['tolerance']:g}; nothing was written")
    return parity


def _cached_macs(cached_graph: nn.Module, example: tuple, feature: torch.Tensor) -> int:
    """MACs of one cached step on one sample."""
    from accel.metrics.size import counted_macs

    one = tuple(None if a is None else a[:1] for a in example)
    return counted_macs(lambda: cached_graph(*one, feature[:1]))


def _as_dtype(args: tuple, dtype: torch.dtype) -> tuple:
    """Floating-point inputs in the graph's dtype; integer timesteps and labels as they are."""
    return tuple(a.to(dtype) if a is not None and a.is_floating_point() else a for a in args)


