"""``accel train-reference``: retrain the built-in model, or its FID classifier, from scratch."""

from __future__ import annotations

import argparse
import json

from accel.cli.common import Command, add_out_flags
from accel.models.reference import REFERENCES


def _flags(parser: argparse.ArgumentParser) -> None:
    add_out_flags(parser, "folder to write (a diffusers model folder)", required=True)
    parser.add_argument(
        "--steps", type=int, default=None, help="training steps (default: as committed)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument(
        "--model",
        choices=list(REFERENCES),
        default="digits",
        help="which reference model to train (default digits)",
    )
    parser.add_argument(
        "--classifier", action="store_true", help="train the digits FID classifier instead"
    )


def run(args: argparse.Namespace) -> None:
    if args.classifier:
        from accel.metrics.digits_cnn import train_digits_cnn

        epochs = {} if args.steps is None else {"epochs": args.steps}
        record = train_digits_cnn(args.out, seed=args.seed, overwrite=args.overwrite, **epochs)
    else:
        from dataclasses import replace

        from accel.models.reference import train_reference

        config = replace(
            REFERENCES[args.model].training,
            seed=args.seed,
            **({} if args.steps is None else {"steps": args.steps}),
        )
        record = train_reference(args.out, config, overwrite=args.overwrite, model=args.model)
    print(json.dumps(record, indent=2))


COMMANDS = [
    Command(
        "train-reference",
        "retrain the built-in reference model or its FID classifier",
        _flags,
        run,
        interrupted="nothing was written (the last checkpoint "
        "in <out>.partial is kept: run again to continue)",
    )
]
