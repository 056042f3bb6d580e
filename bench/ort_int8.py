"""What INT8 can buy in ONNX Runtime on this CPU: accel's W8A8 graph against ONNX Runtime's own
quantization tools, each timed against the fp32 graph.

    python -m bench.ort_int8            # digits and digits-dit, batch 1 and 500
                                        #   -> bench/results/ort_int8_cpu.json and .md
    python -m bench.ort_int8 --quick    # batch 1 and 8, few repeats (a smoke run)

Rows per model: the fp32 graph (``accel export``); accel's W8A8 model exported in its portable
(``tensorrt``) form and in the ``ort-cpu`` form, and its W8A8 model with dynamic per-tensor
activation scales (``--dynamic-act --dynamic-scope tensor``) in the ort-cpu form, and its W4A4
(``--act-bits 4 --low-rank 16``: smoothing, rotation and the branch in the graph, 4-bit inputs on
per-token scales the graph computes; no integer kernel takes them), each run as accel runs it (on
x86 without VNNI Q/DQ pairs are kept, not fused: the fused u8 x s8 kernels saturate there); ONNX
Runtime's ``quantize_static`` with its documented x86 settings (QDQ, uint8 activations, int8
per-channel weights, ``reduce_range`` where VNNI is missing), calibrated on accel's calibration set;
and ``quantize_dynamic`` of the MatMuls (int8 weights, activations quantized per call). Each row:
integer nodes in ONNX Runtime's optimized graph, median time per call (interleaved runs of one
input), speedup over fp32 and the max relative error of eps against the fp32 graph on that input.

Then each model's fp32 graph, accel's two W8A8 ort-cpu graphs and its W4A4 graph sample in ONNX
Runtime beside the original in PyTorch (one run, same noise, the sampling batch): FID, PSNR to the
original's samples, time per image against the original and against the fp32 graph. The leaderboard
reads these rows.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import accel
from accel.calib.collect import CalibrationSet
from accel.evaluate import evaluate_many
from accel.export.graph import input_names
from accel.export.ort_session import integer_kernels_saturate, ort_session
from accel.report import table
from bench.common import HERE, RESULTS, write_results

MODELS = ("digits", "digits-dit")
INTEGER_OPS = ("QLinear", "MatMulInteger", "DynamicQuantize", "ConvInteger", "QGemm")
COLUMNS = {
    "model": "model",
    "graph": "graph",
    "batch": "batch",
    "integer_nodes": "integer nodes",
    "ms": "ms per call",
    "speedup": "x fp32",
    "max_rel": "max rel. error vs fp32",
}


@dataclass(frozen=True)
class Settings:
    batches: tuple[int, ...]
    repeats: int  # interleaved runs per graph at the largest batch; the first is dropped
    # a call at batch 1 takes 3-5 ms, where one preempted run moves a median of 9: measured on
    # this VM, the digits-dit ratio at batch 1 read 1.19x and 1.29x in two runs of 9
    small_batch_repeats: int
    calib_samples: int  # trajectories of accel's calibration set
    samples: int  # sampled per graph, at the largest batch


FULL = Settings(batches=(1, 500), repeats=9, small_batch_repeats=201, calib_samples=8, samples=2000)
QUICK = Settings(batches=(1, 8), repeats=3, small_batch_repeats=3, calib_samples=2, samples=16)
ACCEL_GRAPHS = (  # in accel_graphs' order
    "accel W8A8, tensorrt form",
    "accel W8A8, ort-cpu form",
    "accel W8A8 dynamic per tensor, ort-cpu form",
    "accel W4A4 (rank 16), default form",
)
SAMPLED = ("fp32", *ACCEL_GRAPHS[1:])  # the graphs sampled beside the original
SAMPLE_COLUMNS = {
    "model": "model",
    "graph": "graph (ONNX Runtime)",
    "fid": "FID",
    "fid_ratio": "FID ratio",
    "psnr_db": "PSNR to original (dB)",
    "ms_per_image": "ms/image",
    "speedup": "speedup (time/image)",
    "x_fp32_graph": "x fp32 graph (time/image)",
    "size_ratio": "size ratio",
}


def _plain_session(path: Path):
    """ONNX Runtime's defaults (every fusion on), on the cores accel's sessions use."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def integer_nodes(path: Path, work: Path, saturating_off: bool = False) -> int:
    """Integer nodes in the graph ONNX Runtime optimizes ``path`` into (its own session options,
    or accel's where ``saturating_off``: Q/DQ fusion off on CPUs whose kernels saturate)."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.optimized_model_filepath = str(work / "optimized.onnx")
    if saturating_off and integer_kernels_saturate():
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(str(work / "optimized.onnx")).graph.node)
    return sum(count for op, count in ops.items() if op.startswith(INTEGER_OPS))


def feeds(model, names: list[str], batch: int, seed: int = 0) -> dict:
    x, t, cond = model.example_inputs(batch, seed=seed)
    tensors = [x.float(), t] + ([] if cond is None else [cond])
    return {name: tensor.numpy() for name, tensor in zip(names, tensors)}


class _CalibrationReader:
    """accel's calibration set, in batches of 32, as ONNX Runtime's calibrator reads it."""

    def __init__(self, calib, names: list[str]):
        self.batches = iter(list(calib.batches(32)))
        self.names = names

    def get_next(self):
        batch = next(self.batches, None)
        if batch is None:
            return None
        x, t, cond = batch
        tensors = [x.float(), t] + ([] if cond is None else [cond])
        return {name: tensor.numpy() for name, tensor in zip(self.names, tensors)}


def accel_graphs(name: str, settings: Settings, calib_file: Path, work: Path) -> list[Path]:
    """accel's W8A8 in the portable and the ort-cpu form, with dynamic per-tensor scales in the
    ort-cpu form, and accel's W4A4 (its own calibration, as `accel quantize` makes it) in the
    default form; the W8A8 calibration set recorded on the way is left at ``calib_file``."""
    quantized = accel.run_stage(
        "quantize",
        name,
        bits=8,
        act_bits=8,
        calib=str(calib_file),
        progress=False,
        calib_samples=settings.calib_samples,
    )
    dynamic = accel.run_stage(
        "quantize",
        name,
        bits=8,
        act_bits=8,
        dynamic_act=True,
        dynamic_scope="tensor",
        calib=str(calib_file),  # for its bias correction: the static model's set
        progress=False,
        calib_samples=settings.calib_samples,
    )
    w4a4 = accel.run_stage("quantize", name, bits=4, act_bits=4, low_rank=16, progress=False)
    suffixes = ("w8a8", "w8a8-ort-cpu", "w8a8-dynamic-ort-cpu", "w4a4")
    paths = [work / f"{name}-{suffix}.onnx" for suffix in suffixes]
    forms = [(quantized, "tensorrt"), (quantized, "ort-cpu"), (dynamic, "ort-cpu")]
    forms += [(w4a4, "tensorrt")]
    for path, (result, target) in zip(paths, forms):
        accel.run_stage(
            "export", result.model, format="onnx", out=path, target=target, progress=False
        )
    return paths


def graphs(name: str, settings: Settings, work: Path) -> dict:
    """{graph label: (path, session, integer nodes)}: ONNX Runtime's own graphs in its default
    session, accel's as accel runs them."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    fp32, calib_file = work / f"{name}.onnx", work / f"{name}-calib.safetensors"
    accel.run_stage("export", name, format="onnx", out=fp32, progress=False)
    accel_paths = accel_graphs(name, settings, calib_file, work)
    static, ort_dynamic = work / f"{name}-ort-static.onnx", work / f"{name}-ort-dynamic.onnx"
    quantize_static(
        str(fp32),
        str(static),
        # the set accel's W8A8 was calibrated on
        _CalibrationReader(CalibrationSet.load(calib_file), input_names(accel.load(name))),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=integer_kernels_saturate(),
    )
    quantize_dynamic(
        str(fp32), str(ort_dynamic), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"]
    )
    plain = {"fp32": fp32, "ORT static U8S8 QDQ": static, "ORT dynamic MatMul": ort_dynamic}
    rows = {label: (p, _plain_session(p), integer_nodes(p, work)) for label, p in plain.items()}
    for label, path in zip(ACCEL_GRAPHS, accel_paths):
        rows[label] = (path, ort_session(path), integer_nodes(path, work, saturating_off=True))
    order = ["fp32", *ACCEL_GRAPHS, "ORT static U8S8 QDQ", "ORT dynamic MatMul"]
    return {label: rows[label] for label in order}


