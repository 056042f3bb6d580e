"""The transform registry: every capability that changes a model registers here, and the rest of
accel (artifact, loading, export, the CLI) finds it here instead of importing it.

A ``Transform`` names its config class, how it is applied in place, how an artifact gives a fresh
base model the structure it left (``rebuild``) and the step hooks it attached (``attach``), how its
weights are stored (``pack_state`` / ``unpack_state``), how its layers go into an exported graph
(``export``), and which transforms may come before it. ``apply`` is the one place a transform is
checked against what came before and recorded in ``Denoiser.transforms``.

Exported files register their loaders by suffix (``register_file_loader``), so ``accel.load`` opens
a ``.onnx`` or ``.plan`` without knowing the exporter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from accel.core.config import Config
from accel.core.errors import AccelError

# ``may_follow`` value: every other transform (export may follow anything but an export)
ANY = "any"

State = dict[str, torch.Tensor]


# the runtimes an exported graph can be shaped for: "tensorrt" is the portable symmetric INT8 Q/DQ
# form (TensorRT reads it, every runtime runs it); "ort-cpu" is what ONNX Runtime's CPU graph
# optimizer fuses into integer kernels
EXPORT_TARGETS = ("tensorrt", "ort-cpu")


@dataclass(frozen=True)
class FormRequest:
    """What the exporter asks of a transform's export form."""

    blocked: bool  # opset 21's blocked Q/DQ (INT4, per-group and per-token scales) may be written
    target: str  # one of EXPORT_TARGETS
    # runs the network over calibration inputs (the model's own sampler trajectories), for a form
    # that observes value ranges before converting
    run_calibration: Callable[[], None]


@dataclass(frozen=True)
class ExportForm:
    """How a transform's layers go into an ONNX graph.

    ``blocked_layers(network)`` names the layers that want opset 21's blocked Q/DQ (INT4 weights,
    per-group weight scales, per-token activation scales); ``convert(network, request)`` rewrites
    the network in place into what the exporter traces (Q/DQ ops) and returns counts for the export
    record. Ops the TorchScript exporter cannot write at opset 20 are traced as
    ``PLACEHOLDER_DOMAIN::<op>`` nodes, which the exporter rewrites to the standard op.
    """

    blocked_layers: Callable[[nn.Module], list[str]]
    convert: Callable[[nn.Module, FormRequest], dict]


PLACEHOLDER_DOMAIN = "accel"
BLOCK_DEQUANTIZE, BLOCK_QUANTIZE = "BlockDequantizeLinear", "BlockQuantizeLinear"


@dataclass(frozen=True)
class Transform:
    name: str
    config: type[Config]
    # apply(denoiser, config, *inputs) -> what the record keeps besides name and config; None for a
    # transform whose product is a file (export): it is recorded on the models loaded from that file
    apply: Callable[..., dict] | None
    # transforms that may come before this one; ANY: all but itself
    may_follow: tuple[str, ...] | str = ()
    # rebuild(denoiser, record): a fresh base gets the structure
    rebuild: Callable[..., None] | None = None
    # attach(denoiser, record): behaviour that is not in the weights (step hooks) given back to a
    # loaded model, an artifact's or an exported file's runtime alike
    attach: Callable[..., None] | None = None
    # weights as stored in model.safetensors
    pack_state: Callable[[nn.Module, State], State] | None = None
    # ... and back, before load_state_dict
    unpack_state: Callable[[nn.Module, State], State] | None = None
    export: ExportForm | None = None

    def allows_after(self, previous: str) -> bool:
        return previous != self.name if self.may_follow == ANY else previous in self.may_follow


_TRANSFORMS: dict[str, Transform] = {}
_FILE_LOADERS: dict[str, Callable[[Path, str], object]] = {}


def register(transform: Transform) -> Transform:
    if transform.name in _TRANSFORMS:
        raise ValueError(f"a transform named '{transform.name}' is already registered")
    _TRANSFORMS[transform.name] = transform
    return transform


def get(name: str) -> Transform:
    if name not in _TRANSFORMS:
        raise AccelError(
            f"'{name}' is not a transform this accel knows "
            f"(it has {', '.join(sorted(_TRANSFORMS))})"
        )
    return _TRANSFORMS[name]


def applied(denoiser) -> list[Transform]:
    """The registered transforms recorded on ``denoiser``, in the order they were applied."""
    return [get(record["name"]) for record in denoiser.transforms]


def check_can_follow(records: list[dict], name: str) -> None:
    """Refuse ``name`` after the transforms ``records`` lists, naming the one in the way."""
    transform = get(name)
    for record in records:
        if not transform.allows_after(record["name"]):
            allowed = (
                "any transform but itself"
                if transform.may_follow == ANY
                else ", ".join(transform.may_follow) or "no other transform"
            )
            raise AccelError(
                f"cannot {name} this model: it went through {record['name']}, and {name} "
                f"may follow {allowed}; start from the model before {record['name']}"
            )


def apply(denoiser, name: str, config: Config, *inputs) -> dict:
    """Apply transform ``name`` to ``denoiser`` in place and record it; returns the record."""
    transform = get(name)
    if transform.apply is None:
        raise AccelError(
            f"{name} writes a file instead of changing the model; call its own function"
        )
    if not isinstance(config, transform.config):
        raise AccelError(f"{name} takes a {transform.config.__name__}, got {type(config).__name__}")
    check_can_follow(denoiser.transforms, name)
    record = {
        "name": name,
        "config": config.to_dict(),
        **transform.apply(denoiser, config, *inputs),
    }
    denoiser.transforms.append(record)
    # a file the model was loaded from no longer describes its weights
    denoiser.weights_bytes = None
    return record


def register_file_loader(suffix: str, loader: Callable[[Path, str], object]) -> None:
    """``loader(path, name) -> Denoiser`` opens files ending in ``suffix`` (an exported model)."""
    _FILE_LOADERS[suffix] = loader


def file_loader(suffix: str) -> Callable[[Path, str], object] | None:
    return _FILE_LOADERS.get(suffix)
