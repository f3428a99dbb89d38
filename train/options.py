"""Typed parameter sets: one declaration of each option (default, range, choices, help).

An op's options and a trainer's config are dataclasses whose user-facing fields are made
with :func:`option`. Everything that shows or checks them derives from that one declaration:
the CLI flags, the wire mapping, Capabilities (the add-ons' forms), batch keys, validation.
Fields made with plain ``dataclasses.field`` or a bare default are internal (device, weights
paths, tuning constants) and are never exposed.

    @dataclass
    class TrainConfig:
        steps: int = option(20_000, "optimiser steps", min=1)
        arch: str = option("dual", "architecture", choices=("dual", "unet"))

:func:`read_options` turns user values (from argparse, TOML, JSON or protobuf) into the
dataclass, raising :class:`OptionError` with a message that names the field as the caller
spells it (``--steps`` on the command line, ``options.steps`` on the wire).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, get_type_hints

T = TypeVar("T")

_KEY = "impasto.option"
TYPES = {int: "int", float: "float", str: "string", bool: "bool"}


class OptionError(ValueError):
    """A value that an option does not accept; the message names the field and the limit."""


@dataclass(frozen=True)
class OptionSpec:
    """One user-facing option, as declared by :func:`option` (``type`` is filled from the annotation)."""

    name: str
    default: Any
    help: str
    type: type = str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | Callable[[], Iterable[str]] | None = None
    flag: str | None = None  # the CLI flag, when it is not --name-with-dashes
    shortcut: tuple[str, Any, str] | None = None  # (flag, value, help): a CLI flag that sets this option to value
    or_image: str | None = None  # a value naming an existing file fills this image slot instead (CLI)

    @property
    def choice_list(self) -> tuple[str, ...]:
        if self.choices is None:
            return ()
        return tuple(self.choices() if callable(self.choices) else self.choices)

    @property
    def type_name(self) -> str:
        return TYPES[self.type]

    def cli_flag(self) -> str:
        if self.flag:
            return self.flag
        if self.type is bool and self.default:
            return "--no-" + self.name.replace("_", "-")
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any, label: str) -> Any:
        """``value`` converted to this option's type and checked; :class:`OptionError` names ``label``."""
        value = _convert(value, self.type, label)
        if isinstance(value, float) and not math.isfinite(value):
            raise OptionError(f"{label} must be a finite number, got {value}")
        choices = self.choice_list
        if choices and value not in choices:
            raise OptionError(f"{label} '{value}' is not one of {', '.join(choices)}")
        if self.type in (int, float) and (self.min is not None or self.max is not None):
            lo, hi = self.min, self.max
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise OptionError(f"{label} {_range_text(lo, hi)}, got {value:g}")
        return value


def _range_text(lo: float | None, hi: float | None) -> str:
    if hi is None:
        return f"must be at least {lo:g}"
    if lo is None:
        return f"must be at most {hi:g}"
    return f"must be between {lo:g} and {hi:g}"


def _convert(value: Any, kind: type, label: str) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise OptionError(f"{label} must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool):
            raise OptionError(f"{label} must be a whole number, got {value!r}")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(value) if isinstance(value, (int, str)) else _fail()
        except (TypeError, ValueError):
            raise OptionError(f"{label} must be a whole number, got {value!r}") from None
    if kind is float:
        if isinstance(value, bool):
            raise OptionError(f"{label} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise OptionError(f"{label} must be a number, got {value!r}") from None
    if not isinstance(value, str):
        raise OptionError(f"{label} must be text, got {value!r}")
    return value


def _fail():
    raise ValueError


def option(default: Any, help: str, *, min: float | None = None, max: float | None = None,
           choices: Iterable[str] | Callable[[], Iterable[str]] | None = None, flag: str | None = None,
           shortcut: tuple[str, Any, str] | None = None, or_image: str | None = None) -> Any:
    """A dataclass field that users set: its default, help, range or choices, in one place."""
    spec = dict(help=help, min=min, max=max, choices=choices if callable(choices) or choices is None else tuple(choices),
                flag=flag, shortcut=shortcut, or_image=or_image)
    return dataclasses.field(default=default, metadata={_KEY: spec})


def options_of(cls: type) -> list[OptionSpec]:
    """The user-facing options of a dataclass, in declaration order."""
    hints = get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(_KEY)
        if meta is None:
            continue
        kind = hints[f.name]
        if kind not in TYPES:
            raise TypeError(f"{cls.__name__}.{f.name}: an option is int, float, str or bool, not {kind}")
        specs.append(OptionSpec(name=f.name, default=f.default, type=kind, **meta))
    return specs


def read_options(cls: type[T], values: Mapping[str, Any], *, label: Callable[[str], str] = lambda n: n,
                 internal: Mapping[str, Any] | None = None) -> T:
    """``cls`` built from user ``values`` (unknown names are an error), each checked by its spec.

    ``label`` spells a field for messages (``lambda n: f"options.{n}"`` on the wire);
    ``internal`` sets fields users never see (device, weights).
    """
    specs = {s.name: s for s in options_of(cls)}
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise OptionError(f"{label(unknown[0])} is not an option here (options: {', '.join(specs)})")
    checked = {name: specs[name].check(v, label(name)) for name, v in values.items() if v is not None}
    return cls(**checked, **(internal or {}))


def option_values(obj: Any) -> dict[str, Any]:
    """The user-facing option values of a dataclass instance (for keys and reports)."""
    return {s.name: getattr(obj, s.name) for s in options_of(type(obj))}
