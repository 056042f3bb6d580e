"""TensorRT engines from the exported ONNX (``[trt]`` extra), and engines as denoisers.

Kept small and close to TensorRT 10's documented Python API: a strongly typed network (precision
comes from the ONNX types and Q/DQ nodes; the FP16/INT8 builder flags are deprecated since 10.12),
one optimization profile over batch (and height/width, up to twice the model's, for UNets), a
workspace memory-pool limit, and a timing cache kept beside the engine. The engine's sampling
metadata is written to ``<engine>.json``. TensorRT cannot be installed on the machines this was
written on: the code paths run only where ``tensorrt`` imports (tests skip otherwise).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
import torch.nn as nn

from accel.core.errors import AccelError, ConfigError
from accel.core.files import atomic_file, ensure_writable_file, read_json_object, write_text
from accel.export.config import DEFAULT_OPSET, ExportConfig

WORKSPACE_BYTES = 4 << 30
MAX_BATCH = 16
# UNets: the profile's height/width go from the model's own to this many times it
MAX_SIZE_FACTOR = 2


def tensorrt_module():
    try:
        import tensorrt
    except ImportError:
        raise AccelError(
            "TensorRT is not installed: pip install 'accel[trt]' (needs an NVIDIA GPU and driver)"
        )
    return tensorrt


def build_engine(onnx_path: Path, out: Path, meta: dict, max_batch: int = MAX_BATCH) -> dict:
    """Parse ``onnx_path``, build a serialized engine, write ``out`` and ``out``.json atomically."""
    trt = tensorrt_module()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise AccelError(f"TensorRT cannot parse {onnx_path}: {parser.get_error(0).desc()}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    cache_path = out.with_suffix(".timing-cache")
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        profile.set_shape(
            tensor.name, *_profile_shapes(list(tensor.shape), tensor.name, meta, max_batch)
        )
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise AccelError(f"TensorRT could not build an engine from {onnx_path} (see its log above)")
    write_text(
        out.with_name(out.name + ".json"),
        json.dumps({**meta, "tensorrt": trt.__version__, "max_batch": max_batch}, default=str),
    )
    with atomic_file(out) as partial:
        partial.write_bytes(bytes(serialized))
    with atomic_file(cache_path) as partial:
        partial.write_bytes(bytes(config.get_timing_cache().serialize()))
    return {"tensorrt": trt.__version__, "bytes": out.stat().st_size, "max_batch": max_batch}


def _profile_shapes(
    shape: list[int], name: str, meta: dict, max_batch: int
) -> tuple[list, list, list]:
    """min/opt/max for one input: batch 1..max_batch (opt half of it); a dynamic height/width (UNet
    sample) from the model's own size (also opt) to MAX_SIZE_FACTOR times it; fixed dimensions as
    they are."""
    low, best, high = [1], [max(1, max_batch // 2)], [max_batch]
    for axis, size in enumerate(shape[1:], start=1):
        own = meta["sample_shape"][axis - 1] if name == "sample" else size
        low.append(own)
        best.append(own)
        high.append(own * MAX_SIZE_FACTOR if size == -1 else own)
    return low, best, high


class TrtModule(nn.Module):
    """Runs a deserialized engine on CUDA torch tensors: ``module(x_t, t, cond=None) -> eps``;
    ``macs_run`` adds up the MACs of the calls it ran."""

    def __init__(self, engine, input_names: list[str], config: dict, params: int, macs: int):
        super().__init__()
        self.engine, self.context = engine, engine.create_execution_context()
        self.input_names, self.config, self.num_params, self.num_macs = (
            input_names,
            config,
            params,
            macs,
        )
        self.macs_run = 0
        # Denoiser.device reads buffers
        self.register_buffer("_device_anchor", torch.empty(0, device="cuda"))
        trt = tensorrt_module()
        dtypes = {
            trt.DataType.FLOAT: torch.float32,
            trt.DataType.HALF: torch.float16,
            trt.DataType.INT64: torch.int64,
            trt.DataType.INT32: torch.int32,
        }
        self.dtypes = {
            name: dtypes[engine.get_tensor_dtype(name)] for name in [*input_names, "eps"]
        }

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None, guidance=None
    ) -> torch.Tensor:
        self.macs_run += self.num_macs * len(x)
        given = [a for a in (x, t, cond, guidance) if a is not None]
        for name, tensor in zip(self.input_names, given):
            tensor = tensor.to(self.dtypes[name]).contiguous()
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        eps = torch.empty(
            tuple(self.context.get_tensor_shape("eps")), device=x.device, dtype=self.dtypes["eps"]
        )
        self.context.set_tensor_address("eps", eps.data_ptr())
        if not self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise AccelError("TensorRT engine execution failed")
        return eps.to(x.dtype)


def load_engine(path: Path, name: str):
    """A Denoiser running a TensorRT engine written by ``accel export trt``."""
    from accel.export.runtime import checked_metadata, exported_denoiser

    trt = tensorrt_module()
    meta_path = path.with_name(path.name + ".json")
    if not meta_path.is_file():
        raise AccelError(
            f"{path} has no {meta_path.name} beside it; rebuild it with `accel export trt`"
        )
    meta = checked_metadata(read_json_object(meta_path), str(meta_path))
    if meta.get("tensorrt") != trt.__version__:
        raise AccelError(
            f"{path} was built with TensorRT {meta.get('tensorrt')}, "
            f"this is {trt.__version__}: rebuild"
        )
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise AccelError(
            f"{path} does not deserialize here (built for another GPU or TensorRT version): rebuild"
        )
    module = TrtModule(engine, meta["inputs"], meta["config"], meta["params"], meta["macs"])
    return exported_denoiser(
        module,
        meta,
        path,
        name,
        "trt",
        f"as a TensorRT {trt.__version__} engine",
        f"TensorRT {trt.__version__}",
    )


def export_trt(
    denoiser, out: str | Path, config: ExportConfig = ExportConfig(), overwrite: bool = False
) -> dict:
    """Denoiser -> checked ONNX (temporary) -> TensorRT engine at ``out`` (a .plan file).

    The graph is opset 19 (what TensorRT 10's parser reads) with every weight on the INT8 grid:
    TensorRT's INT4 is weight-only, and accel's 4-bit layers quantize their activations to INT8, so
    an INT8 GEMM is what executes their W4A8 arithmetic exactly.
    """
    from accel.export.graph import metadata
    from accel.export.onnx import export_onnx
    from accel.export.steps import step_splitter

    if step_splitter(denoiser) is not None:
        raise AccelError(
            "a cached model runs two graphs (full and cached steps), and accel's "
            "TensorRT runtime runs one engine: export it with `accel export onnx` "
            "(both graphs run in ONNX Runtime), or export the model before caching"
        )
    check_trt_target(config)
    tensorrt_module()  # fail before any work when the extra is missing
    if config.opset not in (None, DEFAULT_OPSET):
        raise ConfigError(
            "ExportConfig",
            "opset",
            f"{config.opset}: TensorRT engines are built from opset {DEFAULT_OPSET} graphs",
        )
    out = ensure_writable_file(out, (".plan",), "a .plan file", overwrite)
    graph = ExportConfig(opset=DEFAULT_OPSET, dtype=config.dtype, int8_grid=True)
    # the graph is not kept
    with tempfile.TemporaryDirectory(prefix=f".{out.stem}.", dir=out.parent) as work:
        onnx_path = Path(work) / "graph.onnx"
        record = export_onnx(denoiser, onnx_path, graph)
        record["engine"] = build_engine(
            onnx_path, out, metadata(denoiser, DEFAULT_OPSET, record["form"], graph)
        )
    return record


def check_trt_target(config: ExportConfig) -> None:
    if config.target != "tensorrt":
        raise ConfigError(
            "ExportConfig",
            "target",
            f"{config.target}: a TensorRT engine is built from the tensorrt form (the default)",
        )
