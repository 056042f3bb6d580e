"""The commands that transform a model and report on it: quantize, prune, distill, cache, optimize.
Each one's flags are its stage's keys (accel.core.stages); all five run one skeleton: settings from
the flags, the stage and its measurements (accel.measure), then the artifact with its report."""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable
from pathlib import Path

from accel.cli.common import (
    Command,
    add_eval_flags,
    add_model_flags,
    add_out_flags,
    add_sampler_flags,
    add_stage_flag,
    device,
    emit_report,
    eval_config,
    stage_given,
)
from accel.core import stages
from accel.distillation.config import CONSISTENCY
from accel.quant.config import RECON_ITERS


def run_stage_command(args: argparse.Namespace, default_out: Callable) -> None:
    """Settings from the flags, the stage and its measurements, then the artifact (from the main
    process)."""
    import accel
    from accel.core.files import ensure_writable_dir
    from accel.measure import measure_stage
    from accel.train import work_dir_for

    settings = stages.get(args.command).settings(
        stage_given(args, stages.get(args.command)), seed=args.seed
    )
    out = Path(args.out or f"{Path(str(args.model)).name}-{default_out(settings)}")
    ensure_writable_dir(out, args.overwrite)
    measured = measure_stage(
        args.command,
        args.model,
        settings,
        eval_config(args),
        device=device(args.device),
        work_dir=work_dir_for(out),
        resume=getattr(args, "resume", False),
        ablation=getattr(args, "ablation", False),
        prompts=args.prompts,
    )
    if measured is None:
        return  # another process of `accelerate launch`: the main one writes and reports
    accel.save(measured.model, out, args.overwrite, measured.evaluation)
    # a training run's checkpoints, now in the artifact
    shutil.rmtree(work_dir_for(out), ignore_errors=True)
    emit_report(args, measured.evaluation.report, out)


def _common(parser: argparse.ArgumentParser, out_default: str, sampler: bool = True) -> None:
    add_model_flags(parser)
    if sampler:
        add_sampler_flags(parser)
    add_eval_flags(parser)
    add_out_flags(parser, f"artifact folder (default: <model>-{out_default})")


