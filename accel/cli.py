"""The ``accel`` command line: parses flags, builds configs, calls the API, prints a table or JSON."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from accel.core.errors import AccelError, ConfigError

EXAMPLES = """examples:
  accel eval                                  FID, latency and size of the built-in model "digits"
  accel eval --model path/to/unet --out rep   the same for a diffusers folder; report written to rep/
  accel eval --json --n 500 --steps 20        a quicker run, report as JSON on stdout
  accel eval --steps 20 --baseline digits     20 DDIM steps against the original's own 50: time per image
  accel eval --sampler dpm++ --steps 20       DPM-Solver++ (or any diffusers scheduler class, by name)
  accel sample --n 64 --out grid.png          a grid of 64 samples (or .npz: uint8 array "images")
  accel info --model path/to/unet             class, shapes, parameters, MACs, size, scheduler
  accel quantize --bits 4                     W4A8 "digits": artifact digits-w4a8/ + report vs the original
  accel quantize --bits 8 --act-bits 8 --model path/to/unet --out unet-w8a8
  accel quantize --bits 4 --calib-samples 256 --recon-iters 2000 --out q4 --ablation
  accel eval --model q4                       the saved artifact, measured again
  accel prune --ratio 0.3                     prune + fine-tune "digits": artifact digits-pruned/ + report
  accel prune --model path/to/unet --ratio 0.25 --data images.npz --out unet-p25   (or --data teacher: data-free)
  accel prune --ratio 0.3 --resume            continue an interrupted fine-tuning run from digits-pruned.partial/
  accel distill --steps 4                      progressive distillation of "digits" to 4 steps: digits-4step/ + report
  accel distill --method consistency --steps 1 --out cd1    one-step consistency student (LCM-style)
  accel distill --model path/to/unet --data teacher --steps 4   data-free: x0 from the teacher's own samples
  accel eval --model cd1 --steps 4            a consistency student sampled at 4 steps instead of its own 1
  accel cache --interval 3                    DeepCache on "digits": full step every 3rd, digits-cache3/ + report
  accel cache --interval 5 --branch 1 --schedule quadratic --model path/to/unet --out unet-c5
  accel optimize --model path/to/unet --out unet-fast   fused Triton kernels, fp16, channels-last + report
  accel export onnx --model q4 --out q4.onnx  ONNX (Q/DQ for quantized layers), checked with ONNX Runtime
  accel export onnx --model unet --dtype fp16 float16 graph; --int8-grid: 4-bit linear weights as INT8, opset 19
  accel eval --model q4.onnx                  sample through ONNX Runtime, side by side with q4 in PyTorch
  accel export trt --model q4 --out q4.plan   TensorRT engine, where tensorrt is installed (accel[trt])
  accel train-reference --out my-digits       retrain the built-in model from scratch (fixed seed)

