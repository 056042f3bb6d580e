"""The quantize stage (``accel quantize``, a recipe's ``quantize`` stage): record a calibration set
along the model's own sampler, then quantize with it."""

from __future__ import annotations

from accel.calib.collect import CalibConfig, CalibFile, calibrate
from accel.core import registry, stages
from accel.core.errors import ConfigError
from accel.core.sampling_spec import SamplerChange
from accel.core.stages import SAMPLER_KEYS, Context, Key, Settings, StageResult, change_sampler
from accel.quant.apply import plan_layers
from accel.quant.config import STAGE_DEFAULT

SIMULATION_NOTE = (
    "quantized layers run as fake quantization in PyTorch (float arithmetic on the integer grid), "
    "so this latency is not integer speed; an exported INT8 engine is where that is measured"
)


def weight_only(bits: int) -> int | None:
    """``act-bits = 0``: weight-only quantization (float activations)."""
    return bits or None


def pattern_bits(items) -> dict[str, int]:
    """``--layer-bits PATTERN=BITS`` (repeatable), or a recipe's table ``{pattern = bits}``."""
    if len(items) == 1 and isinstance(items[0], dict):
        return dict(items[0])
    bits = {}
    for item in items:
        pattern, _, value = str(item).rpartition("=")
        if not pattern or not value.isdigit():
            raise ConfigError("QuantConfig", "layer_bits", f"takes PATTERN=BITS, got '{item}'")
        bits[pattern] = int(value)
    return bits


def _check_activation_bits(config) -> None:
    """4-bit activations only with the method made for them (the Python API may still quantize
    naively, as the W4A4 ablation does)."""
    if config.a_bits and config.a_bits < 8 and not config.low_rank:
        raise ConfigError(
            "QuantConfig",
            "a_bits",
            f"{config.a_bits} needs --low-rank R (activations below 8 bits: SVDQuant's smoothing "
            "plus a 16-bit low-rank branch take the outliers they cannot hold); try --low-rank 16",
        )


def run(model, settings: Settings, context: Context) -> StageResult:
    change_sampler(model, settings)
    config = settings["quant"].by_bits()
    _check_activation_bits(config)
    plan_layers(model, config)  # bad patterns fail here, before minutes of calibration
    calib = calibrate(model, settings["calib"], settings["calib_file"].path, context.progress)
    record = registry.apply(model, "quantize", config, calib, context.progress)
    record["calibration"] = {**calib.meta, "inputs": len(calib)}
    model.notes.append(SIMULATION_NOTE)
    return StageResult(model, record)


QUANTIZE_STAGE = stages.register(
    stages.Stage(
        name="quantize",
        roles={
            "quant": STAGE_DEFAULT,
            "calib": CalibConfig(),
            "calib_file": CalibFile(),
            "sampling": SamplerChange(),
        },
        run=run,
        keys={
            "bits": Key("quant", "w_bits"),
            "act-bits": Key("quant", "a_bits", convert=weight_only),
            "range": Key("quant", "w_range", also=("a_range",)),
            "no-split": Key("quant", "split_shortcut", convert=lambda on: not on, switch=True),
            "no-attention": Key(
                "quant", "quantize_attention", convert=lambda on: not on, switch=True
            ),
            "no-bias-correction": Key(
                "quant", "bias_correction", convert=lambda on: not on, switch=True
            ),
            "low-rank": Key("quant", "low_rank"),
            "smooth": Key("quant", "smooth_alpha"),
            "layer-bits": Key("quant", "layer_bits", convert=pattern_bits, many=True),
            "skip": Key("quant", "skip", many=True),
            "calib-policy": Key("calib", "policy"),
            "calib-samples": Key("calib", "samples"),
            "calib-every": Key("calib", "every"),
            "calib": Key("calib_file", "path"),
            **SAMPLER_KEYS,
        },
        open_roles=("quant",),
    )
)