# Each command's own flags: a stage key -> its help ("{default}": the stage's default for it). The
# docs' flag tables are made from these too (bench/docs.py).
TRAINING_FLAGS = {
    "teacher-samples": "--data teacher: samples drawn ({default})",
    "lr": "peak learning rate (default {default:g})",
    "train-batch": "training batch per process (default {default})",
    "checkpoint-every": "checkpoint every N steps into <out>.partial (default {default})",
}
QUANTIZE_FLAGS = {
    "bits": "weight bits, 2-8 (default {default})",
    "act-bits": "activation bits, 4-16 (default {default}); 0: weight-only",
    "range": "how quantization ranges are chosen (default {default})",
    "group-size": "linear weights: one scale per group "
    "of input channels (default: one per output channel)",
    "no-split": "no split-shortcut quantization",
    "attention": "quantize the attention matmul inputs (Q, K, softmax, V) with static 8-bit "
    "scales (the default at W4A8 only; no export keeps them)",
    "no-attention": "leave the attention matmuls in float (the default but at W4A8 with static "
    "scales)",
    "dynamic-act": "8-bit activations with scales computed at run time instead of static "
    "calibrated ones",
    "dynamic-scope": "--dynamic-act: one scale per token (torchao's int8 dynamic; exports with "
    "the scales computed in the graph) or per tensor (ONNX's DynamicQuantizeLinear: exports to "
    "the ort-cpu target's integer kernels); default {default}",
    "no-bias-correction": "keep the layers' biases as they are where no reconstruction runs "
    "(by default each layer's mean output error on the calibration set is subtracted)",
    "low-rank": "SVDQuant (W4A4): rank of the 16-bit branch that takes each 4-bit layer's top "
    "singular directions, with smoothing (default {default}: none); needed by --act-bits 4",
    "smooth": "SmoothQuant migration strength alpha in (0, 1) for 4-bit activations (default "
    "0.5 with --low-rank)",
    "no-rotate": "with --low-rank: no Hadamard rotation of the 4-bit layers' inputs (by default "
    "each block of up to 64 channels is rotated, spreading outlier channels before 4 bits)",
    "layer-bits": "weight bits for layers whose name "
    "matches PATTERN (fnmatch), as PATTERN=BITS; repeatable",
    "skip": "leave layers whose name matches PATTERN in float; repeatable",
    "max-fid-ratio": "choose each layer's weight bits (2/4/8) for the smallest model whose FID "
    "over the original's, measured, is at most R (at least 1)",
    "target-size": "choose each layer's weight bits (2/4/8) for the least predicted error within "
    "MB megabytes of weights",
    "budget-samples": "--max-fid-ratio: samples per FID measured while searching (default "
    "{default})",
    "calib-policy": "uniform: every k-th sampler step (Q-Diffusion); "
    "normal: PTQ4DM; last: final step only (default {default})",
    "calib-samples": "sampler trajectories to calibrate on (default {default})",
    "calib-every": "keep every k-th of the sampler's steps (default {default})",
    "calib": "calibration set file to reuse or create (default: a cache under ~/.cache/accel)",
    "rounding": "how weights round: gptq (the default below 8-bit weights: each layer's "
    "rounding error compensated on its calibration inputs, seconds), nearest (the default at 8 "
    "bits), adaround (Q-Diffusion's block reconstruction, minutes), or "
    "gptq-adaround (the reconstruction started from GPTQ's compensated weights: closest on "
    "transformers)",
    "recon-iters": "--rounding adaround or gptq-adaround: iterations per block (default "
    f"{RECON_ITERS}; given alone, it implies adaround)",
}
PRUNE_FLAGS = {
    "ratio": "fraction of channels and heads removed (default {default})",
    "criterion": "channel importance (default {default}: Taylor over the informative timesteps)",
    "threshold": "diff-pruning: stop accumulating gradients "
    "once the loss < threshold x its max ({default})",
    "round-to": "kept widths are multiples of this (default {default})",
    "importance-batch": "images per importance gradient pass ({default})",
    "timestep-stride": "importance gradients at t = 0, stride, 2 x stride, ... (default {default})",
    "finetune-steps": "fine-tuning steps (default {default}; 0: none)",
    "distill-weight": "fine-tuning on images: weight of the original's eps as a "
    "second target (default {default:g}; 0: the DDPM loss alone, as Diff-Pruning)",
    "label-dropout": "class models with a null class: share of fine-tuning labels replaced by "
    "the null class, so guidance keeps working (default {default:g})",
    "data": "fine-tuning images: an .npz of uint8 N x C x H x W, or 'teacher' (samples "
    "of the original, distillation on its eps); default for digits: its training set",
    **TRAINING_FLAGS,
}
DISTILL_FLAGS = {
    "method": "progressive (halve the steps stage by "
    "stage) or consistency (LCM-style; default {default})",
    "steps": "the student's sampling steps (default {default}; progressive: a power of two)",
    "prediction": "what the student's network outputs "
    "(default {default}: see accel/distillation/config.py)",
    "teacher-steps": "progressive: the first stage's teacher "
    "DDIM steps, halved each stage (default {default})",
    "solver-skip": "consistency: training timesteps the "
    "teacher's DDIM solver jumps (default {default}, as LCM)",
    "target-ema": "consistency: target network EMA (default {default})",
    "loss": "consistency: the distance (default {default})",
    "guidance-range": "guidance distillation: the student takes the guidance weight as input, "
    "for weights LOW-HIGH, and runs one call per step (default: it learns the teacher's own "
    "guidance)",
    "label-dropout": "class models: share of training labels replaced by the null class, so the "
    "student keeps two-call guidance (default {default:g})",
    "train-steps": "training steps, per stage for progressive (default "
    f"{{default}}), in all for consistency (default {CONSISTENCY.steps})",
    "data": "training images: an .npz of uint8 N x C x H x W, or 'teacher' (the "
    "teacher's own samples, drawn once: data-free); default for digits: its training set",
    **TRAINING_FLAGS,
}
CACHE_FLAGS = {
    "interval": "one full step per N steps (default {default})",
    "branch": "what stays live on cached steps: a UNet's skip level (0 the shallowest and "
    "cheapest), a transformer's first N blocks (default {default})",
    "schedule": "UNets: full steps every N (uniform) or as many, crowded quadratically "
    "around --center (default {default}: accel/cache/config.py says why)",
    "center": "quadratic: where full steps crowd, as a "
    "fraction of the trajectory (default {default}: the start)",
    "method": "interval: full steps on a fixed schedule; first-block (transformers): "
    "recompute when the first block's residual moved past --threshold (default {default})",
    "threshold": "first-block: relative change of block 0's residual that forces a full "
    "step (default {default:g})",
}
OPTIMIZE_FLAGS = {
    "dtype": "precision (default {default}: fp16 on CUDA, fp32 on CPU)",
    "backend": "auto: Triton kernels on CUDA, PyTorch elsewhere; "
    "triton: always (CPU: TRITON_INTERPRET=1) (default {default})",
    "no-channels-last": "keep NCHW activations",
    "cuda-graph": "replay each denoiser step as a CUDA graph",
}
METAVARS = {
    "layer-bits": "PATTERN=BITS",
    "skip": "PATTERN",
    "guidance-range": "LOW,HIGH",
    "low-rank": "R",
    "smooth": "ALPHA",
    "max-fid-ratio": "R",
    "target-size": "MB",
    "budget-samples": "N",
}


