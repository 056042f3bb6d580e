"""The peers' quantization recipes, each as its own documentation gives it, applied in place to a
denoiser's network: NVIDIA Model Optimizer, optimum-quanto and torchao (``pip install
'accel[peers]'``). bench.peers runs them beside accel's own recipes at the same widths.

Where a documented default does not run on a CPU the recipe says what it uses instead.
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

# the distributions whose versions a result records, by the module each recipe imports
TOOLS = {"modelopt": "nvidia-modelopt", "optimum.quanto": "optimum-quanto", "torchao": "torchao"}


@dataclass(frozen=True)
class PeerRecipe:
    label: str  # the row's name
    tool: str  # the module it imports (a key of TOOLS)
    widths: str  # accel's recipe it stands beside: "W8A8" or "W4A8"
    calibrates: bool  # runs the calibration set through the network (static activation ranges)
    # False: fake-quantized in PyTorch (float weights on the integer grid until a TensorRT build)
    packs_weights: bool
    # (network, forward loop over the calibration set) -> None, quantizing the network in place
    apply: Callable[[nn.Module, Callable[[], None]], None]
    quantized_layers: Callable[[nn.Module], int]
    # of the activations: "static" (calibrated), "dynamic" (per token at run time) or "none"
    scales: str = "static"

    def available(self) -> bool:
        try:
            importlib.import_module(self.tool)
        except ImportError:
            return False
        return True


def _modelopt_int8(network: nn.Module, forward_loop) -> None:
    """Model Optimizer's diffusers INT8 recipe (examples/diffusers/quantization: ``--format int8
    --quant-algo smoothquant --alpha 0.8``) with the library's INT8 SmoothQuant config: per-channel
    int8 weights, per-tensor int8 inputs, max calibration. The example's own calibrator for
    convolution inputs (a plugin in the example folder, not in the library: the smallest over
    sampler steps of each step's max) is not used."""
    import modelopt.torch.quantization as mtq

    config = {**mtq.INT8_SMOOTHQUANT_CFG, "algorithm": {"method": "smoothquant", "alpha": 0.8}}
    mtq.quantize(network, config, forward_loop=lambda _: forward_loop())


def _modelopt_w4a8_awq(network: nn.Module, forward_loop) -> None:
    """Model Optimizer's W4A8 AWQ config as shipped: int4 weights in blocks of 128 along the input
    (AWQ-lite scale search), FP8 (e4m3) per-tensor activations."""
    import modelopt.torch.quantization as mtq

    mtq.quantize(network, mtq.W4A8_AWQ_BETA_CFG, forward_loop=lambda _: forward_loop())


def _modelopt_layers(network: nn.Module) -> int:
    return sum(
        1
        for m in network.modules()
        if getattr(getattr(m, "weight_quantizer", None), "is_enabled", False)
    )


def _quanto(weights: str):
    def apply(network: nn.Module, forward_loop) -> None:
        """optimum-quanto's README: quantize, calibrate the activations, freeze."""
        from optimum import quanto

        quanto.quantize(network, weights=getattr(quanto, weights), activations=quanto.qint8)
        with quanto.Calibration():
            forward_loop()
        quanto.freeze(network)
        if weights == "qint4":
            _outside_inference_mode(network)

    return apply


def _outside_inference_mode(network: nn.Module) -> None:
    """Run ``network`` in no_grad on copies of its inputs: quanto's 4-bit weights fail under
    torch.inference_mode, where accel samples ("Cannot set version_counter for inference tensor",
    raised by its autograd Function), and work under no_grad."""

    def copy(value):
        return value.clone() if torch.is_tensor(value) else value

    forward = network.forward

    def run(*args, **kwargs):
        with torch.inference_mode(False), torch.no_grad():
            return forward(*map(copy, args), **{k: copy(v) for k, v in kwargs.items()})

    network.forward = run


def _quanto_layers(network: nn.Module) -> int:
    from optimum.quanto import QModuleMixin

    return sum(1 for m in network.modules() if isinstance(m, QModuleMixin))


def _torchao_int8_dynamic(network: nn.Module, forward_loop) -> None:
    """torchao's int8 dynamic activation, int8 weight (its default filter: nn.Linear only)."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    quantize_(network, Int8DynamicActivationInt8WeightConfig())


def _torchao_int4_weight_only(network: nn.Module, forward_loop) -> None:
    """torchao's int4 weight-only on a CPU: ``Int4WeightOnlyConfig`` needs the mslk CUDA kernels
    (ImportError on a CPU), so its CPU form ``IntxWeightOnlyConfig(weight_dtype=torch.int4)``
    (per-channel; nn.Linear only)."""
    from torchao.quantization import IntxWeightOnlyConfig, quantize_

    quantize_(network, IntxWeightOnlyConfig(weight_dtype=torch.int4))


def _torchao_layers(network: nn.Module) -> int:
    from torchao.utils import TorchAOBaseTensor

    return sum(
        1 for m in network.modules() if isinstance(getattr(m, "weight", None), TorchAOBaseTensor)
    )


RECIPES = (
    PeerRecipe(
        "Model Optimizer INT8 (SmoothQuant 0.8)",
        "modelopt",
        "W8A8",
        calibrates=True,
        packs_weights=False,
        apply=_modelopt_int8,
        quantized_layers=_modelopt_layers,
    ),
    PeerRecipe(
        "quanto qint8 weights, qint8 activations",
        "optimum.quanto",
        "W8A8",
        calibrates=True,
        packs_weights=True,
        apply=_quanto("qint8"),
        quantized_layers=_quanto_layers,
    ),
    PeerRecipe(
        "torchao int8 dynamic activations, int8 weights",
        "torchao",
        "W8A8",
        calibrates=False,
        packs_weights=True,
        apply=_torchao_int8_dynamic,
        quantized_layers=_torchao_layers,
        scales="dynamic",
    ),
    PeerRecipe(
        "Model Optimizer W4A8 AWQ (int4 weights, FP8 activations)",
        "modelopt",
        "W4A8",
        calibrates=True,
        packs_weights=False,
        apply=_modelopt_w4a8_awq,
        quantized_layers=_modelopt_layers,
    ),
    PeerRecipe(
        "quanto qint4 weights, qint8 activations",
        "optimum.quanto",
        "W4A8",
        calibrates=True,
        packs_weights=True,
        apply=_quanto("qint4"),
        quantized_layers=_quanto_layers,
    ),
    PeerRecipe(
        "torchao int4 weight-only",
        "torchao",
        "W4A8",
        calibrates=False,
        packs_weights=True,
        apply=_torchao_int4_weight_only,
        quantized_layers=_torchao_layers,
        scales="none",
    ),
)


def saved_bytes(network: nn.Module) -> int:
    """Bytes of the network's state dict as ``torch.save`` writes it (the peers' own tensor types
    keep their packed integer data)."""
    buffer = io.BytesIO()
    torch.save(network.state_dict(), buffer)
    return buffer.tell()


def nominal_bytes(network: nn.Module) -> int:
    """A fake-quantized network's size at its quantizers' widths (Model Optimizer keeps float
    weights in PyTorch; a TensorRT build packs them): each quantized weight at its bits, every
    other parameter and buffer (biases, scales) as stored. W4A8 AWQ's scales are many: a block of
    128 along a convolution's last dimension (its kernel width, 3) holds 3 weights."""
    quantized = {}
    for module in network.modules():
        quantizer = getattr(module, "weight_quantizer", None)
        if getattr(quantizer, "is_enabled", False):
            quantized[id(module.weight)] = _stored_bits(quantizer)
    tensors = {id(t): t for t in [*network.parameters(), *network.buffers()]}
    return sum(
        (t.numel() * quantized[key] + 7) // 8 if key in quantized else t.numel() * t.element_size()
        for key, t in tensors.items()
    )


def _stored_bits(quantizer) -> int:
    """The width a weight is stored at: a chain of quantizers (W4A8 AWQ: int4 codes whose block
    scales go to FP8) stores its first's; FP8's (exponent, mantissa) is 1 + both bits."""
    first = next(iter(quantizer)) if hasattr(quantizer, "__iter__") else quantizer
    bits = first.num_bits
    return sum(bits) + 1 if isinstance(bits, tuple) else bits


def versions() -> dict[str, str]:
    """Each peer's installed version (None where it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for dist in TOOLS.values():
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            found[dist] = None
    return found
