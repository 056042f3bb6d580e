"""QuantConfig: what to quantize, at which bits, with which recipe. Frozen; round-trips to JSON."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar

from accel.core.config import Config, one_of
from accel.quant.quantizer import RANGE_METHODS

# Layers that see only the timestep (or class) embedding, plus the first and last layer of the
# network (found by tracing), stay at 8 bits by default: Q-Diffusion keeps the first and last layers
# at 8 bits, TFMQ-DM shows the time-embedding path is the most sensitive, and NVIDIA's diffusers
# recipe keeps both out of INT8 entirely. They hold under 10% of the reference model's weights.
DEFAULT_EIGHT_BIT = (
    "*time_embedding*",
    "*time_emb_proj*",
    "*timestep_embedder*",
    "*class_embedding*",
    "*norm1.linear*",
    "*proj_out_1*",
)  # the last two: DiT adaLN from (t, class) only
CALIBRATION_FIELDS_OF_VERSION_1 = ("calib_policy", "calib_samples", "calib_steps", "calib_every")
RECON_ITERS = 500  # BRECQ/AdaRound iterations per block where the quantize stage reconstructs
# how weights round: to nearest, by GPTQ (gptq.py), learned by block reconstruction (AdaRound), or
# learned by it from GPTQ's compensated weights
ROUNDINGS = ("nearest", "gptq", "adaround", "gptq-adaround")
RECONSTRUCTING = ("adaround", "gptq-adaround")
ACTIVATION_GROUP = 64  # SVDQuant's INT4 activation group size
SMOOTH_ALPHA = 0.5  # SmoothQuant's default migration strength
# what one dynamic activation scale covers: a token (torchao's int8 dynamic; exported with the
# scales computed in the graph) or the whole tensor of a call (ONNX's DynamicQuantizeLinear:
# exported for ONNX Runtime's CPU kernels)
DYNAMIC_SCOPES = ("token", "tensor")


@dataclass(frozen=True)
class QuantConfig(Config):
    VERSION: ClassVar[int] = 2  # 2: calibration settings moved to CalibConfig
    w_bits: int = 4
    a_bits: int | None = 8  # None: weight-only
    w_symmetric: bool = True  # symmetric = zero point 0 = exportable
    a_symmetric: bool = True
    w_range: str = one_of("mse", RANGE_METHODS)  # how weight ranges are chosen
    a_range: str = one_of("mse", RANGE_METHODS)
    group_size: int | None = None  # linear weights: scales per group of input channels
    # the Q·K^T and P·V inputs, at static 8 bits (None: at W4A8 with static activation scales;
    # not at W8A8, with dynamic scales or below 8-bit activations: attention_quantized)
    quantize_attention: bool | None = None
    split_shortcut: bool = True  # Q-Diffusion split at decoder skip concatenations
    protect_ends: bool = True  # first layer W8, float input; last layer float (plan_layers)
    # module-name patterns of the layers that read the (timestep, class) embedding: 8-bit weights,
    # float inputs at static W8A8 (float_conditioning_inputs), per-token 8-bit below 8 bits
    eight_bit: tuple[str, ...] = DEFAULT_EIGHT_BIT
    # pattern -> weight bits, overrides the above
    layer_bits: dict[str, int] = field(default_factory=dict)
    skip: tuple[str, ...] = ()  # patterns left in floating point
    # None: by weight bits and recon_iters (``weight_rounding``)
    rounding: str | None = one_of(None, ROUNDINGS)
    # BRECQ/AdaRound iterations per block (0 or None: RECON_ITERS where rounding is adaround)
    recon_iters: int | None = 0
    # 8-bit activations with scales computed at run time instead of one calibrated static scale per
    # tensor: one per token (torchao's int8 dynamic, SmoothQuant's per-token) or, with
    # dynamic_scope "tensor", one per call (ONNX's DynamicQuantizeLinear)
    dynamic_activations: bool = False
    dynamic_scope: str = one_of("token", DYNAMIC_SCOPES)
    # where no reconstruction runs: subtract each layer's mean output error (bias_correction.py)
    bias_correction: bool = True
    # Below 8-bit activations (SVDQuant's W4A4): activation scales per token and group of this many
    # channels, computed at run time (None: static per tensor; by_bits sets 64 below 8 bits) ...
    a_group_size: int | None = None
    # ... SmoothQuant's migration strength (smoothing.py; None: no smoothing) ...
    smooth_alpha: float | None = None
    # ... a Hadamard rotation of the inputs in blocks of at most a group (rotation.py; None: where
    # there is a low-rank branch) ...
    rotate: bool | None = None
    # ... and the rank of the 16-bit branch that takes the weights' top directions (low_rank.py)
    low_rank: int = 0
    seed: int = 0

    def validate(self) -> None:
        if not 2 <= self.w_bits <= 8:
            raise self.invalid("w_bits", f"must be between 2 and 8, got {self.w_bits}")
        if self.a_bits is not None and not 4 <= self.a_bits <= 16:
            raise self.invalid("a_bits", f"must be between 4 and 16, got {self.a_bits}")
        if self.group_size is not None and self.group_size < 1:
            raise self.invalid("group_size", f"must be at least 1, got {self.group_size}")
        if self.a_group_size is not None and self.a_group_size < 1:
            raise self.invalid("a_group_size", f"must be at least 1, got {self.a_group_size}")
        if self.smooth_alpha is not None and not 0 < self.smooth_alpha < 1:
            raise self.invalid("smooth_alpha", f"must be between 0 and 1, got {self.smooth_alpha}")
        if self.low_rank < 0:
            raise self.invalid("low_rank", f"must be 0 or more, got {self.low_rank}")
        if self.recon_iters is not None and self.recon_iters < 0:
            raise self.invalid("recon_iters", f"must be 0 or more, got {self.recon_iters}")
        if self.recon_iters and self.rounding not in (None, *RECONSTRUCTING):
            raise self.invalid(
                "recon_iters",
                "block reconstruction learns the rounding itself: it goes with --rounding "
                f"adaround or gptq-adaround, not {self.rounding}",
            )
        self._check_low_bit_methods()
        if self.dynamic_scope != "token" and not self.dynamic_activations:
            raise self.invalid("dynamic_scope", "goes with dynamic activations (--dynamic-act)")
        if self.dynamic_activations and self.a_bits != 8:
            reason = (
                "below 8 bits they are dynamic already, in groups"
                if self.a_bits
                else ("weight-only quantization has none to scale")
            )
            raise self.invalid(
                "dynamic_activations", f"needs 8-bit activations (--act-bits 8): {reason}"
            )
        for pattern, bits in self.layer_bits.items():
            if not 2 <= bits <= 8:
                raise self.invalid(
                    "layer_bits", f"[{pattern!r}] must be between 2 and 8, got {bits}"
                )

    def _check_low_bit_methods(self) -> None:
        """Smoothing, the low-rank branch and dynamic groups are how layers with activations below
        8 bits are built (apply.py); at 8 bits or float activations they would be ignored."""
        if self.a_bits is not None and self.a_bits < 8:
            return
        for name in ("low_rank", "smooth_alpha", "a_group_size", "rotate"):
            if getattr(self, name):
                raise self.invalid(
                    name,
                    "works with activations below 8 bits only (--act-bits 4); with "
                    f"{'float' if self.a_bits is None else f'{self.a_bits}-bit'} activations it "
                    "would be ignored",
                )

    def by_bits(self) -> QuantConfig:
        """This config with what depends on the bits chosen where it is left open: below 8-bit
        activations, groups of ``ACTIVATION_GROUP`` and, with a low-rank branch, smoothing at
        SMOOTH_ALPHA (SVDQuant's recipe); the rounding (``weight_rounding``) and its iterations."""
        config = self
        if self.a_bits and self.a_bits < 8 and self.a_group_size is None:
            config = replace(config, a_group_size=ACTIVATION_GROUP)
        if self.low_rank and self.smooth_alpha is None:
            config = replace(config, smooth_alpha=SMOOTH_ALPHA)
        return replace(config, rounding=self.weight_rounding, recon_iters=self.reconstruction_iters)

    @property
    def weight_rounding(self) -> str:
        """The rounding asked for; else adaround where reconstruction iterations are given, GPTQ
        below 8-bit weights (with a low-rank branch too, on the residual, as SVDQuant+GPTQ: W4A4's
        per-step error on digits-dit 0.0192 -> 0.0166 with rotation), to nearest at 8 bits
        (calibration and bias correction, as Model Optimizer's INT8 diffusers recipe). Measured on
        digits (2,000 samples, DDIM 50, 2-core AMD EPYC): W8A8 FID ratio 1.09
        with bias correction at seed 0 (1.16 without, 1.16 with 50 reconstruction iterations);
        W4A8 with GPTQ about as close to the original as with 500 AdaRound iterations per block
        (FID ratio 1.16 / 1.33 at seeds 0 / 1 against 1.03-1.37 / 1.38), the same with any thread
        count, in 80 s instead of 8.4-9.2 minutes; on digits-dit further from it (1.63 -> 2.01,
        1,000 samples; gptq.py), where "gptq-adaround" (asked for) is closest."""
        if self.rounding is not None:
            return self.rounding
        if self.recon_iters:
            return "adaround"
        return "gptq" if self.w_bits < 8 else "nearest"

    @property
    def rotates(self) -> bool:
        """Whether layers with activations below 8 bits rotate their inputs: as asked, else with
        a low-rank branch (accel's W4A4). Measured on digits-dit W4A4 (rank 16), per-step eps
        error on held-out inputs: 0.0227 without, 0.0192 with blocks of 64."""
        return self.low_rank > 0 if self.rotate is None else self.rotate

    @property
    def reconstruction_iters(self) -> int:
        """AdaRound iterations per block: none unless the rounding reconstructs."""
        if self.weight_rounding not in RECONSTRUCTING:
            return 0
        return self.recon_iters or RECON_ITERS

    @property
    def needs_calibration(self) -> bool:
        """Whether quantizing needs a calibration set: for static activation scales, smoothing,
        GPTQ or reconstruction (bias correction uses one where it is given)."""
        static_scales = bool(self.a_bits) and (
            not self.dynamic_activations or self.attention_quantized
        )
        learned = self.weight_rounding != "nearest"
        return static_scales or learned or self.smooth_alpha is not None

    @property
    def static_8bit_scales(self) -> bool:
        """Whether activations take one calibrated scale per tensor at 8 bits (not dynamic)."""
        return bool(self.a_bits) and self.a_bits >= 8 and not self.dynamic_activations

    @property
    def float_conditioning_inputs(self) -> bool:
        """Whether the layers that read the (timestep, class) embedding take float inputs: at W8A8
        with static scales. Their input is one vector per sample whose range follows the timestep,
        which one static scale shifts for every sample of a step alike (below 8 bits they take
        per-token scales instead: apply.py). They compute once per sample, not per token.
        Measured (seed 0, 2-core Xeon, static inputs -> float): W8A8 FID ratio digits-dit 1.53 ->
        1.27 (1,000 samples), digits 1.09 -> 1.07 (2,000); W4A8 mixed, so it keeps static inputs
        there: digits-dit 1.93 -> 1.74 but digits 1.13 -> 1.21, the feature distance to the
        original's samples up on both."""
        return self.static_8bit_scales and self.w_bits >= 8

    @property
    def attention_quantized(self) -> bool:
        """Whether the attention matmul inputs are quantized (static 8 bits): as asked, else with
        static 8-bit activation scales and weights below 8 bits (W4A8) only. No export keeps them
        (qdq.py: TensorRT quantizes attention only in FP8), so where they are off the model is its
        exported form. Measured on digits-dit, 1,000 samples, FID ratio with them -> without:
        static W8A8 1.53 -> 1.35 (2-core EPYC and Xeon alike; digits 1.09 -> 1.08 at 2,000), with
        dynamic activations 1.08 -> 1.00 (EPYC), W4A4 1.60 / 1.54 -> 1.33 / 1.29 at seeds 0 / 1
        (Xeon); W4A8 was measured with them (its spread across seeds and threads)."""
        if not self.a_bits:
            return False
        if self.quantize_attention is None:
            return self.static_8bit_scales and self.w_bits < 8
        return self.quantize_attention

    @classmethod
    def upgrade(cls, data: dict, version: int) -> dict:
        """Version 1 (accel 0.1) also held the calibration recipe, which a saved model does not
        need."""
        if version == 1:
            return {k: v for k, v in data.items() if k not in CALIBRATION_FIELDS_OF_VERSION_1}
        return data


@dataclass(frozen=True)
class BitBudget(Config):
    """Weight bits chosen per layer (budget.py) for a quality or a size budget; at most one."""

    # FID of the quantized model over the original's, same noise, at most this (measured)
    max_fid_ratio: float | None = None
    # the model's weights file at most this many MB (predicted from the packed widths)
    target_size: float | None = None
    # samples per FID measured while searching for max_fid_ratio: as many as an evaluation's
    # (1,000 picked models whose ratio at 2,000 missed the budget)
    fid_samples: int = 2000

    def validate(self) -> None:
        if self.max_fid_ratio is not None and self.target_size is not None:
            raise self.invalid("max_fid_ratio", "and target_size are two budgets: give one of them")
        if self.max_fid_ratio is not None and self.max_fid_ratio < 1:
            raise self.invalid(
                "max_fid_ratio",
                f"must be at least 1 (the original's own FID), got {self.max_fid_ratio}",
            )
        if self.target_size is not None and self.target_size <= 0:
            raise self.invalid("target_size", f"must be above 0 MB, got {self.target_size}")
        if self.fid_samples < 2:
            raise self.invalid("fid_samples", f"must be at least 2, got {self.fid_samples}")

    @property
    def given(self) -> bool:
        return self.max_fid_ratio is not None or self.target_size is not None


W8A8 = QuantConfig(w_bits=8, a_bits=8)
W4A8 = QuantConfig(w_bits=4, a_bits=8)
# Q-Diffusion's recipe: W4A8 with 500 BRECQ/AdaRound iterations per block on a timestep-aware
# calibration set.
Q_DIFFUSION = QuantConfig(w_bits=4, a_bits=8, recon_iters=RECON_ITERS)
# SVDQuant's recipe: smoothing, a rank-16 branch, 4-bit residual and 4-bit activations in groups.
W4A4 = QuantConfig(
    w_bits=4, a_bits=4, a_group_size=ACTIVATION_GROUP, smooth_alpha=SMOOTH_ALPHA, low_rank=16
)
# What the quantize stage (`accel quantize`, a recipe's quantize stage) starts from, its settings
# changing it: W4A8, rounded by weight bits (QuantConfig.weight_rounding).
STAGE_DEFAULT = QuantConfig(w_bits=4, a_bits=8)
