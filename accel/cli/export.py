"""``accel export onnx|trt``: the model as a checked ONNX graph or a TensorRT engine (the export
stage)."""

from __future__ import annotations

import argparse
from pathlib import Path

from accel.cli.common import (
    Command,
    add_model_flags,
    add_out_flags,
    add_stage_flag,
    emit,
    stage_given,
)
from accel.core import stages
from accel.export.config import FORMATS


def _flags(parser: argparse.ArgumentParser) -> None:
    stage = stages.get("export")
    parser.add_argument(
        "format", choices=tuple(FORMATS), help="onnx: a .onnx file; trt: a TensorRT .plan engine"
    )
    add_model_flags(parser, runs=False)
    add_out_flags(parser, "output file (default: <model>.onnx / <model>.plan)")
    add_stage_flag(
        parser,
        stage,
        "opset",
        "ONNX opset, 13-21 (default 19, as TensorRT 10 parses; 21 when 4-bit "
        "linear layers go out as INT4 or activation scales are per token, as W4A4's)",
    )
    add_stage_flag(parser, stage, "dtype", "inputs, weights and eps (default {default})")
    add_stage_flag(
        parser,
        stage,
        "int8-grid",
        "write 4-bit linear weights on the INT8 grid (as convolutions are) instead of as INT4",
    )
    add_stage_flag(
        parser,
        stage,
        "target",
        "the runtime a quantized graph is shaped for: tensorrt (portable symmetric INT8 Q/DQ, "
        "default) or ort-cpu (uint8 activations, int32 biases and output Q/DQ that ONNX "
        "Runtime's CPU optimizer fuses into QLinearConv / MatMulIntegerToFloat)",
    )
    add_stage_flag(
        parser,
        stage,
        "range-samples",
        "ort-cpu: sampler trajectories whose layer outputs set the output scales "
        "(default {default})",
        metavar="N",
    )


def run(args: argparse.Namespace) -> None:
    import accel
    from accel.core.stages import Context

    stage = stages.get("export")
    settings = stage.settings(stage_given(args, stage))
    out = Path(args.out or f"{Path(str(args.model)).name}{FORMATS[args.format]}")
    result = stage.run(
        accel.load(args.model, "cpu"), settings, Context(out=out, overwrite=args.overwrite)
    )
    emit(args, {**result.record, "out": str(out)}, summary(result.record, out))


def summary(record: dict, out: Path) -> str:
    parity = record["parity"]
    text = (
        f"wrote {out} ({record['bytes'] / 1e6:.2f} MB, {record['dtype']} "
        f"{record['form']} graph, opset {record['opset']}, {record['qdq_layers']} "
        f"Q/DQ layers, {record['int4_layers']} INT4{_target(record)}) in "
        f"{record['export_s']:.1f} s\n"
        f"ONNX Runtime ({parity['provider']}) vs PyTorch on {parity['inputs']} "
        f"random inputs: max abs {parity['max_abs']:.2e}, max rel "
        f"{parity['max_rel']:.2e} (tolerance {parity['tolerance']:g}): met"
    )
    if "cached_graph" in record:
        cached = record["cached_graph"]
        text += (
            f"\ncached steps: {cached['out']}, fed by the full step's feature "
            f"in ONNX Runtime: max rel {cached['parity']['max_rel']:.2e}: met"
        )
    return text


def _target(record: dict) -> str:
    if record.get("target") != "ort-cpu":
        return ""
    return (
        f", for ort-cpu: {record['fused_convolutions']} fused convolutions, "
        f"{record['integer_linear_layers']} integer linear layers"
    )


COMMANDS = [
    Command(
        "export",
        "ONNX (Q/DQ for quantized layers) or TensorRT engine, checked",
        _flags,
        run,
        stage="export",
    )
]