def _flags_of(
    name: str,
    own: dict,
    out_default: str,
    sampler: bool = True,
    trains: bool = False,
    ablation: str | None = None,
):
    """The parser builder of a stage's command: the common flags, then ``own`` (key -> help)."""

    def add(parser: argparse.ArgumentParser) -> None:
        _common(parser, out_default, sampler)
        stage = stages.get(name)
        for key, text in own.items():
            add_stage_flag(parser, stage, key, text, METAVARS.get(key))
        if trains:
            parser.add_argument(
                "--resume",
                action="store_true",
                help="continue the interrupted run in <out>.partial",
            )
        if ablation:
            parser.add_argument("--ablation", action="store_true", help=ablation)

    return add


def _bits_name(settings) -> str:
    quant = settings["quant"]
    return f"w{quant.w_bits}a{quant.a_bits or 16}"


RESUMABLE = "the last checkpoint in <out>.partial is kept: --resume continues"


def _command(
    name: str, help: str, add_flags, out_name, interrupted: str = "nothing was written"
) -> Command:
    return Command(
        name,
        help,
        add_flags,
        lambda args: run_stage_command(args, out_name),
        stage=name,
        interrupted=interrupted,
    )


COMMANDS = [
    _command(
        "quantize",
        "post-training quantization (Q-Diffusion recipe) + report",
        _flags_of(
            "quantize",
            QUANTIZE_FLAGS,
            "w<bits>a<act-bits>",
            ablation="also measure the naive-to-full W4A8 ablation and W8A8",
        ),
        _bits_name,
    ),
    _command(
        "prune",
        "structured pruning (Diff-Pruning), fine-tuning + report",
        _flags_of(
            "prune",
            PRUNE_FLAGS,
            "pruned",
            trains=True,
            ablation="also measure every criterion at --ratio and --criterion at 0.2/0.3/0.5, same "
            "fine-tuning",
        ),
        lambda s: "pruned",
        f"nothing was written ({RESUMABLE})",
    ),
    _command(
        "distill",
        "step distillation (progressive or consistency) to 1-64 steps + report",
        # the student gets the sampler it was distilled for: no sampler flags
        _flags_of("distill", DISTILL_FLAGS, "<steps>step", sampler=False, trains=True),
        lambda s: f"{s['distill'].steps}step",
        f"nothing was written ({RESUMABLE})",
    ),
    _command(
        "cache",
        "training-free feature caching across steps (DeepCache, transformer block caches) + report",
        _flags_of("cache", CACHE_FLAGS, "cache<interval>"),
        lambda s: f"cache{s['cache'].interval}",
    ),
    _command(
        "optimize",
        "fused Triton GroupNorm/attention, fp16, channels-last + report",
        _flags_of("optimize", OPTIMIZE_FLAGS, "fast"),
        lambda s: "fast",
    ),
]
