"""Stages: one step of a compression chain as a library object, and what each transforming command
runs.

A stage is a transform with what it needs around it: the quantize stage records a calibration set
along the model's sampler, then quantizes; the prune stage prunes, then fine-tunes on its training
data; the export stage writes a file. Its settings are the fields of its configs, one config per
role (``quant``: a QuantConfig, ``calib``: a CalibConfig). A setting is named by a key: a field's
own name where its role is open (every field a key), or a spelling in the stage's table (``bits`` is
``quant.w_bits``, as ``accel quantize --bits``; ``act-bits = 0`` is weight-only). Dashes and
underscores are the same. Recipes, Python (``Stage.settings``) and the command line, whose flags are
the keys, read one table, so one check refuses a bad setting everywhere, and a config's own
``validate`` decides what is in range.

Capabilities register their stage here (``register``); ``accel.compress`` and the CLI find it by
name.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from accel.core.config import Config
from accel.core.errors import AccelError, ConfigError
from accel.core.sampling_spec import SamplerChange

# A role's default: a config, or one made from the configs of the roles before it (a training budget
# that depends on the method)
Default = Config | Callable[[dict[str, Config]], Config]
SEED = "seed"  # set for every config at once (Stage.settings' own argument), never a key


@dataclass(frozen=True)
class Key:
    """A setting under the name users type: ``convert(value)`` goes to ``field`` of the config in
    ``role``, and to the fields in ``also``. A ``switch`` takes true or false (a flag without a
    value), ``many`` a list (a repeatable flag)."""

    role: str
    field: str
    convert: Callable[[Any], Any] | None = None
    also: tuple[str, ...] = ()
    switch: bool = False
    many: bool = False


# the sampler a stage's model runs with (``accel quantize --steps 20``), in every stage that has a
# "sampling" role
SAMPLER_KEYS = {
    "sampler": Key("sampling", "name"),
    "steps": Key("sampling", "steps"),
    "eta": Key("sampling", "eta"),
    "guidance": Key("sampling", "guidance"),
    "labels": Key("sampling", "labels"),
}


@dataclass
class Context:
    """What a stage needs besides its model and settings."""

    work_dir: Path | None = None  # a training stage's checkpoints (None: a temporary folder)
    resume: bool = False  # continue the interrupted run whose checkpoint is in work_dir
    out: Path | None = None  # where a stage that writes a file (export) writes it
    overwrite: bool = False
    # training images given directly (N x C x H x W in [-1, 1]) instead of a data setting
    images: Any = None
    batch_size: int = 500  # sampling batch (the teacher samples of data-free training)
    progress: bool = True
    # measuring at named points inside a stage: the prune stage calls it with "pruned" before
    # fine-tuning
    observe: Callable[[str, Any], None] = lambda point, model: None


@dataclass
class StageResult:
    model: Any  # the transformed Denoiser (a file-writing stage: the written file, loaded)
    record: dict  # what the stage did: the transform's record in model.transforms (accel.json)
    file: Path | None = None  # a file-writing stage's file


@dataclass(frozen=True)
class Settings:
    """A stage's checked configs by role: ``settings["quant"]`` is the quantize stage's
    QuantConfig."""

    stage: str
    configs: Mapping[str, Config]

    def __getitem__(self, role: str) -> Config:
        return self.configs[role]

    def to_dict(self) -> dict:
        return {role: config.to_dict() for role, config in self.configs.items()}


@dataclass(frozen=True)
class Stage:
    name: str
    roles: Mapping[str, Default]  # role -> its default, built in this order
    run: Callable[[Any, Settings, Context], StageResult]  # transforms the model in place
    # the spellings (and every key of a closed role)
    keys: Mapping[str, Key] = field(default_factory=dict)
    # roles whose every field (but the seed) is a key under its own name
    open_roles: tuple[str, ...] = ()
    # trains: every process of a launch takes part
    trains: Callable[[Settings], bool] = lambda settings: False
    # a file-writing stage: the file's name inside a chain's stage folder
    output_file: Callable[[Settings], str] | None = None
    # what must hold before any work (TensorRT installed)
    check: Callable[[Settings], None] | None = None

    def defaults(self) -> dict[str, Config]:
        built: dict[str, Config] = {}
        for role, default in self.roles.items():
            built[role] = default(built) if callable(default) else default
        return built

    def all_keys(self) -> dict[str, Key]:
        """Every key: the spellings first, then the fields of open roles under their own names."""
        keys = dict(self.keys)
        defaults = self.defaults()
        for role in self.open_roles:
            hints = typing.get_type_hints(type(defaults[role]))
            for item in fields(defaults[role]):
                if item.name != SEED:
                    switch, many = (
                        hints[item.name] is bool,
                        typing.get_origin(hints[item.name]) is tuple,
                    )
                    keys.setdefault(
                        item.name.replace("_", "-"), Key(role, item.name, switch=switch, many=many)
                    )
        return keys

    def settings(
        self, given: Mapping[str, Any] | None = None, *, seed: int = 0, **keys
    ) -> Settings:
        """The stage's configs with ``given`` (and ``keys``) set on its defaults, checked; ``seed``
        seeds every config that has one."""
        changes: dict[str, dict] = {role: {} for role in self.roles}
        known = self.all_keys()
        for name, value in _normalised({**(given or {}), **keys}, self.name).items():
            key = known.get(name)
            if key is None:
                raise AccelError(
                    f"unknown key '{name}' ({self.name} takes {', '.join(sorted(known))})"
                )
            converted = self._converted(name, key, value)
            for target in (key.field, *key.also):
                if target in changes[key.role]:
                    raise ConfigError(
                        self.name, name, f"sets {key.role}.{target}, which another key sets too"
                    )
                changes[key.role][target] = converted
        built: dict[str, Config] = {}
        for role, default in self.roles.items():
            base = default(built) if callable(default) else default
            seeded = {SEED: seed} if any(item.name == SEED for item in fields(base)) else {}
            built[role] = type(base).from_dict({**base.to_dict(), **changes[role], **seeded})
        settings = Settings(self.name, built)
        if self.check is not None:
            self.check(settings)
        return settings

    def key_for(self, owner: str, field_name: str) -> str | None:
        """The key that sets ``field_name`` of ``owner`` (a config class name, or this stage's own
        name)."""
        if owner == self.name:
            return field_name
        classes = {role: type(config).__name__ for role, config in self.defaults().items()}
        for name, key in self.all_keys().items():
            if classes[key.role] == owner and field_name in (key.field, *key.also):
                return name
        return None

    def _converted(self, name: str, key: Key, value):
        if key.switch and not isinstance(value, bool):
            raise ConfigError(self.name, name, f"is a switch: true or false, got {value!r}")
        if key.many:
            value = list(value) if isinstance(value, (list, tuple)) else [value]
        elif isinstance(value, (list, tuple)):
            raise ConfigError(self.name, name, f"takes one value, got {value!r}")
        return key.convert(value) if key.convert is not None else value


def _normalised(given: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """Keys with dashes (``finetune_steps`` is ``finetune-steps``); one key given twice is
    refused."""
    normalised: dict[str, Any] = {}
    for name, value in given.items():
        key = str(name).replace("_", "-")
        if key in normalised:
            raise ConfigError(stage, key, "is given twice (with dashes and with underscores)")
        normalised[key] = value
    return normalised


def change_sampler(model, settings: Settings) -> None:
    """Give ``model`` the sampler its stage's ``sampling`` role asks for (``--steps 20``: the same
    sampler, 20 steps)."""
    change: SamplerChange = settings["sampling"]
    model.sampling = change.applied_to(model.sampling)


_STAGES: dict[str, Stage] = {}


def register(stage: Stage) -> Stage:
    if stage.name in _STAGES:
        raise ValueError(f"a stage named '{stage.name}' is already registered")
    _STAGES[stage.name] = stage
    return stage


def get(name: str) -> Stage:
    if name not in _STAGES:
        raise AccelError(f"'{name}' is not a stage accel knows (it has {', '.join(names())})")
    return _STAGES[name]


def names() -> tuple[str, ...]:
    """The registered stages, in the chain's usual order (prune, distill, cache, quantize, optimize,
    export)."""
    return tuple(_STAGES)
