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
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from accel.core import registry
from accel.core.errors import AccelError
from accel.core.files import atomic_file, ensure_writable_file
from accel.core.registry import BLOCK_DEQUANTIZE, PLACEHOLDER_DOMAIN
from accel.export.config import (BLOCKED_OPSET, CACHED_STEP_KEY, DEFAULT_OPSET, DTYPES, EXPORT, METADATA_KEY,
                                 ExportConfig)

TRACE_MAX_OPSET = 20      # torch's TorchScript exporter; higher opsets are reached with onnx's version converter
PARITY_TIMESTEPS = (999, 500, 20)
PARITY_BATCHES = (2, 3)   # 3 differs from the traced batch: checks the dynamic batch axis
# max |ORT - PyTorch| / max |PyTorch| over the parity inputs, PyTorch being the float32 model in its exported
# form. It must separate export bugs (a wrong scale, axis or layout: errors of order 1 on every input) from
# arithmetic noise. Float graphs differ only by operator order (the goal: 1e-4). In a Q/DQ graph, an
# activation within float rounding of an INT8 rounding boundary can land one step (1/127 of its range) apart, and
# the step propagates: measured at 6.4e-3 on the reference model at W8A8, and 4.1e-2 on one of six inputs of the
# random tiny text UNet at W4A8 (a third of its outputs moved). 5e-2 allows such a step, not a bug. fp16 graphs
# are compared with the float32 model: fp16's 2^-11 rounding over the network's depth measured 1e-3 or less;
# 1e-2 is the fp16 tolerance `accel optimize` uses.
TOLERANCE = {("float", "fp32"): 1e-4, ("qdq", "fp32"): 5e-2, ("float", "fp16"): 1e-2, ("qdq", "fp16"): 5e-2}


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


FEATURE = "cached_feature"  # the full step's extra output and the cached step's extra input
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


def _dynamic_axes(denoiser, names: list[str]) -> dict:
    """Every input and output has a dynamic batch; a UNet's images (and a cached feature) dynamic height and
    width."""
    axes = {name: {0: "batch"} for name in names}
    if denoiser.kind in ("unet", "unet-text"):
        for name, size in (("sample", ""), ("eps", ""), (FEATURE, "feature_")):
            if name in axes:
                axes[name].update({2: f"{size}height", 3: f"{size}width"})
    return axes


