"""The whole chain as one call: a recipe of stages (prune, distill, cache, quantize, optimize,
export), each written as an artifact under OUT/stages/, resumable, then one report with a row per
stage against the original (``accel.compress``, ``accel compress``)."""

from accel.compress.recipe import Recipe, StageSpec, as_recipe, builtin_recipes, load_recipe
from accel.compress.workflow import CompressResult, compress

__all__ = [
    "CompressResult",
    "Recipe",
    "StageSpec",
    "as_recipe",
    "builtin_recipes",
    "compress",
    "load_recipe",
]
