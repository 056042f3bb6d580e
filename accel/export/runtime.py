"""Exported models as denoisers: an ONNX Runtime session behind the ``Denoiser`` calling
convention."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
import torch.nn as nn

from accel.core import registry
from accel.core.denoiser import Denoiser
from accel.core.errors import AccelError, ConfigError, one_line
from accel.core.files import parse_json_object
from accel.core.hooks import CapturedFeature
from accel.core.sampling_spec import SamplingSpec
from accel.export.config import CACHED_STEP_KEY, DTYPES, EXPORT, METADATA_KEY
from accel.export.ort_session import ort_session


class OrtModule(nn.Module):
    """Calls an ONNX Runtime session with torch tensors: ``module(x_t, t, cond=None) -> eps``.
    ``macs_run`` adds up the MACs of the calls it ran (a runtime cannot be traced to count them)."""

    def __init__(
        self,
        session,
        input_names: list[str],
        dtype: torch.dtype,
        config: dict,
        params: int,
        macs: int,
    ):
        super().__init__()
        self.session, self.input_names, self.graph_dtype = session, input_names, dtype
        self.config, self.num_params, self.num_macs = config, params, macs
        self.macs_run = 0

    def _feed(self, x: torch.Tensor, t: torch.Tensor, cond, guidance=None) -> dict:
        """The graph's inputs: floating point ones in its dtype, absent ones left out."""
        args = [x, t.long(), cond, guidance]
        args = [
            a.to(self.graph_dtype) if a.is_floating_point() else a for a in args if a is not None
        ]
        return {name: tensor.detach().cpu().numpy() for name, tensor in zip(self.input_names, args)}

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None, guidance=None
    ) -> torch.Tensor:
        self.macs_run += self.num_macs * len(x)
        feed = self._feed(x, t, cond, guidance)
        return torch.from_numpy(self.session.run(["eps"], feed)[0]).to(x.device, x.dtype)


class OrtCachedModule(OrtModule):
    """A cached model's two graphs (``accel export onnx`` of a cached model): the full step, which
    also returns the feature, and the cached step, which reads it. Its own splitter: the cache hook
    runs a call inside ``capturing()`` or ``reusing(feature)``, and the call picks its graph."""

    def __init__(
        self,
        session,
        cached_session,
        input_names: list[str],
        dtype: torch.dtype,
        config: dict,
        params: int,
        macs: int,
        macs_cached: int,
        feature: str,
    ):
        super().__init__(session, input_names, dtype, config, params, macs)
        self.cached_session, self.macs_cached, self.feature_name = (
            cached_session,
            macs_cached,
            feature,
        )
        self._captured: CapturedFeature | None = None
        self._reused: torch.Tensor | None = None

    @contextlib.contextmanager
    def capturing(self):
        self._captured = CapturedFeature()
        try:
            yield self._captured
        finally:
            self._captured = None

    @contextlib.contextmanager
    def reusing(self, feature: torch.Tensor):
        self._reused = feature
        try:
            yield
        finally:
            self._reused = None

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None, guidance=None
    ) -> torch.Tensor:
        feed = self._feed(x, t, cond, guidance)
        if self._reused is not None:
            self.macs_run += self.macs_cached * len(x)
            feed[self.feature_name] = self._reused.cpu().numpy()
            eps = self.cached_session.run(["eps"], feed)[0]
        else:
            self.macs_run += self.num_macs * len(x)
            eps, feature = self.session.run(["eps", self.feature_name], feed)
            if self._captured is not None:
                self._captured.feature = torch.from_numpy(feature)
        return torch.from_numpy(eps).to(x.device, x.dtype)