def parity_inputs(denoiser, seed: int = 1234) -> list[tuple]:
    """Fresh random (x, t, cond) at several timesteps and batch sizes, as float32 CPU tensors."""
    inputs = []
    for batch in PARITY_BATCHES:
        for index, t in enumerate(PARITY_TIMESTEPS):
            x, steps, cond = denoiser.example_inputs(batch, t=t, seed=seed + 10 * batch + index)
            inputs.append((x.float().cpu(), steps.cpu(), None if cond is None else cond.cpu()))
    return inputs


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
        raise AccelError(f"--opset {config.opset} is too low for INT4: {len(blocked)} linear layers (first: "
                         f"{blocked[0]}) need blocked INT4/INT8 DequantizeLinear from opset {BLOCKED_OPSET}; use "
                         f"--opset {BLOCKED_OPSET}, or --int8-grid to write their 4-bit codes on the INT8 grid")
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
    opset = resolve_opset(config, [name for form in _export_forms(denoiser) for name in form.blocked_layers(
        denoiser.module)])
    denoiser = export_copy(denoiser)
    names = input_names(denoiser)
    checks = parity_inputs(denoiser)
    as_given = [_reference_full_step(denoiser, args)[0].numpy() for args in checks]
    start = time.perf_counter()
    converted = _to_export_form(denoiser, blocked=opset >= BLOCKED_OPSET and not config.int8_grid)
    form = "qdq" if converted["qdq_layers"] else "float"
    # The gate's reference: the float32 PyTorch model in its exported form. For a quantized model that form
    # differs from the fake-quantized model by design (attention in float); that difference is reported apart.
    expected_full = [_reference_full_step(denoiser, args) for args in checks]
    expected = [eps.numpy() for eps, _ in expected_full]
    full_graph = (_FullStepGraph if cached_out else _EpsGraph)(denoiser).eval()
    cached_graph = _CachedStepGraph(denoiser).eval() if cached_out else None
    if cached_graph is not None:
        features = _from_other_steps([feature for _, feature in expected_full])
        expected_cached = [_reference_cached_step(denoiser, args, feature).numpy()
                           for args, feature in zip(checks, features)]
        macs_cached = _cached_macs(cached_graph, checks[0], features[0])
    denoiser.to(DTYPES[config.dtype])
    checks = [_as_dtype(args, DTYPES[config.dtype]) for args in checks]
    meta = metadata(denoiser, opset, form, config.dtype)
    tolerance = TOLERANCE[form, config.dtype]
    with contextlib.ExitStack() as stack:
        partial = stack.enter_context(atomic_file(out))
        if cached_out is not None:
            cached_partial = stack.enter_context(atomic_file(cached_out))
            meta["step_graphs"] = {"cached": cached_out.name, "feature": FEATURE, "macs_cached": macs_cached}
        outputs = ["eps", FEATURE] if cached_out else ["eps"]
        model = _write_graph(full_graph, checks[0], names, outputs, partial, opset, {METADATA_KEY: meta})
        record = {"form": form, "opset": opset, "dtype": config.dtype, **converted,
                  "export_s": time.perf_counter() - start, "ops": _op_counts(model),
                  "exported_form_vs_model_max_rel": _max_rel(expected, as_given)}
        record["parity"] = _checked(check_parity(str(partial), names, checks, expected, tolerance), "")
        if cached_out is not None:
            record["cached_graph"] = _write_cached_graph(cached_graph, partial, cached_partial, names, checks,
                                                         expected_cached, tolerance, opset, out.name)
            record["cached_graph"]["out"] = str(cached_out)
    record["bytes"] = out.stat().st_size + (cached_out.stat().st_size if cached_out else 0)
    return record


def _write_cached_graph(graph: nn.Module, full_path: Path, path: Path, names: list[str], checks: list[tuple],
                        expected: list[np.ndarray], tolerance: float, opset: int, full_name: str) -> dict:
    """The cached-step graph, checked as a sampler runs it: fed by the features ONNX Runtime's full step (at
    ``full_path``, to be renamed ``full_name``) wrote."""
    full_outputs = _ort_outputs(str(full_path), names, checks, FEATURE)
    inputs = [(*args, feature) for args, feature in zip(checks, _from_other_steps(
        [torch.from_numpy(f) for f in full_outputs]))]
    names = [*names, FEATURE]
    model = _write_graph(graph, inputs[0], names, ["eps"], path, opset, {CACHED_STEP_KEY: {"of": full_name}})
    parity = check_parity(str(path), names, inputs, expected, tolerance)
    return {"ops": _op_counts(model), "parity": _checked(parity, "cached-step graph fed by the full step's: ")}


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


def _write_graph(graph: nn.Module, example: tuple, names: list[str], outputs: list[str], path: Path, opset: int,
                 props: dict):
    """Trace ``graph`` into ``path`` at ``opset``, check it, infer its shapes and store ``props`` (as JSON)."""
    import onnx

    _trace(graph, example, names, outputs, path, min(opset, TRACE_MAX_OPSET), opset > TRACE_MAX_OPSET)
    model = onnx.load(str(path))
    if opset > TRACE_MAX_OPSET:
        model = _raise_opset(model, opset)
    onnx.checker.check_model(model, full_check=True)
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.helper.set_model_props(model, {key: json.dumps(value, default=str) for key, value in props.items()})
    onnx.save(model, str(path))
    return model