Errors print one line and exit with status 2. Nothing is downloaded: models come from local folders,
accel artifacts, the local Hugging Face cache, or the built-in "digits"."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, as for every other bad input
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _add_common(parser: argparse.ArgumentParser, runs: bool = True) -> None:
    parser.add_argument("--model", default="digits", help="diffusers folder, accel artifact, or 'digits' (default)")
    if runs:  # commands that run the model (export traces on the CPU with fixed inputs: neither applies)
        parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available, else cpu)")
        parser.add_argument("--seed", type=int, default=0, help="seed for noise and sampling (default 0)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _add_sampler(parser: argparse.ArgumentParser, n_default: int) -> None:
    parser.add_argument("--n", type=int, default=n_default, help=f"number of samples (default {n_default})")
    parser.add_argument("--sampler", help="ddim, ddpm, dpm++ (DPM-Solver++ 2M) or a diffusers scheduler class name "
                        "(default: the model's own sampler, DDIM for a model accel did not distill)")
    parser.add_argument("--steps", type=int, help="sampling steps (default: the model's own, 50 for DDIM)")
    parser.add_argument("--eta", type=float, help="DDIM's eta (default 0: deterministic)")
    parser.add_argument("--batch-size", type=int, default=500, help="samples per denoiser call (default 500)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def _add_measuring(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--latency-batch", type=int, default=1, help="batch size for per-step latency (default 1)")
    parser.add_argument("--inception-weights", help="local pt_inception-2015-12-05-6726825d.pth for Inception FID")
    parser.add_argument("--fid-ref", help="real images for Inception FID: .npz with uint8 'images' N x C x H x W")


def _add_training(parser: argparse.ArgumentParser, budget, data_help: str) -> None:
    """The flags of commands that train on accel.train: data, optimizer, checkpoints; defaults from ``budget``."""
    parser.add_argument("--data", help=data_help)
    parser.add_argument("--teacher-samples", type=int, default=1000, help="--data teacher: samples drawn (1000)")
    parser.add_argument("--lr", type=float, default=budget.lr, help=f"peak learning rate (default {budget.lr:g})")
    parser.add_argument("--train-batch", type=int, default=budget.batch_size,
                        help=f"training batch per process (default {budget.batch_size})")
    parser.add_argument("--checkpoint-every", type=int, default=budget.checkpoint_every,
                        help=f"checkpoint every N steps into <out>.partial (default {budget.checkpoint_every})")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted run in <out>.partial")


def build_parser() -> argparse.ArgumentParser:
    from accel.cache.config import SCHEDULES
    from accel.distillation.config import CONSISTENCY, LOSSES, METHODS, PROGRESSIVE
    from accel.prune.config import CRITERIA, DISTILL_WEIGHT, FINETUNE

    parser = _Parser(prog="accel", description="Compress diffusion denoisers and measure what it costs.",
                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    ev = commands.add_parser("eval", help="FID, PSNR, latency and size of a model, as a table or JSON")
    _add_common(ev)
    _add_sampler(ev, n_default=2000)
    ev.add_argument("--out", help="folder for report.json, report.md and samples.png")
    ev.add_argument("--baseline", help="compare with this model, run with its own sampler (default for an exported "
                    ".onnx/.plan: the model it was exported from, with the exported model's sampler)")
    ev.add_argument("--baseline-sampler", help="the baseline's sampler, as --sampler (default: its own)")
    ev.add_argument("--baseline-steps", type=int, help="the baseline's sampling steps (default: its own)")
    ev.add_argument("--baseline-eta", type=float, help="the baseline's DDIM eta (default: its own)")
    _add_measuring(ev)

    sa = commands.add_parser("sample", help="draw samples to a .png grid or an .npz of uint8 images")
    _add_common(sa)
    _add_sampler(sa, n_default=64)
    sa.add_argument("--out", required=True, help="output file, .png (grid) or .npz (uint8 array 'images')")

    info = commands.add_parser("info", help="what a model is: class, shapes, parameters, MACs, size, scheduler")
    _add_common(info)

    qu = commands.add_parser("quantize", help="post-training quantization (Q-Diffusion recipe) + report")
    _add_common(qu)
    _add_sampler(qu, n_default=2000)
    qu.add_argument("--out", help="artifact folder (default: <model>-w<bits>a<act-bits>)")
    qu.add_argument("--bits", type=int, required=True, help="weight bits, 2-8")
    qu.add_argument("--act-bits", type=int, default=8, help="activation bits, 4-16 (default 8); 0: weight-only")
    qu.add_argument("--range", choices=("mse", "minmax", "percentile"), default="mse",
                    help="how quantization ranges are chosen (default mse)")
    qu.add_argument("--group-size", type=int, help="linear weights: one scale per group of input channels")
    qu.add_argument("--no-split", action="store_true", help="no split-shortcut quantization")
    qu.add_argument("--no-attention", action="store_true", help="leave the attention matmuls in float")
    qu.add_argument("--layer-bits", action="append", default=[], metavar="PATTERN=BITS",
                    help="weight bits for layers whose name matches PATTERN (fnmatch); repeatable")
    qu.add_argument("--skip", action="append", default=[], metavar="PATTERN", help="leave matching layers in float")
    qu.add_argument("--calib-policy", choices=("uniform", "normal", "last"), default="uniform",
                    help="uniform: every k-th sampler step (Q-Diffusion); normal: PTQ4DM; last: final step only")
    qu.add_argument("--calib-samples", type=int, default=64, help="sampler trajectories to calibrate on (64)")
    qu.add_argument("--calib-every", type=int, default=5, help="keep every k-th of the sampler's steps (5)")
    qu.add_argument("--calib", help="calibration set file to reuse or create (default: a cache under ~/.cache/accel)")
    qu.add_argument("--recon-iters", type=int, default=500, help="reconstruction iterations per block (500; 0: none)")
    qu.add_argument("--ablation", action="store_true", help="also measure the naive-to-full W4A8 ablation and W8A8")
    _add_measuring(qu)

    op = commands.add_parser("optimize", help="fused Triton GroupNorm/attention, fp16, channels-last + report")
    _add_common(op)
    _add_sampler(op, n_default=2000)
    op.add_argument("--out", help="artifact folder (default: <model>-fast)")
    op.add_argument("--dtype", choices=("auto", "fp16", "bf16", "fp32"), default="auto",
                    help="precision (default auto: fp16 on CUDA, fp32 on CPU)")
    op.add_argument("--backend", choices=("auto", "triton", "torch"), default="auto",
                    help="auto: Triton kernels on CUDA, PyTorch elsewhere; triton: always (CPU: TRITON_INTERPRET=1)")
    op.add_argument("--no-channels-last", action="store_true", help="keep NCHW activations")
    op.add_argument("--cuda-graph", action="store_true", help="replay each denoiser step as a CUDA graph")
    _add_measuring(op)

    ex = commands.add_parser("export", help="ONNX (Q/DQ for quantized layers) or TensorRT engine, checked")
    ex.add_argument("format", choices=("onnx", "trt"), help="onnx: a .onnx file; trt: a TensorRT .plan engine")
    _add_common(ex, runs=False)
    ex.add_argument("--out", help="output file (default: <model>.onnx / <model>.plan)")
    ex.add_argument("--opset", type=int, help="ONNX opset, 13-21 (default 19, as TensorRT 10 parses; 21 when 4-bit "
                    "linear layers go out as INT4)")
    ex.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32", help="inputs, weights and eps (default fp32)")
    ex.add_argument("--int8-grid", action="store_true",
                    help="write 4-bit linear weights on the INT8 grid (as convolutions are) instead of as INT4")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing --out")

    pr = commands.add_parser("prune", help="structured pruning (Diff-Pruning), fine-tuning + report")
    _add_common(pr)
    _add_sampler(pr, n_default=2000)
    pr.add_argument("--out", help="artifact folder (default: <model>-pruned)")
    pr.add_argument("--ratio", type=float, default=0.3, help="fraction of channels and heads removed (default 0.3)")
    pr.add_argument("--criterion", choices=CRITERIA, default="diff-pruning",
                    help="channel importance (default diff-pruning: Taylor over the informative timesteps)")
    pr.add_argument("--threshold", type=float, default=0.05,
                    help="diff-pruning: stop accumulating gradients once the loss < threshold x its max (0.05)")
    pr.add_argument("--round-to", type=int, default=8, help="kept widths are multiples of this (default 8)")
    pr.add_argument("--importance-batch", type=int, default=64, help="images per importance gradient pass (64)")
    pr.add_argument("--timestep-stride", type=int, default=10,
                    help="importance gradients at t = 0, stride, 2 x stride, ... (default 10)")
    _add_training(pr, FINETUNE, "fine-tuning images: an .npz of uint8 N x C x H x W, or 'teacher' (samples of the "
                  "original, distillation on its eps); default for digits: its training set")
    pr.add_argument("--distill-weight", type=float, default=DISTILL_WEIGHT,
                    help=f"fine-tuning on images: weight of the original's eps as a second target (default "
                    f"{DISTILL_WEIGHT:g}; 0: the DDPM loss alone, as Diff-Pruning)")
    pr.add_argument("--finetune-steps", type=int, default=FINETUNE.steps,
                    help=f"fine-tuning steps (default {FINETUNE.steps}; 0: none)")
    pr.add_argument("--ablation", action="store_true",
                    help="also measure every criterion at --ratio and --criterion at 0.2/0.3/0.5, same fine-tuning")
    _add_measuring(pr)

    di = commands.add_parser("distill", help="step distillation (progressive or consistency) to 1-64 steps + report")
    _add_common(di)
    di.add_argument("--out", help="artifact folder (default: <model>-<steps>step)")
    di.add_argument("--method", choices=METHODS, default="progressive",
                    help="progressive (halve the steps stage by stage) or consistency (LCM-style; default progressive)")
    di.add_argument("--steps", type=int, default=4, help="the student's sampling steps (default 4; progressive: a "
                    "power of two)")
    di.add_argument("--prediction", default="v_prediction", choices=("v_prediction", "epsilon", "sample"),
                    help="what the student's network outputs (default v_prediction: see accel/distillation/config.py)")
    di.add_argument("--teacher-steps", type=int, default=32,
                    help="progressive: the first stage's teacher DDIM steps, halved each stage (default 32)")
    di.add_argument("--solver-skip", type=int, default=20,
                    help="consistency: training timesteps the teacher's DDIM solver jumps (default 20, as LCM)")
    di.add_argument("--target-ema", type=float, default=0.95, help="consistency: target network EMA (default 0.95)")
    di.add_argument("--loss", choices=LOSSES, default="pseudo-huber", help="consistency: the distance (pseudo-huber)")
    _add_training(di, PROGRESSIVE, "training images: an .npz of uint8 N x C x H x W, or 'teacher' (the teacher's "
                  "own samples, drawn once: data-free); default for digits: its training set")
    di.add_argument("--train-steps", type=int, help=f"training steps, per stage for progressive (default "
                    f"{PROGRESSIVE.steps}), in all for consistency (default {CONSISTENCY.steps})")
    di.add_argument("--n", type=int, default=2000, help="samples for FID (default 2000)")
    di.add_argument("--batch-size", type=int, default=500, help="samples per denoiser call (default 500)")
    di.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    _add_measuring(di)

    ca = commands.add_parser("cache", help="training-free feature caching across steps (DeepCache) + report")
    _add_common(ca)
    _add_sampler(ca, n_default=2000)
    ca.add_argument("--out", help="artifact folder (default: <model>-cache<interval>)")
    ca.add_argument("--interval", type=int, default=3, help="one full step per N steps (default 3)")
    ca.add_argument("--branch", type=int, default=0, help="UNets: the skip level that stays live on cached steps, "
                    "0 the shallowest and cheapest (default 0)")
    ca.add_argument("--schedule", choices=SCHEDULES, default="quadratic",
                    help="UNets: full steps every N (uniform) or as many, crowded quadratically around --center "
                    "(default quadratic: measured best on digits, see accel/cache/config.py)")
    ca.add_argument("--center", type=float, default=0.0,
                    help="quadratic: where full steps crowd, as a fraction of the trajectory (default 0: the start)")
    _add_measuring(ca)

    co = commands.add_parser("compress", help="a recipe of stages (prune, distill, cache, quantize, optimize, "
                             "export) run in order, resumable, one report with a row per stage")
    _add_common(co)
    co.add_argument("--recipe", help="a built-in recipe (see --list-recipes) or a .toml / .json recipe file")
    co.add_argument("--list-recipes", action="store_true", help="the built-in recipes and what they measured")
    co.add_argument("--out", help="output folder (default: <model>-<recipe>)")
    co.add_argument("--resume", action="store_true",
                    help="continue the run in --out: reuse the stages whose settings and input are unchanged")
    co.add_argument("--n", type=int, default=2000, help="samples for FID, in every stage's report (default 2000)")
    co.add_argument("--batch-size", type=int, default=500, help="samples per denoiser call (default 500)")
    co.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    _add_measuring(co)

    tr = commands.add_parser("train-reference", help="retrain the built-in reference model or its FID classifier")
    tr.add_argument("--out", required=True, help="folder to write (a diffusers model folder)")
    tr.add_argument("--steps", type=int, default=None, help="training steps (default: as committed)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--classifier", action="store_true", help="train the digits FID classifier instead")
    tr.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.subcommands = commands.choices  # name -> parser: a recipe stage's keys are its command's flags
    return parser


def _device(name: str | None):
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AccelError(f"unknown --device '{name}'; use cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AccelError(f"--device {name} asked for, but this machine has no usable CUDA GPU")
    return device


def _sampling(args, prefix: str = "") -> dict:
    """The sampler flags given (``--baseline-...`` ones with ``prefix="baseline_"``), as changes to the model's
    own sampler."""
    given = {"name": getattr(args, prefix + "sampler"), "steps": getattr(args, prefix + "steps"),
             "eta": getattr(args, prefix + "eta")}
    return {key: value for key, value in given.items() if value is not None}


def _eval_config(args):
    """The evaluation settings every measuring command shares (sample count, FID inputs, latency batch)."""
    import accel

    return accel.EvalConfig(n=args.n, seed=args.seed, batch_size=args.batch_size, latency_batch=args.latency_batch,
                            inception_weights=args.inception_weights, fid_ref=args.fid_ref)


def _emit(args, payload: dict, human: str) -> None:
    from accel.report import to_json

    print(to_json(payload) if args.json else human, end="" if args.json else "\n")


def _emit_report(args, report, out=None) -> None:
    """The report as JSON (with the artifact's path) or as its markdown."""
    payload = {**report.to_dict(), **({"out": str(out)} if out else {})}
    _emit(args, payload, report.markdown() + (f"\nartifact written to {out}" if out else ""))


def cmd_eval(args) -> None:
    import accel
    from accel.core.files import atomic_dir, ensure_writable_dir
    from accel.core.processes import current_processes
    from accel.export.runtime import load_exported_from
    from accel.report import write_report

    if args.out:
        ensure_writable_dir(args.out, args.overwrite)
    processes = current_processes()  # several under accelerate launch: they share the sampling
    device = processes.own_device(_device(args.device))
    config = _eval_config(args)
    model = accel.load(args.model, device, _sampling(args))
    if args.baseline:
        baseline = accel.load(args.baseline, device, _sampling(args, "baseline_"))
    else:
        baseline = load_exported_from(model, device)
    evaluation = accel.evaluate(model, baseline, config, model_name=args.model, processes=processes)
    if not processes.is_main:
        return  # the main process writes and prints the report
    if args.out:
        with atomic_dir(args.out, args.overwrite) as staging:
            write_report(staging, evaluation.report, evaluation.images)
    _emit_report(args, evaluation.report)


def cmd_sample(args) -> None:
    import numpy as np

    import accel
    from accel.core.files import atomic_file, ensure_writable_file
    from accel.metrics.digits_cnn import to_uint8
    from accel.report import sample_grid

    out = ensure_writable_file(args.out, (".png", ".npz"), "a .png (grid) or .npz (uint8 array 'images') file",
                               args.overwrite)
    model = accel.load(args.model, _device(args.device), _sampling(args))
    samples = accel.sample(model, args.n, args.seed, batch_size=args.batch_size)
    images = to_uint8(samples.images)
    with atomic_file(out) as partial:
        if out.suffix == ".npz":
            np.savez_compressed(partial, images=images)
        else:
            sample_grid([images], columns=int(np.ceil(np.sqrt(len(images))))).save(partial)
    summary = {"out": str(out), "n": len(images), "shape": list(images.shape), "seed": args.seed,
               "sampler": {**model.sampling.to_dict(), "batch_size": args.batch_size},
               "calls_per_image": samples.calls_per_image, "seconds": samples.seconds,
               "seconds_per_image": samples.seconds_per_image}
    _emit(args, summary, f"wrote {len(images)} samples to {out} in {samples.seconds:.1f} s "
                         f"({samples.seconds_per_image * 1e3:.2f} ms per image, {model.sampling.describe()})")


def cmd_info(args) -> None:
    import accel
    from accel.metrics.size import count_macs, count_params, weights_bytes

    model = accel.load(args.model, _device(args.device))
    details = {"model": args.model, "class": type(model.module).__name__, "kind": model.kind,
               "sample_shape": list(model.sample_shape), "conditioning": model.cond_kind,
               "params": count_params(model), "macs_per_sample_step": count_macs(model),
               "size_bytes": weights_bytes(model), "sampler": model.sampling.to_dict(),
               "transforms": [t["name"] for t in model.transforms],
               "scheduler": {k: v for k, v in model.scheduler_config.items() if not k.startswith("_")},
               "notes": model.notes}
    human = "\n".join(f"{key:22} {value}" for key, value in details.items() if value not in (None, []))
    _emit(args, details, human)


def _layer_bits(items: list[str]) -> dict[str, int]:
    bits = {}
    for item in items:
        pattern, _, value = item.rpartition("=")
        if not pattern or not value.isdigit():
            raise AccelError(f"--layer-bits takes PATTERN=BITS, got '{item}'")
        bits[pattern] = int(value)
    return bits


def _quantize_configs(args):
    import accel

    config = accel.QuantConfig(
        w_bits=args.bits, a_bits=args.act_bits or None, w_range=args.range, a_range=args.range,
        group_size=args.group_size, split_shortcut=not args.no_split, quantize_attention=not args.no_attention,
        layer_bits=_layer_bits(args.layer_bits), skip=tuple(args.skip), recon_iters=args.recon_iters, seed=args.seed)
    calib = accel.CalibConfig(policy=args.calib_policy, samples=args.calib_samples, every=args.calib_every,
                              seed=args.seed)
    return config, calib


def cmd_quantize(args) -> None:
    import accel
    from accel.core.files import ensure_writable_dir
    from accel.quant.workflow import quantize_and_evaluate

    out = args.out or f"{Path(str(args.model)).name}-w{args.bits}a{args.act_bits or 16}"
    config, calib = _quantize_configs(args)
    eval_config = _eval_config(args)
    ensure_writable_dir(out, args.overwrite)
    result = quantize_and_evaluate(args.model, config, calib, eval_config, _device(args.device), args.calib,
                                   args.ablation, _sampling(args))
    accel.save(result.model, out, args.overwrite, result.evaluation)
    _emit_report(args, result.evaluation.report, out)


def _optimize_config(args):
    import accel

    return accel.OptimizeConfig(dtype=args.dtype, channels_last=not args.no_channels_last, backend=args.backend,
                                cuda_graph=args.cuda_graph)


def cmd_optimize(args) -> None:
    import accel
    from accel.core.files import ensure_writable_dir
    from accel.optimize.workflow import optimize_and_evaluate

    out = args.out or f"{Path(str(args.model)).name}-fast"
    config = _optimize_config(args)
    eval_config = _eval_config(args)
    ensure_writable_dir(out, args.overwrite)
    model, evaluation = optimize_and_evaluate(args.model, config, eval_config, _device(args.device), _sampling(args))
    accel.save(model, out, args.overwrite, evaluation)
    _emit_report(args, evaluation.report, out)


def _train_config(budget, steps: int, args):
    """``budget`` (a command's default TrainConfig) with the training flags given; the warm-up shrinks to fit."""
    from dataclasses import replace

    return replace(budget, steps=steps, lr=args.lr, batch_size=args.train_batch, seed=args.seed,
                   warmup_steps=min(budget.warmup_steps, max(steps - 1, 0)), checkpoint_every=args.checkpoint_every)


def _save_trained(args, result, out) -> None:
    """The artifact and report of a command that trains; None is another process of `accelerate launch`, which
    leaves writing and reporting to the main one."""
    import accel

    if result is not None:
        accel.save(result.model, out, args.overwrite, result.evaluation)
        _emit_report(args, result.evaluation.report, out)


def _prune_configs(args):
    import accel
    from accel.prune.config import FINETUNE

    config = accel.PruneConfig(ratio=args.ratio, criterion=args.criterion, threshold=args.threshold,
                               round_to=args.round_to, importance_batch=args.importance_batch,
                               timestep_stride=args.timestep_stride, seed=args.seed)
    if args.finetune_steps < 0:
        raise AccelError(f"--finetune-steps must be 0 (no fine-tuning) or more, got {args.finetune_steps}")
    return config, _train_config(FINETUNE, args.finetune_steps, args) if args.finetune_steps else None


def cmd_prune(args) -> None:
    from accel.core.files import ensure_writable_dir
    from accel.prune.workflow import prune_and_evaluate

    out = args.out or f"{Path(str(args.model)).name}-pruned"
    config, train_config = _prune_configs(args)
    eval_config = _eval_config(args)
    ensure_writable_dir(out, args.overwrite)
    result = prune_and_evaluate(args.model, config, train_config, eval_config, out, _device(args.device), args.data,
                                args.resume, _sampling(args), args.teacher_samples, args.distill_weight,
                                args.ablation)
    _save_trained(args, result, out)


def _distill_configs(args):
    import accel
    from accel.distillation.apply import default_training

    config = accel.DistillConfig(method=args.method, steps=args.steps, prediction_type=args.prediction,
                                 teacher_steps=args.teacher_steps, solver_skip=args.solver_skip,
                                 target_ema=args.target_ema, loss=args.loss, seed=args.seed)
    budget = default_training(args.method)
    return config, _train_config(budget, budget.steps if args.train_steps is None else args.train_steps, args)


def cmd_distill(args) -> None:
    from accel.core.files import ensure_writable_dir
    from accel.distillation.workflow import distill_and_evaluate

    out = args.out or f"{Path(str(args.model)).name}-{args.steps}step"
    config, train_config = _distill_configs(args)
    eval_config = _eval_config(args)
    ensure_writable_dir(out, args.overwrite)
    result = distill_and_evaluate(args.model, config, train_config, eval_config, out, _device(args.device), args.data,
                                  args.resume, args.teacher_samples)
    _save_trained(args, result, out)


def _cache_config(args):
    import accel

    return accel.CacheConfig(interval=args.interval, branch=args.branch, schedule=args.schedule, center=args.center)


def cmd_cache(args) -> None:
    import accel
    from accel.cache.workflow import cache_and_evaluate
    from accel.core.files import ensure_writable_dir

    out = args.out or f"{Path(str(args.model)).name}-cache{args.interval}"
    config = _cache_config(args)
    eval_config = _eval_config(args)
    ensure_writable_dir(out, args.overwrite)
    result = cache_and_evaluate(args.model, config, eval_config, _device(args.device), _sampling(args))
    accel.save(result.model, out, args.overwrite, result.evaluation)
    _emit_report(args, result.evaluation.report, out)


def _export_config(args):
    import accel

    return accel.ExportConfig(opset=args.opset, dtype=args.dtype, int8_grid=args.int8_grid)


def cmd_export(args) -> None:
    import accel

    out = args.out or f"{Path(str(args.model)).name}.{'onnx' if args.format == 'onnx' else 'plan'}"
    config = _export_config(args)
    model = accel.load(args.model, "cpu")
    if args.format == "onnx":
        from accel.export.onnx import export_onnx

        record = export_onnx(model, out, config, args.overwrite)
    else:
        from accel.export.trt import export_trt

        record = export_trt(model, out, config, args.overwrite)
    parity = record["parity"]
    human = (f"wrote {out} ({record['bytes'] / 1e6:.2f} MB, {record['dtype']} {record['form']} graph, opset "
             f"{record['opset']}, {record['qdq_layers']} Q/DQ layers, {record['int4_layers']} INT4) in "
             f"{record['export_s']:.1f} s\n"
             f"ONNX Runtime ({parity['provider']}) vs PyTorch on {parity['inputs']} random inputs: max abs "
             f"{parity['max_abs']:.2e}, max rel {parity['max_rel']:.2e} (tolerance {parity['tolerance']:g}): met")
    if "cached_graph" in record:
        cached = record["cached_graph"]
        human += (f"\ncached steps: {cached['out']}, fed by the full step's feature in ONNX Runtime: max rel "
                  f"{cached['parity']['max_rel']:.2e}: met")
    _emit(args, {**record, "out": str(out)}, human)


# set once for the whole chain by accel compress's own flags, or meaningless inside a chain
CHAIN_FLAGS = {"model", "out", "device", "seed", "json", "overwrite", "resume", "n", "batch-size", "latency-batch",
               "inception-weights", "fid-ref", "ablation", "help"}
STAGE_CONFIGS = {"prune": _prune_configs, "distill": _distill_configs, "cache": _cache_config,
                 "quantize": _quantize_configs, "optimize": _optimize_config, "export": _export_config}


def _stage_args(spec, where: str, chain: argparse.Namespace) -> argparse.Namespace:
    """The stage's command-line arguments, as if typed: its keys become its command's flags, the chain's
    evaluation flags are added, and its configs are built once here so a bad value is refused before any work."""
    import contextlib
    import io

    parser = build_parser().subcommands[spec.name]
    flags = {o[2:]: a for a in parser._actions for o in a.option_strings if o.startswith("--")}
    argv = _positional(spec, where)
    for key, value in spec.settings.items():
        if spec.name == "export" and key == "format":
            continue
        if key in CHAIN_FLAGS:
            raise AccelError(f"{where}: key '{key}' is not a stage setting (the chain sets it: accel compress "
                             f"--{key}, where it exists)")
        if key not in flags:
            known = sorted(set(flags) - CHAIN_FLAGS) + (["format"] if spec.name == "export" else [])
            raise AccelError(f"{where}: unknown key '{key}' ({spec.name} takes {', '.join(known)})")
        argv += _as_argv(key, value, flags[key], where)
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            args = parser.parse_args(argv)
    except SystemExit:
        message = errors.getvalue().strip().split(": error: ", 1)[-1].removesuffix(" (see --help)")
        raise AccelError(f"{where}: {message}")
    for name in ("device", "seed", "n", "batch_size", "latency_batch", "inception_weights", "fid_ref"):
        if hasattr(args, name):
            setattr(args, name, getattr(chain, name))
    try:
        STAGE_CONFIGS[spec.name](args)
    except ConfigError as error:
        raise AccelError(f"{where}: {_as_flag_error(error, args)}")
    except AccelError as error:
        raise AccelError(f"{where}: {error}")
    return args


def _positional(spec, where: str) -> list[str]:
    if spec.name != "export":
        return []
    if spec.settings.get("format") not in ("onnx", "trt"):
        raise AccelError(f"{where}: needs key 'format', onnx or trt (got {spec.settings.get('format')!r})")
    return [spec.settings["format"]]


def _as_argv(key: str, value, action: argparse.Action, where: str) -> list[str]:
    if action.nargs == 0:  # a switch (--no-split): true or false
        if not isinstance(value, bool):
            raise AccelError(f"{where}: key '{key}' is a switch: true or false, got {value!r}")
        return [f"--{key}"] if value else []
    repeatable = isinstance(action.default, list)  # --layer-bits, --skip: a list in a recipe
    values = value if isinstance(value, list) and repeatable else [value]
    if isinstance(value, list) and not repeatable or any(isinstance(v, bool) for v in values):
        raise AccelError(f"{where}: key '{key}' takes one value, got {value!r}")
    return [part for v in values for part in (f"--{key}", str(v))]


def _stage_runner(name: str, stage_args: argparse.Namespace):
    """Runs the stage's own command on the previous stage's model, its report on stderr."""
    import contextlib
    from copy import copy

    def run(source: str, output: Path, resume: bool) -> None:
        args = copy(stage_args)
        args.model, args.out, args.overwrite, args.json = source, str(output), True, False
        if hasattr(args, "resume"):
            args.resume = resume
        with contextlib.redirect_stdout(sys.stderr):
            COMMANDS[name](args)
    return run


def _stages(recipe, args) -> list:
    from accel.compress import Stage

    stages = []
    for spec in recipe.stages:
        where = f"recipe '{recipe.name}' {spec.label}"
        stage_args = _stage_args(spec, where, args)
        if spec.name == "export" and stage_args.format == "trt":
            from accel.export.trt import tensorrt_module

            try:
                tensorrt_module()  # before any stage runs, not after the training ones
            except AccelError as error:
                raise AccelError(f"{where}: {error}")
        output = f"model.{'onnx' if stage_args.format == 'onnx' else 'plan'}" if spec.name == "export" else None
        trains = spec.name == "distill" or spec.name == "prune" and stage_args.finetune_steps > 0
        stages.append(Stage(spec, spec.name, _stage_runner(spec.name, stage_args), output, everywhere=trains))
    return stages


def cmd_compress(args) -> None:
    from accel.compress import builtin_recipes, compress, load_recipe
    from accel.core.processes import current_processes

    if args.list_recipes:
        recipes = [load_recipe(name) for name in builtin_recipes()]
        _emit(args, {"recipes": [{**r.to_dict(), "measured": r.measured} for r in recipes]},
              "\n\n".join(_recipe_text(r) for r in recipes))
        return
    if not args.recipe:
        raise AccelError("pass --recipe NAME or FILE (--list-recipes shows the built-in ones)")
    recipe = load_recipe(args.recipe)
    device = current_processes().own_device(_device(args.device))  # several under accelerate launch
    args.device = str(device)  # what every stage runs on
    stages = _stages(recipe, args)
    out = args.out or f"{Path(str(args.model)).name}-{recipe.name}"
    result = compress(args.model, recipe, stages, out, _eval_config(args), device, args.resume, args.overwrite)
    if not result.is_main:
        return  # the main process prints
    payload = {**result.report.to_dict(), "out": str(out), "final": str(result.final)}
    _emit(args, payload, result.report.markdown() + f"\nfinal model: {result.final}; report: {Path(out) / 'report.md'}")


def _recipe_text(recipe) -> str:
    steps = " -> ".join(f"{s.name}" + (f" ({', '.join(f'{k}={v}' for k, v in s.settings.items())})"
                                        if s.settings else "") for s in recipe.stages)
    return f"{recipe.name}: {recipe.description}\n  {steps}\n  measured: {recipe.measured or 'not yet'}"


def cmd_train_reference(args) -> None:
    if args.classifier:
        from accel.metrics.digits_cnn import train_digits_cnn

        epochs = {} if args.steps is None else {"epochs": args.steps}
        record = train_digits_cnn(args.out, seed=args.seed, overwrite=args.overwrite, **epochs)
    else:
        from dataclasses import replace

        from accel.models.reference import REFERENCE_TRAINING, train_reference

        config = replace(REFERENCE_TRAINING, seed=args.seed, **({} if args.steps is None else {"steps": args.steps}))
        record = train_reference(args.out, config, overwrite=args.overwrite)
    print(json.dumps(record, indent=2))


COMMANDS = {"eval": cmd_eval, "sample": cmd_sample, "info": cmd_info, "quantize": cmd_quantize, "prune": cmd_prune,
            "distill": cmd_distill, "cache": cmd_cache, "compress": cmd_compress,
            "optimize": cmd_optimize, "export": cmd_export, "train-reference": cmd_train_reference}


# (config class, field) -> the flag that sets it, where the flag is not the field's name
FLAGS = {("QuantConfig", "w_bits"): "--bits", ("QuantConfig", "a_bits"): "--act-bits",
         ("QuantConfig", "w_range"): "--range", ("QuantConfig", "a_range"): "--range",
         ("CalibConfig", "policy"): "--calib-policy", ("CalibConfig", "samples"): "--calib-samples",
         ("CalibConfig", "every"): "--calib-every", ("SamplingSpec", "name"): "--sampler",
         ("TrainConfig", "steps"): ("--finetune-steps", "--train-steps"), ("TrainConfig", "batch_size"): "--train-batch",
         ("DistillConfig", "prediction_type"): "--prediction"}


def _as_flag_error(error: ConfigError, args: argparse.Namespace) -> str:
    """A config error in the words of the command line: the flag that set the field, where this command has one."""
    flags = FLAGS.get((error.owner, error.field), "--" + error.field.replace("_", "-"))
    for flag in (flags,) if isinstance(flags, str) else flags:
        if hasattr(args, flag[2:].replace("-", "_")):
            return f"{flag} {error.problem}"
    return str(error)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # accel never downloads
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except ConfigError as error:
        print(f"accel: error: {_as_flag_error(error, args)}", file=sys.stderr)
        return 2
    except AccelError as error:
        print(f"accel: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command == "compress":
            print("accel: interrupted; the finished stages and the last checkpoint are kept: --resume continues",
                  file=sys.stderr)
            return 130
        resumable = (" (the last checkpoint in <out>.partial is kept: --resume continues)"
                     if args.command in ("prune", "distill") else "")
        print(f"accel: interrupted; nothing was written{resumable}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