def sampled_rows(name: str, settings: Settings, graphs_of_model: dict) -> list[dict]:
    """The original in PyTorch, then each of ``SAMPLED`` in ONNX Runtime, sampled in one run."""
    models = [accel.load(name)] + [accel.load(graphs_of_model[label][0]) for label in SAMPLED]
    batch = max(settings.batches)
    config = accel.EvalConfig(n=settings.samples, batch_size=batch, latency_batch=batch)
    reports = [e.report for e in evaluate_many(models, config, command="bench", model_name=name)]
    fp32_ms = reports[0].compressed.sampling_s_per_image
    return [
        {
            "model": name,
            "graph": label,
            "fid": report.compressed.fid,
            "fid_ratio": report.delta.fid_ratio,
            "psnr_db": report.delta.psnr_db_vs_original,
            "ms_per_image": 1e3 * report.compressed.sampling_s_per_image,
            "speedup": report.delta.speedup,
            "x_fp32_graph": fp32_ms / report.compressed.sampling_s_per_image,
            "size_ratio": report.delta.size_ratio,
            "original_fid": report.original.fid,
        }
        for label, report in zip(SAMPLED, reports)
    ]


def timed_rows(name: str, settings: Settings, graphs_of_model: dict) -> list[dict]:
    model = accel.load(name)
    names = input_names(model)
    rows = []
    for batch in settings.batches:
        feed = feeds(model, names, batch)
        times = collections.defaultdict(list)
        repeats = settings.small_batch_repeats if batch == 1 else settings.repeats
        for _ in range(repeats):  # interleaved: drift hits every graph alike
            for label, (_, session, _) in graphs_of_model.items():
                start = time.perf_counter()
                session.run(["eps"], feed)
                times[label].append(time.perf_counter() - start)
        reference = graphs_of_model["fp32"][1].run(["eps"], feed)[0]
        base = float(np.median(times["fp32"][1:]))
        for label, (_, session, nodes) in graphs_of_model.items():
            eps = session.run(["eps"], feed)[0]
            seconds = float(np.median(times[label][1:]))
            rows.append(
                {
                    "model": name,
                    "graph": label,
                    "batch": batch,
                    "integer_nodes": nodes,
                    "ms": 1e3 * seconds,
                    "speedup": base / seconds,
                    "max_rel": float(np.abs(eps - reference).max() / np.abs(reference).max()),
                }
            )
    return rows


