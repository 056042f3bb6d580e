"""Quantization as the registry applies it: swap a denoiser's Conv2d/Linear layers and attention
matmuls for fake-quantized ones, then set activation ranges on a calibration set (and reconstruct).
The plan (which layer, which bits, which split) is recorded so an artifact can rebuild the same
structure on a fresh base model."""

from __future__ import annotations

import copy
import fnmatch

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from accel.calib.collect import CalibrationSet
from accel.core.errors import AccelError
from accel.quant.attention import QuantAttnProcessor
from accel.quant.config import RECONSTRUCTING, QuantConfig
from accel.quant.forward_order import forward_order
from accel.quant.layers import QuantLayer, activation_quantizers
from accel.quant.low_rank import max_rank
from accel.quant.rotation import rotation_block
from accel.quant.split import find_split_sites

# Below 8 bits, activations are quantized as SVDQuant does; the layers kept at 8-bit weights (time
# embedding, adaLN) take 8-bit activations with per-token scales computed at run time, and the
# attention matmuls stay in float unless asked (QuantConfig.attention_quantized; then at static 8
# bits), as SVDQuant keeps attention in 16 bits. Static 8-bit scales on those layers' inputs (one
# embedding per sample, whose range follows the timestep) cost digits-dit W4A4 most of its FID gap:
# ratio 1.33 static, 1.07 per token, 1.01 in float (1,000 samples, seed 0, 2-core Xeon).
LOW_BIT_ACTIVATIONS = 8

QUANTIZABLE = (nn.Conv2d, nn.Linear)


def _layer_order(denoiser) -> list[str]:
    """Names of the Conv2d/Linear layers in the order one forward pass runs them."""
    layers = [
        name for name, module in denoiser.module.named_modules() if isinstance(module, QUANTIZABLE)
    ]
    return forward_order(denoiser.module, layers, lambda _: denoiser(*denoiser.example_inputs(1)))


