"""Tracing a module into a checked ONNX file: the TorchScript exporter up to opset 20, onnx's
version converter above it (with the blocked INT4 placeholders rewritten to standard ops), shape
inference and metadata."""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from accel.core.errors import AccelError
from accel.core.registry import BLOCK_DEQUANTIZE, BLOCK_QUANTIZE, PLACEHOLDER_DOMAIN
from accel.export.config import DTYPES, ExportConfig
from accel.export.graph_passes import resolve_static_squeezes, share_scalar_constants
from accel.export.symbolics import runtime_fusable_ops

# torch's TorchScript exporter; higher opsets are reached with onnx's version converter
TRACE_MAX_OPSET = 20
FEATURE = "cached_feature"  # the full step's extra output and the cached step's extra input
# protobuf serializes no message over 2 GB: a graph whose weights pass this keeps them in one data
# file beside the .onnx (ONNX's external data), as Stable Diffusion's UNet in float32 (3.4 GB) must
EXTERNAL_DATA_BYTES = 2**31 - 2**26


def dynamic_axes(denoiser, names: list[str]) -> dict:
    """Every input and output has a dynamic batch; a UNet's images (and a cached feature) dynamic
    height and width."""
    axes = {name: {0: "batch"} for name in names}
    if denoiser.kind in ("unet", "unet-text"):
        for name, size in (("sample", ""), ("eps", ""), (FEATURE, "feature_")):
            if name in axes:
                axes[name].update({2: f"{size}height", 3: f"{size}width"})
    return axes


def write_graph(
    graph: nn.Module,
    example: tuple,
    names: list[str],
    outputs: list[str],
    path: Path,
    opset: int,
    props: dict,
    data_name: str | None = None,
):
    """Trace ``graph`` into ``path`` at ``opset``, check it, infer its shapes and store ``props``
    (as JSON). Weights over ``EXTERNAL_DATA_BYTES`` go to ``data_name`` beside ``path`` (the name
    the graph refers to them by). Returns the graph without its weights' data."""
    import onnx

    # the tracer writes a large graph's weights as one file per tensor beside it: its own folder
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".trace-") as folder:
        traced = Path(folder) / "graph.onnx"
        _trace(
            graph,
            example,
            names,
            outputs,
            traced,
            min(opset, TRACE_MAX_OPSET),
            opset > TRACE_MAX_OPSET,
        )
        model = onnx.load(str(traced))
        resolve_static_squeezes(model)
        share_scalar_constants(model)
        if opset > TRACE_MAX_OPSET:
            model = _raise_opset(model, opset)
        if weight_bytes(model) <= EXTERNAL_DATA_BYTES:
            _finish(model, props)
            onnx.save(model, str(path))
            return model
        if data_name is None:
            raise ValueError("a graph over 2 GB needs a data file name")
        _save_external(model, traced, "graph.onnx.data")
        onnx.checker.check_model(str(traced), full_check=True)  # by path: no 2 GB message
        onnx.shape_inference.infer_shapes_path(str(traced), str(traced), True, True)
        model = onnx.load(str(traced))
        onnx.helper.set_model_props(model, _props_text(props))
        _save_external(model, path, data_name)
    return onnx.load(str(path), load_external_data=False)


def weight_bytes(model) -> int:
    return sum(len(tensor.raw_data) for tensor in model.graph.initializer)


def _finish(model, props: dict) -> None:
    import onnx

    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    model.CopyFrom(inferred)
    onnx.helper.set_model_props(model, _props_text(props))


def _props_text(props: dict) -> dict:
    return {key: json.dumps(value, default=str) for key, value in props.items()}


def _save_external(model, path: Path, data_name: str) -> None:
    import onnx

    onnx.save(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data_name,
        size_threshold=1024,
    )


def _trace(
    graph: nn.Module,
    example: tuple,
    names: list[str],
    outputs: list[str],
    path: Path,
    opset: int,
    placeholders: bool,
) -> None:
    with warnings.catch_warnings(), runtime_fusable_ops(opset):
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python branches
        torch.onnx.export(
            graph,
            tuple(a for a in example if a is not None),
            str(path),
            input_names=names,
            output_names=outputs,
            dynamic_axes=dynamic_axes(graph.denoiser, [*names, *outputs]),
            opset_version=opset,
            dynamo=False,
            custom_opsets={PLACEHOLDER_DOMAIN: 1} if placeholders else None,
        )


def _raise_opset(model, opset: int):
    """A graph traced at opset 20 raised to ``opset`` by onnx's version converter, with every
    blocked placeholder rewritten to the standard (opset 21) QuantizeLinear or DequantizeLinear,
    4-bit codes as INT4."""
    from onnx import version_converter

    initializers = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.domain != PLACEHOLDER_DOMAIN:
            continue
        bits = next(a.i for a in node.attribute if a.name == "bits")
        kept = [a for a in node.attribute if a.name != "bits"]
        del node.attribute[:]
        node.attribute.extend(kept)
        node.domain = ""
        if node.op_type == BLOCK_QUANTIZE:
            _to_quantize_linear(node, bits)
        elif node.op_type == BLOCK_DEQUANTIZE:
            node.op_type = "DequantizeLinear"
            if bits <= 4 and node.input[0] in initializers:  # a weight's codes
                _to_int4(initializers[node.input[0]])
    standard = [entry for entry in model.opset_import if entry.domain != PLACEHOLDER_DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(standard)
    model = version_converter.convert_version(model, opset)
    # the converter types QuantizeLinear's codes by opset 20's rule (uint8 without a zero point);
    # shape inference retypes them by output_dtype
    codes = {n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    typed = [v for v in model.graph.value_info if v.name not in codes]
    del model.graph.value_info[:]
    model.graph.value_info.extend(typed)
    return model


def _to_quantize_linear(node, bits: int) -> None:
    """QuantizeLinear with no zero point (ONNX Runtime wants a blocked one shaped as the input) and
    the codes' type as ``output_dtype``."""
    from onnx import TensorProto, helper

    node.op_type = "QuantizeLinear"
    dtype = TensorProto.INT4 if bits <= 4 else TensorProto.INT8
    node.attribute.append(helper.make_attribute("output_dtype", dtype))


def _to_int4(codes) -> None:
    import ml_dtypes
    from onnx import numpy_helper

    values = numpy_helper.to_array(codes).astype(ml_dtypes.int4)
    codes.CopyFrom(numpy_helper.from_array(values, codes.name))


def op_counts(model) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def input_names(denoiser) -> list[str]:
    cond = {"class": ["class_labels"], "text": ["encoder_hidden_states"]}.get(
        denoiser.cond_kind, []
    )
    # a guidance-distilled student takes its guidance weight, one per sample
    weight = ["guidance"] if denoiser.guidance_range else []
    return ["sample", "timestep", *cond, *weight]


def metadata(denoiser, opset: int, form: str, config) -> dict:
    from accel.metrics.size import count_macs, count_params

    return {
        "kind": denoiser.kind,
        "cond_kind": denoiser.cond_kind,
        "sample_shape": list(denoiser.sample_shape),
        "scheduler_config": denoiser.scheduler_config,
        "config": denoiser.config,
        "source": denoiser.source,
        "transforms": denoiser.transforms,
        "sampling": denoiser.sampling.to_dict(),
        "params": count_params(denoiser),
        "macs": count_macs(denoiser),
        "opset": opset,
        "form": form,
        "target": config.target if form == "qdq" else None,
        "dtype": config.dtype,
        "inputs": input_names(denoiser),
        "guidance_range": list(denoiser.guidance_range) if denoiser.guidance_range else None,
    }


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