def load_onnx(path: Path, name: str):
    """A Denoiser running ``path`` (an ONNX file written by ``accel export onnx``) in ONNX
    Runtime."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:
        raise AccelError(f"{path} is not a readable ONNX file ({one_line(error)})")
    props = {p.key: p.value for p in model.metadata_props}
    if CACHED_STEP_KEY in props:
        full = parse_json_object(props[CACHED_STEP_KEY], f"the accel metadata of {path}").get(
            "of", "its full step"
        )
        raise AccelError(
            f"{path} is the cached-step graph of a cached model: load {path.parent / str(full)}, "
            "which runs both graphs"
        )
    if METADATA_KEY not in props:
        raise AccelError(
            f"{path} was not written by accel export (no sampling metadata); export it with "
            "`accel export onnx`"
        )
    what = f"the accel metadata of {path}"
    meta = checked_metadata(parse_json_object(props[METADATA_KEY], what), what)
    module = _ort_module(path, meta, what)
    runtime = f"ONNX Runtime ({module.session.get_providers()[0]})"
    denoiser = exported_denoiser(module, meta, path, name, "onnx", f"in {runtime}", runtime)
    if isinstance(module, OrtCachedModule):
        denoiser.weights_bytes += (path.parent / meta["step_graphs"]["cached"]).stat().st_size
    return denoiser


def _ort_module(path: Path, meta: dict, what: str) -> OrtModule:
    """One session, or two for a cached model's full and cached steps (``step_graphs``)."""
    common = (meta["inputs"], DTYPES[meta["dtype"]], meta["config"], meta["params"], meta["macs"])
    graphs = meta.get("step_graphs")
    if graphs is None:
        return OrtModule(ort_session(path), *common)
    if not isinstance(graphs, dict) or not {"cached", "feature", "macs_cached"} <= set(graphs):
        raise AccelError(f"{what} has no valid 'step_graphs' (re-export the model)")
    cached = path.parent / str(graphs["cached"])
    if not cached.is_file():
        raise AccelError(
            f"{path} runs its cached steps with {cached}, which is missing: keep the two files "
            "together (or re-export the model)"
        )
    return OrtCachedModule(
        ort_session(path), ort_session(cached), *common, graphs["macs_cached"], graphs["feature"]
    )


# key -> the JSON types it may hold, for the metadata an exported file carries
METADATA_TYPES = {
    "kind": (str,),
    "cond_kind": (str, type(None)),
    "sample_shape": (list,),
    "scheduler_config": (dict,),
    "config": (dict,),
    "source": (str,),
    "transforms": (list,),
    "params": (int,),
    "macs": (int,),
    "opset": (int,),
    "form": (str,),
    "dtype": (str,),
    "inputs": (list,),
}


def checked_metadata(meta: dict, what: str) -> dict:
    """The metadata an exported file carries, each key checked (a damaged or hand-edited file is one
    line)."""
    for key, types in METADATA_TYPES.items():
        if not isinstance(meta.get(key), types):
            raise AccelError(f"{what} has no valid '{key}' (re-export the model)")
    if meta["dtype"] not in DTYPES or len(meta["sample_shape"]) != 3:
        raise AccelError(
            f"{what} has dtype {meta['dtype']!r} and sample shape {meta['sample_shape']}: not an "
            "accel export (re-export the model)"
        )
    return meta


def exported_denoiser(
    module: nn.Module, meta: dict, path: Path, name: str, file_format: str, runs: str, runtime: str
):
    """A Denoiser around the runtime ``module`` of an exported file, described by its export
    metadata (files written before the sampler travelled with the model run DDIM 50, as every
    command did then)."""
    try:
        sampling = SamplingSpec.from_dict(meta["sampling"]) if "sampling" in meta else None
    except ConfigError as error:
        raise AccelError(f"{path}: {error}")
    # what the network was: its diffusers config (its classes) and kind (a DiT has a null class)
    module.config, module.exported_kind = meta["config"], meta["kind"]
    # a guidance-distilled student's graph takes the weight as an input
    weights = meta.get("guidance_range")
    module.guidance_range = tuple(weights) if isinstance(weights, list) else None
    denoiser = Denoiser(
        module,
        meta["scheduler_config"],
        source=name,
        sample_shape=tuple(meta["sample_shape"]),
        weights_bytes=path.stat().st_size,
        cond_kind=meta["cond_kind"],
        sampling=sampling,
        runtime=runtime,
        notes=(f"runs {runs}, {meta['dtype']} {meta['form']} graph, opset {meta['opset']}",),
    )
    # behaviour outside the graph (the cache's step hook) comes back
    for record in meta["transforms"]:
        attach = registry.get(record["name"]).attach
        if attach is not None:
            attach(denoiser, record)
    denoiser.transforms = meta["transforms"] + [
        {
            "name": EXPORT,
            "format": file_format,
            "form": meta["form"],
            "opset": meta["opset"],
            "dtype": meta["dtype"],
            "source": meta["source"],
        }
    ]
    return denoiser


def load_exported_from(model, device):
    """The model an exported ``model`` came from (its recorded source), run with the exported
    model's sampler so the two compare runtimes, not samplers; None when ``model`` was not exported,
    or when its source no longer loads (then with a note saying how to give one)."""
    from accel.models.loading import load

    source = next((t["source"] for t in model.transforms if t["name"] == EXPORT), None)
    if source is None:
        return None
    try:
        baseline = load(source, device)
    except AccelError:
        model.notes.append(
            f"the model this was exported from ({source}) does not load "
            "here; give a baseline (accel eval --baseline) to compare with it"
        )
        return None
    baseline.sampling = model.sampling
    return baseline
