"""The commands that look at a model without changing it: eval, sample, info."""

from __future__ import annotations

import argparse

from accel.cli.common import (
    Command,
    add_eval_flags,
    add_model_flags,
    add_out_flags,
    add_sampler_flags,
    device,
    emit,
    emit_report,
    eval_config,
    sampler_changes,
)


def _eval_flags(parser: argparse.ArgumentParser) -> None:
    add_model_flags(parser)
    add_sampler_flags(parser)
    add_eval_flags(parser)
    add_out_flags(parser, "folder for report.json, report.md and samples.png")
    parser.add_argument(
        "--baseline",
        help="compare with this model, run with its own sampler (default for an "
        "exported .onnx/.plan: the model it was exported from, with the exported model's sampler)",
    )
    add_sampler_flags(parser, "baseline-", "the baseline's ")


def run_eval(args: argparse.Namespace) -> None:
    import accel
    from accel.core.files import atomic_dir, ensure_writable_dir
    from accel.core.processes import current_processes
    from accel.export.runtime import load_exported_from
    from accel.report import write_report

    if args.out:
        ensure_writable_dir(args.out, args.overwrite)
    processes = current_processes()  # several under accelerate launch: they share the sampling
    on = processes.own_device(device(args.device))
    model = accel.load(args.model, on, sampler_changes(args), args.prompts)
    if args.baseline:
        baseline = accel.load(args.baseline, on, sampler_changes(args, "baseline_"), args.prompts)
    else:
        baseline = load_exported_from(model, on)
    evaluation = accel.evaluate(
        model, baseline, eval_config(args), model_name=args.model, processes=processes
    )
    if not processes.is_main:
        return  # the main process writes and prints the report
    if args.out:
        with atomic_dir(args.out, args.overwrite) as staging:
            write_report(staging, evaluation.report, evaluation.images)
    emit_report(args, evaluation.report)


GRID = 64  # accel sample's default: an 8 x 8 grid


def _sample_flags(parser: argparse.ArgumentParser) -> None:
    from accel.sampling import DEFAULT_BATCH

    add_model_flags(parser)
    add_sampler_flags(parser)
    parser.add_argument("--n", type=int, default=GRID, help=f"number of samples (default {GRID})")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH,
        help=f"samples per denoiser call (default {DEFAULT_BATCH})",
    )
    add_out_flags(
        parser,
        "output file, .png (grid) or .npz (uint8 array 'images', and 'labels' for class models)",
        required=True,
    )


def run_sample(args: argparse.Namespace) -> None:
    import numpy as np

    import accel
    from accel.core.files import atomic_file, ensure_writable_file
    from accel.metrics.digits_cnn import to_uint8
    from accel.report import sample_grid

    out = ensure_writable_file(
        args.out,
        (".png", ".npz"),
        "a .png (grid) or .npz (uint8 array 'images') file",
        args.overwrite,
    )
    model = accel.load(args.model, device(args.device), sampler_changes(args), args.prompts)
    samples = accel.sample(model, args.n, args.seed, batch_size=args.batch_size)
    images = to_uint8(samples.images)
    with atomic_file(out) as partial:
        if out.suffix == ".npz":
            labels = {} if samples.labels is None else {"labels": samples.labels.numpy()}
            np.savez_compressed(partial, images=images, **labels)
        else:
            sample_grid([images], columns=int(np.ceil(np.sqrt(len(images))))).save(partial)
    summary = {
        "out": str(out),
        "n": len(images),
        "shape": list(images.shape),
        "seed": args.seed,
        "sampler": {**model.sampling.to_dict(), "batch_size": args.batch_size},
        "calls_per_image": samples.calls_per_image,
        "seconds": samples.seconds,
        "seconds_per_image": samples.seconds_per_image,
    }
    emit(
        args,
        summary,
        f"wrote {len(images)} samples to {out} in {samples.seconds:.1f} s "
        f"({samples.seconds_per_image * 1e3:.2f} ms per image, {model.sampling.describe()})",
    )


def run_info(args: argparse.Namespace) -> None:
    import accel
    from accel.metrics.size import count_macs, count_params, weights_bytes

    model = accel.load(args.model, device(args.device), prompts=args.prompts)
    details = {
        "model": args.model,
        "class": type(model.module).__name__,
        "kind": model.kind,
        "sample_shape": list(model.sample_shape),
        "conditioning": model.cond_kind,
        "classes": model.classes,
        "text_states": None if model.text_states is None else list(model.text_states.shape),
        # the empty prompt's states: a text model's unconditional half under guidance
        "null_text_states": model.null_text_states is not None,
        "null_class": model.null_class,
        # a guidance-distilled student: w is its input, one call per step
        "guidance_input": list(model.guidance_range) if model.guidance_range else None,
        "params": count_params(model),
        "macs_per_sample_step": count_macs(model),
        "size_bytes": weights_bytes(model),
        "sampler": model.sampling.to_dict(),
        "transforms": [t["name"] for t in model.transforms],
        "scheduler": {k: v for k, v in model.scheduler_config.items() if not k.startswith("_")},
        "notes": model.notes,
    }
    human = "\n".join(
        f"{key:22} {value}" for key, value in details.items() if value not in (None, [])
    )
    emit(args, details, human)


COMMANDS = [
    Command(
        "eval", "FID, PSNR, latency and size of a model, as a table or JSON", _eval_flags, run_eval
    ),
    Command(
        "sample",
        "draw samples to a .png grid or an .npz of uint8 images",
        _sample_flags,
        run_sample,
    ),
    Command(
        "info",
        "what a model is: class, shapes, parameters, MACs, size, scheduler",
        add_model_flags,
        run_info,
    ),
]
