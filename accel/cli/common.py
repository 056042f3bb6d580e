"""What every command shares: the flags for the model, the sampler and the evaluation (their
defaults read from the configs), the device, and printing a result as a table or JSON."""

from __future__ import annotations

import argparse
import typing
from collections.abc import Callable
from dataclasses import dataclass

from accel.core.config import choices_of
from accel.core.errors import AccelError
from accel.core.stages import Stage

INTERRUPTED = "nothing was written"


@dataclass(frozen=True)
class Command:
    """One ``accel`` subcommand: its flags, what it runs, and what an interrupted run leaves
    behind."""

    name: str
    help: str
    add_flags: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]
    stage: str | None = None  # a stage's command: its errors name the stage's keys as flags
    interrupted: str = INTERRUPTED


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, as for every other bad input
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def add_model_flags(parser: argparse.ArgumentParser, runs: bool = True) -> None:
    parser.add_argument(
        "--model",
        default="digits",
        help="diffusers folder, accel artifact, exported file, or a built-in model: 'digits' "
        "(default) or 'digits-dit'",
    )
    # commands that run the model (export traces on the CPU with fixed inputs: neither applies)
    if runs:
        parser.add_argument(
            "--device",
            default=None,
            help="cpu, cuda, cuda:N (default: cuda if available, else cpu)",
        )
        parser.add_argument(
            "--seed", type=int, default=0, help="seed for noise and sampling (default 0)"
        )
        parser.add_argument(
            "--prompts",
            metavar="FILE",
            help="text models: one prompt per line, encoded by the pipeline's text encoder, or a "
            ".safetensors file with 'text_states' (prompts x tokens x width) and optionally "
            "'null_text_states' (the empty prompt's, which guidance needs); the conditioning for "
            "calibration, training and evaluation (default: the artifact's own, else zeros)",
        )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def add_sampler_flags(parser: argparse.ArgumentParser, prefix: str = "", whose: str = "") -> None:
    """--sampler, --steps, --eta (or --baseline-sampler ...): changes to the model's own sampler."""
    parser.add_argument(
        f"--{prefix}sampler",
        help=f"{whose}sampler: ddim, ddpm, dpm++ (DPM-Solver++ 2M) or a "
        "diffusers scheduler class name (default: the model's own, DDIM for a model accel did not "
        "distill)",
    )
    parser.add_argument(
        f"--{prefix}steps",
        type=int,
        help=f"{whose}sampling steps (default: the model's own, 50 for DDIM)",
    )
    parser.add_argument(
        f"--{prefix}eta", type=float, help=f"{whose}DDIM eta (default 0: deterministic)"
    )
    parser.add_argument(
        f"--{prefix}guidance",
        type=float,
        help=f"{whose}classifier-free guidance scale, 1 for none (default: the model's own; "
        "class-conditional models with a null class)",
    )
    parser.add_argument(
        f"--{prefix}labels",
        type=_labels,
        metavar="C[,C...]",
        help=f"{whose}classes to sample, cycled over the samples (default: every class in turn)",
    )


def _labels(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(label) for label in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of class indices")


def add_eval_flags(parser: argparse.ArgumentParser, n: int | None = None) -> None:
    """The evaluation's flags: sample count, batches, FID inputs; defaults from EvalConfig."""
    from accel.evaluate import EvalConfig

    defaults = EvalConfig()
    parser.add_argument(
        "--n",
        type=int,
        default=n or defaults.n,
        help=f"samples for FID (default {n or defaults.n})",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help=f"samples per denoiser call (default {defaults.batch_size})",
    )
    parser.add_argument(
        "--latency-batch",
        type=int,
        default=defaults.latency_batch,
        help=f"batch size for per-step latency (default {defaults.latency_batch})",
    )
    parser.add_argument(
        "--inception-weights", help="local pt_inception-2015-12-05-6726825d.pth for Inception FID"
    )
    parser.add_argument(
        "--fid-ref", help="real images for Inception FID: .npz with uint8 'images' N x C x H x W"
    )


def add_out_flags(parser: argparse.ArgumentParser, out_help: str, required: bool = False) -> None:
    parser.add_argument("--out", required=required, help=out_help)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def add_stage_flag(
    parser: argparse.ArgumentParser, stage: Stage, key: str, help: str, metavar: str | None = None
) -> None:
    """``--key`` for one of ``stage``'s keys: its type, choices and default read from the config
    field it sets (``{default}`` in ``help`` shows the default). Not given, the stage's default
    applies."""
    spec = stage.all_keys()[key]
    config = stage.defaults()[spec.role]
    default = getattr(config, spec.field)
    text = help.format(default=default)
    if spec.switch:
        parser.add_argument(f"--{key}", action="store_true", default=None, help=text)
    elif spec.many:
        parser.add_argument(f"--{key}", action="append", default=None, metavar=metavar, help=text)
    else:
        parser.add_argument(
            f"--{key}",
            type=_value_type(type(config), spec.field),
            choices=choices_of(type(config), spec.field),
            default=None,
            metavar=metavar,
            help=text,
        )


def _value_type(config_class, field: str):
    """int, float or str: what the field holds (``int | None`` is int)."""
    hint = typing.get_type_hints(config_class)[field]
    options = [arg for arg in typing.get_args(hint) if arg is not type(None)] or [hint]
    return options[0] if options[0] in (int, float) else str


def stage_given(args: argparse.Namespace, stage: Stage) -> dict:
    """The stage's keys given as flags (a flag left out keeps the stage's default)."""
    return {
        key: getattr(args, key.replace("-", "_"))
        for key in stage.all_keys()
        if getattr(args, key.replace("-", "_"), None) is not None
    }


def device(name: str | None):
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(name)
    except RuntimeError:
        raise AccelError(f"unknown --device '{name}'; use cpu, cuda or cuda:N")
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise AccelError(f"--device {name} asked for, but this machine has no usable CUDA GPU")
    return chosen


def sampler_changes(args: argparse.Namespace, prefix: str = "") -> dict:
    """The sampler flags given (``--baseline-...`` ones with ``prefix="baseline_"``), as changes to
    the model's own sampler."""
    given = {
        "name": getattr(args, prefix + "sampler"),
        "steps": getattr(args, prefix + "steps"),
        "eta": getattr(args, prefix + "eta"),
        "guidance": getattr(args, prefix + "guidance"),
        "labels": getattr(args, prefix + "labels"),
    }
    return {key: value for key, value in given.items() if value is not None}


def eval_config(args: argparse.Namespace):
    """The evaluation settings every measuring command shares."""
    from accel.evaluate import EvalConfig

    return EvalConfig(
        n=args.n,
        seed=args.seed,
        batch_size=args.batch_size,
        latency_batch=args.latency_batch,
        inception_weights=args.inception_weights,
        fid_ref=args.fid_ref,
    )


def emit(args: argparse.Namespace, payload: dict, human: str) -> None:
    from accel.report import to_json

    print(to_json(payload) if args.json else human, end="" if args.json else "\n")


def emit_report(args: argparse.Namespace, report, out=None) -> None:
    """The report as JSON (with the artifact's path) or as its markdown."""
    payload = {**report.to_dict(), **({"out": str(out)} if out else {})}
    emit(args, payload, report.to_markdown() + (f"\nartifact written to {out}" if out else ""))
