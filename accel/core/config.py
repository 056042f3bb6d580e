"""``Config``: the base of every setting object (QuantConfig, OptimizeConfig, SamplingSpec, ...).

A config is frozen (a preset cannot be changed by accident: ``dataclasses.replace`` makes a new
one), checked on construction (field types first, then the subclass's ``validate``), versioned, and
round-trips through JSON: ``to_dict`` writes its fields and ``version``; ``from_dict`` refuses
unknown keys and wrong types, and upgrades what an older version wrote. Every error is a ConfigError
that names the field.

A field with a fixed set of values declares them once, with ``one_of``: the check here, the command
line's ``choices`` and the documentation all read them from the field.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from accel.core.errors import ConfigError


class FrozenDict(dict):
    """A dict that refuses changes: a mapping field of a frozen config (presets share theirs)."""

    def _refuse(self, *args, **kwargs):
        raise TypeError(
            "this mapping belongs to a frozen config; make a new config with dataclasses.replace"
        )

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self):  # copy and pickle through the constructor, not item by item
        return FrozenDict, (dict(self),)


def one_of(default, choices: tuple) -> Any:
    """A dataclass field whose value must be one of ``choices`` (or None, where the annotation
    allows it)."""
    return field(default=default, metadata={"choices": tuple(choices)})


def choices_of(config_class, name: str) -> tuple | None:
    """The values a field declared with ``one_of`` takes (None for any other field)."""
    return next((f.metadata.get("choices") for f in fields(config_class) if f.name == name), None)


@dataclass(frozen=True)
class Config:
    VERSION: ClassVar[int] = 1

    def __post_init__(self):
        hints = _type_hints(type(self))
        for item in fields(self):
            value = _coerce(getattr(self, item.name), hints[item.name], self, item.name)
            object.__setattr__(self, item.name, value)
            choices = item.metadata.get("choices")
            if choices and value is not None and value not in choices:
                raise self.invalid(
                    item.name, f"must be one of {', '.join(map(str, choices))}, got {value!r}"
                )
        self.validate()

    def validate(self) -> None:
        """Check values beyond their types; raise ``self.invalid(field, problem)``."""

    def invalid(self, field: str, problem: str) -> ConfigError:
        return ConfigError(type(self).__name__, field, problem)

    def to_dict(self) -> dict:
        return {
            "version": self.VERSION,
            **{f.name: _plain(getattr(self, f.name)) for f in fields(self)},
        }

    @classmethod
    def from_dict(cls, data: Any):
        """The config ``to_dict`` wrote, from this or an older version; unknown keys and bad types
        refused."""
        name = cls.__name__
        if not isinstance(data, Mapping):
            raise ConfigError(name, "", f"must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        version = data.pop("version", 1)  # configs written before versioning are version 1
        if type(version) is not int or not 1 <= version <= cls.VERSION:
            raise ConfigError(
                name, "version", f"must be 1 to {cls.VERSION} (this accel), got {version!r}"
            )
        data = cls.upgrade(data, version)
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(name, unknown[0], "is not a setting this version of accel knows")
        return cls(**data)

    @classmethod
    def upgrade(cls, data: dict, version: int) -> dict:
        """``data`` as an older ``version`` wrote it, in this version's fields (override when
        VERSION grows)."""
        return data


@functools.cache
def _type_hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _coerce(value, hint, config: Config, field: str):
    """``value`` checked against the annotation ``hint``; lists become tuples and dicts
    FrozenDicts."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [arg for arg in args if arg is not type(None)]
        return _coerce(value, inner[0], config, field) if len(inner) == 1 else value
    if hint is Any:
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise config.invalid(field, f"must be a list, got {value!r}")
        return tuple(_coerce(item, args[0], config, field) for item in value)
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise config.invalid(field, f"must be a mapping, got {value!r}")
        return FrozenDict(
            {
                _coerce(k, args[0], config, field): _coerce(v, args[1], config, field)
                for k, v in value.items()
            }
        )
    if hint is float and type(value) is int:
        return float(value)
    if type(value) is not hint:  # exact: True is not an int here, 4.0 not an int
        raise config.invalid(field, f"must be {_describe(hint)}, got {value!r}")
    return value


def _plain(value):
    """JSON-ready: tuples as lists, FrozenDicts as dicts."""
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    return value
