"""Recipes: an ordered list of stages, read from a TOML or JSON file or taken from the built-in ones.

    description = "prune 30%, distill to 4 steps, INT8 weights, ONNX"
    [[stage]]
    name = "prune"
    ratio = 0.3
    [[stage]]
    name = "export"
    format = "onnx"

A stage's keys are its command's flags (``accel prune --ratio 0.3`` is ``ratio = 0.3``; ``finetune-steps`` and
``finetune_steps`` are the same key). This module checks the file's shape; which keys a stage takes is the
command line's business (one schema: the flags), checked before any stage runs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from accel.core.errors import AccelError

STAGES = ("prune", "distill", "cache", "quantize", "optimize", "export")
BUILTIN_DIR = Path(__file__).parent / "recipes"
TOP_LEVEL = {"description", "measured", "stage"}
Scalar = (str, int, float, bool)


@dataclass(frozen=True)
class StageSpec:
    number: int      # 1-based position in the recipe
    name: str        # one of STAGES
    settings: dict   # key (flag name, dashes) -> value, as the recipe gives it

    @property
    def label(self) -> str:
        return f"stage {self.number} ({self.name})"

    @property
    def folder(self) -> str:
        return f"{self.number:02d}-{self.name}"


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    measured: str                 # what the recipe measured on digits (built-in recipes)
    stages: tuple[StageSpec, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description,
                "stages": [{"name": s.name, **s.settings} for s in self.stages]}


def builtin_recipes() -> dict[str, Path]:
    return {path.stem: path for path in sorted(BUILTIN_DIR.glob("*.toml"))}


def load_recipe(name_or_path: str) -> Recipe:
    """A built-in recipe by name, or a .toml / .json recipe file."""
    builtin = builtin_recipes()
    if name_or_path in builtin:
        return _parsed(builtin[name_or_path], name_or_path)
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise AccelError(f"recipe '{name_or_path}' is neither a built-in recipe ({', '.join(builtin)}) nor a file")
    return _parsed(path, path.stem)


def _parsed(path: Path, name: str) -> Recipe:
    data = _read(path)
    unknown = sorted(set(data) - TOP_LEVEL)
    if unknown:
        raise AccelError(f"recipe {path}: unknown key '{unknown[0]}' (a recipe has {', '.join(sorted(TOP_LEVEL))})")
    stages = data.get("stage")
    if not isinstance(stages, list) or not stages or not all(isinstance(s, dict) for s in stages):
        raise AccelError(f"recipe {path}: needs at least one [[stage]] table (JSON: a list 'stage' of objects)")
    return Recipe(name, str(data.get("description", "")), str(data.get("measured", "")),
                  tuple(_stage(number, table, path) for number, table in enumerate(stages, 1)))


def _read(path: Path) -> dict:
    text = path.read_bytes()
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        elif path.suffix == ".toml":
            data = _toml().loads(text.decode())
        else:
            raise AccelError(f"recipe {path}: use a .toml or .json file")
    except (ValueError, UnicodeDecodeError) as error:  # tomllib.TOMLDecodeError and JSONDecodeError are ValueErrors
        raise AccelError(f"recipe {path} is not valid {path.suffix[1:].upper()}: {error}")
    if not isinstance(data, dict):
        raise AccelError(f"recipe {path}: the top level must be a table (JSON: an object)")
    return data


def _toml():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the same parser as the tomli package
        import tomli as tomllib
    return tomllib


def _stage(number: int, table: dict, path: Path) -> StageSpec:
    name = table.get("name")
    if name not in STAGES:
        raise AccelError(f"recipe {path}: stage {number} has name {name!r}; stages are {', '.join(STAGES)}")
    settings = {}
    for key, value in table.items():
        if key == "name":
            continue
        if not (isinstance(value, Scalar) or isinstance(value, list) and all(isinstance(v, Scalar) for v in value)):
            raise AccelError(f"recipe {path}: stage {number} ({name}) key '{key}' must be a number, string, boolean "
                             "or list of them")
        flag = key.replace("_", "-")
        if flag in settings:
            raise AccelError(f"recipe {path}: stage {number} ({name}) gives '{flag}' twice")
        settings[flag] = value
    return StageSpec(number, name, settings)
