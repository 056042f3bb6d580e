"""The ``accel`` command line: a module per command group (evaluate, transform, export, compress,
reference), each turning its flags into the library's settings and calls. Errors print one line and
exit with status 2."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys

from accel.cli import compress, evaluate, export, reference, transform
from accel.cli.common import Command, Parser
from accel.core import stages
from accel.core.errors import AccelError, ConfigError

COMMANDS: dict[str, Command] = {
    command.name: command
    for module in (evaluate, transform, export, compress, reference)
    for command in module.COMMANDS
}

EXAMPLES = """examples:
  accel eval                                         FID, latency and size of the built-in "digits"
  accel eval --model path/to/unet --out rep          a diffusers folder, report in rep/
  accel eval --steps 20 --baseline digits            20 DDIM steps against the original's own 50
  accel sample --n 64 --out grid.png                 64 samples as a grid (or an .npz)
  accel info --model path/to/unet                    class, shapes, parameters, MACs, size
  accel quantize --bits 4                            W4A8: artifact digits-w4a8/ + report
  accel quantize --bits 8 --act-bits 8               W8A8: calibration only, no reconstruction
  accel prune --ratio 0.3                            prune + fine-tune: digits-pruned/ + report
  accel prune --data teacher --out p30               data-free: fine-tuned on its own samples
  accel distill --steps 4                            progressive distillation to 4 steps
  accel distill --method consistency --steps 1       one-step consistency student (LCM-style)
  accel cache --interval 3                           DeepCache: a full step every 3rd on average
  accel optimize --model path/to/unet                fused Triton kernels, fp16, channels-last
  accel export onnx --model q4 --out q4.onnx         ONNX (Q/DQ for quantized layers), checked
  accel eval --model q4.onnx                         ONNX Runtime beside the model it came from
  accel compress --recipe fast                       prune, distill, INT8, ONNX: one report
  accel train-reference --out my-digits              retrain the built-in model (fixed seed)

Nothing is downloaded: models come from local folders, accel artifacts, the local Hugging Face
cache, or the built-in "digits"."""

# (owner, field) -> the flag that sets it, for settings outside a stage's keys
FLAGS = {
    ("SamplingSpec", "name"): "sampler",
    ("SamplerChange", "name"): "sampler",
    ("sample", "count"): "n",
    ("output", "out"): "out",
}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="accel",
        description="Compress diffusion denoisers and measure what it costs.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subcommands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS.values():
        command.add_flags(subcommands.add_parser(command.name, help=command.help))
    return parser


def in_flag_words(error: AccelError, args: argparse.Namespace) -> str:
    """The error in the words of the command line: the flag that set a bad field, and `names` as
    flags where this command has them."""
    text = str(error)
    if isinstance(error, ConfigError):
        stage = COMMANDS[args.command].stage
        key = (stages.get(stage).key_for(error.owner, error.field) if stage else None) or FLAGS.get(
            (error.owner, error.field), error.field.replace("_", "-")
        )
        if _has_flag(args, key):
            text = f"--{key} {error.problem}"
    return re.sub(
        r"`([a-z_]+)`",
        lambda m: f"--{_dashed(m[1])}" if _has_flag(args, _dashed(m[1])) else m[1],
        text,
    )


def _dashed(name: str) -> str:
    return name.replace("_", "-")


def _has_flag(args: argparse.Namespace, key: str) -> bool:
    return bool(key) and hasattr(args, key.replace("-", "_"))


# Loggers that warn on every run where torchao is installed (diffusers imports it while loading a
# model): torchao 0.18 on a CPU about its CUDA extensions and the torch pytree registrations it
# makes, diffusers about torchao classes that moved. None of it concerns accel's run, and it would
# break the one-line error a user (and a CI script) reads.
IMPORT_NOISE = (
    "torchao",
    "torch.utils._pytree",
    "diffusers.quantizers.torchao.torchao_quantizer",
)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # accel never downloads
    for name in IMPORT_NOISE:
        logging.getLogger(name).setLevel(logging.ERROR)
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command].run(args)
    except AccelError as error:
        print(f"accel: error: {in_flag_words(error, args)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"accel: interrupted; {COMMANDS[args.command].interrupted}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