def _matches(name: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def plan_layers(denoiser, config: QuantConfig) -> dict[str, dict]:
    """{layer name: {"w_bits", "a_bits", "split"}} for every layer to quantize, checked against the
    model.

    With ``protect_ends`` (the default) the first layer keeps 8-bit weights and a float input, and
    the last layer, which writes eps, stays in floating point unless ``layer_bits`` names it
    (NVIDIA's Model Optimizer diffusers recipe leaves both out of INT8). Measured on the reference
    model:
    - the first layer reads x_t itself, whose range shrinks about 4x from the noisy to the clean
      end; one static 8-bit scale for both ends more than doubled the W8A8 per-step error (2.7% vs
      1.1%);
    - the last conv has one output channel, so per-channel means a single scale for all its weights;
      8-bit weights there alone cut PSNR to the original's samples to 31.7 dB, and keeping it in
      float took the W8A8 FID ratio from 1.84 to 1.16 (2,000 samples). It holds 216 of 1.57M
      weights.
    """
    order = _layer_order(denoiser)
    if not order:
        raise AccelError("the model has no Conv2d or Linear layers to quantize")
    for pattern in (*config.layer_bits, *config.skip):
        if not any(fnmatch.fnmatchcase(name, pattern) for name in order):
            raise AccelError(
                f"module pattern '{pattern}' matches no quantizable layer of this model"
            )
    splits = find_split_sites(denoiser) if config.split_shortcut else {}
    convs = [name for name in order if isinstance(denoiser.module.get_submodule(name), nn.Conv2d)]
    first, last = (convs or order)[0], order[-1]
    plan = {}
    for name in order:
        chosen_bits = next(
            (b for p, b in config.layer_bits.items() if fnmatch.fnmatchcase(name, p)), None
        )
        float_last = config.protect_ends and name == last != first and chosen_bits is None
        if _matches(name, config.skip) or float_last:
            continue
        protected = config.protect_ends and name == first
        conditioning = _matches(name, config.eight_bit)
        bits = chosen_bits or (8 if protected or conditioning else config.w_bits)
        a_bits = (
            None
            if protected or (conditioning and config.float_conditioning_inputs)
            else config.a_bits
        )
        plan[name] = {"w_bits": bits, "a_bits": a_bits, "split": splits.get(name, 0)}
        if a_bits and config.dynamic_activations:
            plan[name]["a_dynamic"] = config.dynamic_scope
        if a_bits and a_bits < LOW_BIT_ACTIVATIONS:
            if bits >= LOW_BIT_ACTIVATIONS:
                plan[name].update(a_bits=LOW_BIT_ACTIVATIONS, a_dynamic="token")
            else:
                plan[name].update(_low_bit_spec(denoiser, name, config, plan[name]["split"]))
    if not plan:
        raise AccelError("every quantizable layer is skipped by the settings; nothing to quantize")
    return plan


def _low_bit_spec(denoiser, name: str, config: QuantConfig, split: int) -> dict:
    """How a layer with sub-8-bit activations is quantized: dynamic groups, smoothing, rotation,
    rank."""
    weight = denoiser.module.get_submodule(name).weight
    if config.low_rank > max_rank(weight):
        raise AccelError(
            f"--low-rank {config.low_rank} exceeds what layer {name} allows "
            f"(at most {max_rank(weight)}: min(outputs, inputs x kernel) of {tuple(weight.shape)})"
        )
    if config.low_rank and getattr(denoiser.module.get_submodule(name), "groups", 1) != 1:
        raise AccelError(f"layer {name} is a grouped convolution: it takes no low-rank branch")
    return {
        "a_group": config.a_group_size,
        "smooth": config.smooth_alpha is not None,
        "rotate": rotation_block(weight.shape[1], config.a_group_size, split)
        if config.rotates
        else 1,
        "rank": config.low_rank,
    }


def _attention_modules(denoiser) -> list[str]:
    from diffusers.models.attention_processor import Attention

    return [
        name for name, module in denoiser.module.named_modules() if isinstance(module, Attention)
    ]


def apply_plan(
    network: nn.Module,
    plan: dict[str, dict],
    attention: list[str],
    config: QuantConfig,
    fit_ranges: bool = True,
    smoothing: dict[str, torch.Tensor] | None = None,
) -> None:
    """Build the quantized structure: weight ranges fitted (unless ``fit_ranges`` is False: a saved
    model's scales, smoothing factors and low-rank branches are loaded instead), activation ranges
    not yet set. ``smoothing``: the factors of the layers the plan smooths."""
    for name, spec in plan.items():
        parent_name, _, child = name.rpartition(".")
        parent = network.get_submodule(parent_name) if parent_name else network
        layer = getattr(parent, child)
        smooth = None
        if spec.get("smooth"):
            smooth = smoothing[name] if fit_ranges else torch.ones(layer.weight.shape[1])
        setattr(
            parent,
            child,
            QuantLayer(
                layer,
                spec["w_bits"],
                spec["a_bits"],
                split=spec["split"],
                w_symmetric=config.w_symmetric,
                a_symmetric=config.a_symmetric,
                group_size=config.group_size,
                w_range=config.w_range,
                a_range=config.a_range,
                a_group_size=spec.get("a_group"),
                a_dynamic=spec.get("a_dynamic", False),
                smooth=smooth,
                rotate=spec.get("rotate", 1),
                rank=spec.get("rank", 0),
                fit_ranges=fit_ranges,
            ),
        )
    attention_bits = max(config.a_bits or 0, LOW_BIT_ACTIVATIONS)
    for name in attention:
        network.get_submodule(name).set_processor(
            QuantAttnProcessor(attention_bits, config.a_range)
        )


@torch.no_grad()
def calibrate_activations(denoiser, calib, batch_size: int = 64, progress: bool = True) -> None:
    """One static scale per activation quantizer, fitted to its inputs over the whole calibration
    set."""
    quantizers = activation_quantizers(denoiser)
    for quantizer in quantizers:
        quantizer.start_observing()
    calib.run_through(denoiser, "calibrate activations", batch_size, progress)
    for quantizer in tqdm(quantizers, desc="fit activation ranges", disable=not progress):
        quantizer.finish_observing()


def quantize(
    denoiser, config: QuantConfig, calib: CalibrationSet | None, progress: bool = True
) -> dict:
    """Quantize ``denoiser`` in place (the registry records it); returns the plan the artifact
    keeps."""
    plan = plan_layers(denoiser, config)
    if calib is None and config.needs_calibration:
        raise AccelError(
            "activation ranges, smoothing, GPTQ and reconstruction need a calibration set: "
            "calib = accel.calibrate(model, CalibConfig()) (weight-only quantization without one: "
            "rounding='nearest')"
        )
    fp_network = copy.deepcopy(denoiser.module) if config.reconstruction_iters else None
    attention = _attention_modules(denoiser) if config.attention_quantized else []
    smoothing = _smoothing(denoiser, plan, calib, config, progress)
    apply_plan(denoiser.module, plan, attention, config, smoothing=smoothing)
    if activation_quantizers(denoiser.module):  # static scales to fit
        calibrate_activations(denoiser, calib, progress=progress)
    record = {"layers": plan, "attention": attention}
    rounding = config.weight_rounding
    if rounding in ("gptq", "gptq-adaround"):
        from accel.quant.gptq import gptq_round_

        compensated = rounding == "gptq-adaround"  # the reconstruction rounds them
        record["gptq"] = gptq_round_(denoiser, calib, progress=progress, compensated=compensated)
    if config.bias_correction and rounding not in RECONSTRUCTING and calib is not None:
        from accel.quant.bias_correction import correct_bias

        record["bias_correction"] = correct_bias(denoiser, calib, progress=progress)
    if rounding in RECONSTRUCTING:
        from accel.quant.reconstruct import reconstruct_, reconstruction_times

        timed = reconstruct_(
            denoiser, calib, fp_network, config.reconstruction_iters, config.seed, progress=progress
        )
        record["reconstruction"] = reconstruction_times(timed)
    return record


def _smoothing(denoiser, plan, calib, config: QuantConfig, progress: bool) -> dict | None:
    """Smoothing factors of the layers the plan smooths, from the float model's inputs."""
    from accel.quant.smoothing import input_channel_absmax, smoothing_factors

    names = [name for name, spec in plan.items() if spec.get("smooth")]
    if not names:
        return None
    peaks = input_channel_absmax(denoiser, names, calib, progress=progress)
    return {
        name: smoothing_factors(
            peaks[name].to(denoiser.device),
            denoiser.module.get_submodule(name).weight,
            config.smooth_alpha,
        )
        for name in names
    }


def rebuild(denoiser, record: dict) -> None:
    """Give a fresh base network the quantized structure described by an artifact's transform
    record."""
    apply_plan(
        denoiser.module,
        record["layers"],
        record["attention"],
        QuantConfig.from_dict(record["config"]),
        fit_ranges=False,
    )
