"""``accel compress``: a recipe's stages run in order, then one report with a row per stage
(accel.compress)."""

from __future__ import annotations

import argparse
from pathlib import Path

from accel.cli.common import (
    Command,
    add_eval_flags,
    add_model_flags,
    add_out_flags,
    add_sampler_flags,
    device,
    emit,
    eval_config,
    sampler_changes,
)
from accel.core.errors import AccelError


def _flags(parser: argparse.ArgumentParser) -> None:
    add_model_flags(parser)
    parser.add_argument(
        "--recipe", help="a built-in recipe (see --list-recipes) or a .toml / .json recipe file"
    )
    parser.add_argument(
        "--list-recipes", action="store_true", help="the built-in recipes and their stages"
    )
    add_out_flags(parser, "output folder (default: <model>-<recipe>)")
    # the sampler the chain starts from, and every stage is measured with (a guided DiT: --guidance)
    add_sampler_flags(parser, whose="the original's ")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out: reuse the stages whose settings and input are unchanged",
    )
    add_eval_flags(parser)


def run(args: argparse.Namespace) -> None:
    import accel
    from accel.compress import builtin_recipes, compress, load_recipe
    from accel.core.processes import current_processes

    if args.list_recipes:
        recipes = [load_recipe(name) for name in builtin_recipes()]
        emit(
            args,
            {"recipes": [r.to_dict() for r in recipes]},
            "\n\n".join(recipe_text(r) for r in recipes),
        )
        return
    if not args.recipe:
        raise AccelError("pass --recipe NAME or FILE (--list-recipes shows the built-in ones)")
    on = current_processes().own_device(device(args.device))  # several under accelerate launch
    original = accel.load(args.model, on, sampler_changes(args), args.prompts)
    recipe = load_recipe(args.recipe, original.kind)  # `fast` on a DiT: dit-fast
    out = args.out or f"{Path(str(args.model)).name}-{Path(args.recipe).stem}"
    result = compress(
        original,
        recipe,
        out,
        eval_config=eval_config(args),
        device=on,
        resume=args.resume,
        overwrite=args.overwrite,
    )
    if not result.is_main:
        return  # the main process prints
    payload = {**result.report.to_dict(), "out": str(out), "final": str(result.final)}
    emit(
        args,
        payload,
        result.report.to_markdown() + f"\nfinal model: {result.final}; report: "
        f"{Path(out) / 'report.md'}",
    )


def recipe_text(recipe) -> str:
    steps = " -> ".join(
        s.name
        + (f" ({', '.join(f'{k}={v}' for k, v in s.settings.items())})" if s.settings else "")
        for s in recipe.stages
    )
    return f"{recipe.name}: {recipe.description}\n  {steps}"


COMMANDS = [
    Command(
        "compress",
        "a recipe of stages (prune, distill, cache, quantize, optimize, export) run in "
        "order, resumable, one report with a row per stage",
        _flags,
        run,
        interrupted="the finished stages and the last checkpoint are kept: --resume continues",
    )
]
