"""The quantize stage (``accel quantize``, a recipe's ``quantize`` stage): record a calibration set
along the model's own sampler, then quantize with it."""

from __future__ import annotations

from dataclasses import replace

from accel.calib.collect import CalibConfig, CalibFile, calibrate
from accel.core import registry, stages
from accel.core.errors import ConfigError
from accel.core.sampling_spec import SamplerChange
from accel.core.stages import SAMPLER_KEYS, Context, Key, Settings, StageResult, change_sampler
from accel.quant.apply import plan_layers
from accel.quant.config import STAGE_DEFAULT, BitBudget

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


def _check_budget(config, budget: BitBudget) -> None:
    if not budget.given:
        return
    if config.layer_bits:
        raise ConfigError(
            "QuantConfig", "layer_bits", "and a bit budget both set layer widths: give one of them"
        )
    if config.a_bits is not None and config.a_bits < 8:
        raise ConfigError(
            "BitBudget",
            "max_fid_ratio" if budget.max_fid_ratio is not None else "target_size",
            "chooses weight widths with 8-bit (or float) activations; drop --act-bits "
            f"{config.a_bits}",
        )


def run(model, settings: Settings, context: Context) -> StageResult:
    change_sampler(model, settings)
    config, budget = settings["quant"], settings["budget"]
    if budget.given and config.rounding is None and not config.recon_iters:
        # every candidate is quantized: calibration and bias correction, rounding to nearest
        # unless asked otherwise (the budget's sensitivities are measured that way: budget.py)
        config = replace(config, rounding="nearest")
    config = config.by_bits()
    _check_activation_bits(config)
    _check_budget(config, budget)
    plan_layers(model, config)  # bad patterns fail here, before minutes of calibration
    calib = None
    if config.needs_calibration or config.bias_correction or budget.given:
        calib = calibrate(model, settings["calib"], settings["calib_file"].path, context.progress)
    search = None
    if budget.given:
        from accel.quant.bit_search import choose_bits

        bits, search = choose_bits(model, config, calib, budget, context.progress)
        config = replace(config, layer_bits=bits)
    record = registry.apply(model, "quantize", config, calib, context.progress)
    if calib is not None:
        record["calibration"] = {**calib.meta, "inputs": len(calib)}
    if search is not None:
        record["bit_budget"] = search
    model.notes.append(SIMULATION_NOTE)
    return StageResult(model, record)


QUANTIZE_STAGE = stages.register(
    stages.Stage(
        name="quantize",
        roles={
            "quant": STAGE_DEFAULT,
            "calib": CalibConfig(),
            "calib_file": CalibFile(),
            "budget": BitBudget(),
            "sampling": SamplerChange(),
        },
        run=run,
        keys={
            "bits": Key("quant", "w_bits"),
            "act-bits": Key("quant", "a_bits", convert=weight_only),
            "range": Key("quant", "w_range", also=("a_range",)),
            "no-split": Key("quant", "split_shortcut", convert=lambda on: not on, switch=True),
            "attention": Key("quant", "quantize_attention", switch=True),
            "no-attention": Key(
                "quant", "quantize_attention", convert=lambda on: not on, switch=True
            ),
            "dynamic-act": Key("quant", "dynamic_activations", switch=True),
            "dynamic-scope": Key("quant", "dynamic_scope"),
            "no-bias-correction": Key(
                "quant", "bias_correction", convert=lambda on: not on, switch=True
            ),
            "low-rank": Key("quant", "low_rank"),
            "smooth": Key("quant", "smooth_alpha"),
            "no-rotate": Key("quant", "rotate", convert=lambda on: not on, switch=True),
            "layer-bits": Key("quant", "layer_bits", convert=pattern_bits, many=True),
            "max-fid-ratio": Key("budget", "max_fid_ratio"),
            "target-size": Key("budget", "target_size"),
            "budget-samples": Key("budget", "fid_samples"),
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
