"""Recipes: an ordered list of stages, from a TOML or JSON file, a Python dict, or the built-in
ones.

    description = "prune 30%, distill to 4 steps, INT8 weights, ONNX"
    [[stage]]
    name = "prune"
    ratio = 0.3
    [[stage]]
    name = "export"
    format = "onnx"

From Python the same recipe is ``{"stages": [{"prune": {"ratio": 0.3}}, {"export": {"format":
"onnx"}}]}``. A stage's keys are its settings (accel.core.stages: a config's field or the command's
flag, ``finetune-steps`` and ``finetune_steps`` alike). This module checks the recipe's shape; the
stages' own settings check their keys and values (accel.compress.workflow, before any stage runs).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from accel.core import stages
from accel.core.errors import AccelError

BUILTIN_DIR = Path(__file__).parent / "recipes"
# a file's top-level keys; "measured" is a free-text note a user's recipe may carry
TOP_LEVEL = {"description", "measured", "stage", "stages"}
Scalar = (str, int, float, bool)


@dataclass(frozen=True)
class StageSpec:
    number: int  # 1-based position in the recipe
    name: str  # a registered stage
    settings: dict  # key (with dashes) -> value, as the recipe gives it

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
    stages: tuple[StageSpec, ...]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "stages": [{"name": s.name, **s.settings} for s in self.stages],
        }


def builtin_recipes() -> dict[str, Path]:
    return {path.stem: path for path in sorted(BUILTIN_DIR.glob("*.toml"))}


def as_recipe(
    recipe: str | Path | Mapping | Recipe, name: str = "recipe", kind: str | None = None
) -> Recipe:
    """A built-in recipe's name (``kind``'s variant where one exists), a .toml / .json file, a dict
    (``name`` names it), or a Recipe as it is."""
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, Mapping):
        return from_dict(recipe, name, f"recipe '{name}'")
    return load_recipe(str(recipe), kind)


def load_recipe(name_or_path: str, kind: str | None = None) -> Recipe:
    """A built-in recipe by name, or a .toml / .json recipe file. A model ``kind`` (a Denoiser's
    ``kind``) with its own variant of the built-in recipe gets that: ``fast`` on a DiT runs
    ``dit-fast`` (its distillation takes the guidance weight as input)."""
    builtin = builtin_recipes()
    if f"{kind}-{name_or_path}" in builtin:
        name_or_path = f"{kind}-{name_or_path}"
    if name_or_path in builtin:
        return from_dict(
            _read(builtin[name_or_path]), name_or_path, f"recipe {builtin[name_or_path]}"
        )
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise AccelError(
            f"recipe '{name_or_path}' is neither a built-in "
            f"recipe ({', '.join(builtin)}) nor a file"
        )
    return from_dict(_read(path), path.stem, f"recipe {path}")


def from_dict(data: Mapping, name: str, where: str) -> Recipe:
    """A recipe from its file's form (``stage``: a list of tables with a ``name``) or Python's
    (``stages``: a list of ``{name: settings}``)."""
    unknown = sorted(set(data) - TOP_LEVEL)
    if unknown:
        raise AccelError(
            f"{where}: unknown key '{unknown[0]}' (a recipe has {', '.join(sorted(TOP_LEVEL))})"
        )
    if "stage" in data and "stages" in data:
        raise AccelError(
            f"{where}: give its stages once, as 'stage' "
            "(a file's tables) or 'stages' (Python's list)"
        )
    tables = data.get("stage") if "stage" in data else _named_tables(data.get("stages"), where)
    if (
        not isinstance(tables, list)
        or not tables
        or not all(isinstance(t, Mapping) for t in tables)
    ):
        raise AccelError(
            f"{where}: needs at least one [[stage]] table (Python: a list 'stages' of "
            "{name: settings})"
        )
    return Recipe(
        name,
        str(data.get("description", "")),
        tuple(_stage(number, table, where) for number, table in enumerate(tables, 1)),
    )


def _named_tables(stages, where: str) -> list:
    """``[{"prune": {"ratio": 0.3}}, ...]`` as the file form's
    ``[{"name": "prune", "ratio": 0.3}, ...]``."""
    if not isinstance(stages, list):
        return stages
    tables = []
    for number, entry in enumerate(stages, 1):
        if (
            not isinstance(entry, Mapping)
            or len(entry) != 1
            or not isinstance(next(iter(entry.values())), Mapping)
        ):
            raise AccelError(f"{where}: stage {number} must be {{name: settings}}, got {entry!r}")
        ((stage_name, settings),) = entry.items()
        tables.append({"name": stage_name, **settings})
    return tables


def _read(path: Path) -> dict:
    text = path.read_bytes()
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        elif path.suffix == ".toml":
            data = _toml().loads(text.decode())
        else:
            raise AccelError(f"recipe {path}: use a .toml or .json file")
    # tomllib.TOMLDecodeError and JSONDecodeError are ValueErrors
    except (
        ValueError,
        UnicodeDecodeError,
    ) as error:
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


def _stage(number: int, table: Mapping, where: str) -> StageSpec:
    name = table.get("name")
    if name not in stages.names():
        raise AccelError(
            f"{where}: stage {number} has name {name!r}; stages are {', '.join(stages.names())}"
        )
    settings = {}
    for key, value in table.items():
        if key == "name":
            continue
        if not (
            isinstance(value, Scalar)
            or isinstance(value, list)
            and all(isinstance(v, Scalar) for v in value)
        ):
            raise AccelError(
                f"{where}: stage {number} ({name}) key '{key}' "
                "must be a number, string, boolean or list of them"
            )
        flag = key.replace("_", "-")
        if flag in settings:
            raise AccelError(f"{where}: stage {number} ({name}) gives '{flag}' twice")
        settings[flag] = value
    return StageSpec(number, name, settings)
