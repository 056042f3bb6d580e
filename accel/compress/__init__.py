"""The whole chain in one command: a recipe of stages (prune, distill, cache, quantize, optimize, export), each
written as an artifact under OUT/stages/, resumable, then one report with a row per stage against the original."""
from accel.compress.chain import Stage
from accel.compress.recipe import STAGES, Recipe, StageSpec, builtin_recipes, load_recipe
from accel.compress.workflow import CompressResult, compress

__all__ = ["STAGES", "CompressResult", "Recipe", "Stage", "StageSpec", "builtin_recipes", "compress", "load_recipe"]