def body(results: dict) -> str:
    vnni = results["vnni"]
    return (
        f"This CPU {'has' if vnni else 'lacks'} VNNI: accel's sessions "
        f"{'fuse Q/DQ' if vnni else 'keep Q/DQ unfused'} here.\n\n"
        "## Per call\n\n"
        + table(COLUMNS, results["rows"])
        + f"\n\n## Sampled ({results['settings']['samples']} samples at the model's own sampler, "
        "batch " + str(max(results["settings"]["batches"])) + ", one run)\n\n"
        "Each graph in ONNX Runtime against the original in PyTorch (its FID, PSNR to its samples, "
        "its time per image over the graph's), and against the fp32 graph's time per image.\n\n"
        + table(SAMPLE_COLUMNS, results["sampled"])
        + "\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--out", type=Path, help="markdown report (a .json beside it)")
    args = parser.parse_args(argv)
    settings, mode = (QUICK, "quick") if args.quick else (FULL, "full")
    out = args.out or (HERE / "ort_int8_quick.md" if args.quick else RESULTS / "ort_int8_cpu.md")
    start = time.perf_counter()
    rows, sampled = [], []
    with tempfile.TemporaryDirectory() as work:
        for name in MODELS:
            graphs_of_model = graphs(name, settings, Path(work))
            rows += timed_rows(name, settings, graphs_of_model)
            sampled += sampled_rows(name, settings, graphs_of_model)
    saturate = integer_kernels_saturate()
    results = {
        "mode": mode,
        "settings": vars(settings),
        "vnni": not saturate,
        "rows": rows,
        "sampled": sampled,
    }
    command = f"python -m bench.ort_int8{' --quick' if args.quick else ''}"
    print(
        write_results(
            out,
            f"ONNX Runtime INT8 ({mode})",
            command,
            start,
            body(results),
            results,
            model="digits, digits-dit",
        )
    )


if __name__ == "__main__":
    main()