def _cached_macs(cached_graph: nn.Module, example: tuple, feature: torch.Tensor) -> int:
    """MACs of one cached step on one sample."""
    from accel.metrics.size import counted_macs

    one = tuple(None if a is None else a[:1] for a in example)
    return counted_macs(lambda: cached_graph(*one, feature[:1]))


def _as_dtype(args: tuple, dtype: torch.dtype) -> tuple:
    """Floating-point inputs in the graph's dtype; integer timesteps and labels as they are."""
    return tuple(a.to(dtype) if a is not None and a.is_floating_point() else a for a in args)


def _trace(graph: nn.Module, example: tuple, names: list[str], outputs: list[str], path: Path, opset: int,
           placeholders: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python branches
        torch.onnx.export(graph, tuple(a for a in example if a is not None), str(path),
                          input_names=names, output_names=outputs,
                          dynamic_axes=_dynamic_axes(graph.denoiser, [*names, *outputs]), opset_version=opset,
                          dynamo=False, custom_opsets={PLACEHOLDER_DOMAIN: 1} if placeholders else None)


def _raise_opset(model, opset: int):
    """A graph traced at opset 20 raised to ``opset`` by onnx's version converter, with every blocked placeholder
    rewritten to the standard (opset 21) DequantizeLinear, 4-bit codes as INT4."""
    import ml_dtypes
    from onnx import numpy_helper, version_converter

    initializers = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if (node.domain, node.op_type) == (PLACEHOLDER_DOMAIN, BLOCK_DEQUANTIZE):
            bits = next(a.i for a in node.attribute if a.name == "bits")
            kept = [a for a in node.attribute if a.name != "bits"]
            del node.attribute[:]
            node.attribute.extend(kept)
            node.domain, node.op_type = "", "DequantizeLinear"
            if bits <= 4:
                codes = initializers[node.input[0]]
                values = numpy_helper.to_array(codes).astype(ml_dtypes.int4)
                codes.CopyFrom(numpy_helper.from_array(values, codes.name))
    standard = [entry for entry in model.opset_import if entry.domain != PLACEHOLDER_DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(standard)
    return version_converter.convert_version(model, opset)


def _op_counts(model) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def check_parity(path: str, names: list[str], inputs: list[tuple], expected: list[np.ndarray],
                 tolerance: float) -> dict:
    """ONNX Runtime (CPU; CUDA first where installed) against the PyTorch outputs on the same inputs."""
    from accel.export.runtime import ort_session

    session = ort_session(path)
    got = [output.astype(np.float32) for output in _run(session, names, inputs, "eps")]
    worst_abs = max(float(np.abs(a - b).max()) for a, b in zip(got, expected))
    worst_rel = _max_rel(got, expected)
    return {"provider": session.get_providers()[0], "inputs": len(inputs), "timesteps": list(PARITY_TIMESTEPS),
            "batches": list(PARITY_BATCHES), "max_abs": worst_abs, "max_rel": worst_rel, "tolerance": tolerance,
            "met": worst_rel <= tolerance}


def _ort_outputs(path: str, names: list[str], inputs: list[tuple], output: str) -> list[np.ndarray]:
    from accel.export.runtime import ort_session

    return _run(ort_session(path), names, inputs, output)


def _run(session, names: list[str], inputs: list[tuple], output: str) -> list[np.ndarray]:
    """``output`` of ``session`` for each input tuple (None entries, absent conditioning, skipped)."""
    feeds = [{name: tensor.numpy() for name, tensor in zip(names, (t for t in args if t is not None))}
             for args in inputs]
    return [session.run([output], feed)[0] for feed in feeds]


def _max_rel(outputs: list[np.ndarray], references: list[np.ndarray]) -> float:
    """max |output - reference| / max |reference|, the worst over the pairs."""
    return max(float(np.abs(o - r).max()) / max(float(np.abs(r).max()), 1e-12) for o, r in zip(outputs, references))
