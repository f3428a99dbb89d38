"""Command-line flags generated from :func:`impasto.train.options.option` declarations.

An op's options and a trainer's config both become flags here, one per declared option,
so that a new option needs no CLI code. The flags do no checking of their own (no argparse
``type=`` or ``choices=``): they collect the raw strings, and the caller passes them to
:func:`impasto.train.options.read_options`, the same check the server and batch apply.
That way ``--lr 1e30`` is refused here exactly as ``options.lr = 1e30`` is on the wire,
with the same message naming the field as the user spelled it.

Every flag's argparse default is None, meaning "not given: the dataclass default".
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from typing import Any

from impasto.train.options import OptionSpec

OPTION = "option:"  # argparse dest prefixes: options cannot clash with images, outputs or CLI flags
SHORTCUT = "shortcut:"


def default_text(spec: OptionSpec) -> str:
    """The declared default as a user reads it: ``0.002``, ``oil``, ``on``/``off``; '' for an empty string."""
    value = spec.default
    if spec.type is bool:
        return "on" if value else "off"
    if spec.type is float:
        return f"{value:g}"
    return str(value)


def _number(value: float, kind: type) -> str:
    return str(int(value)) if kind is int else f"{value:g}"


def _range_text(spec: OptionSpec) -> str:
    lo, hi = spec.min, spec.max
    if lo is not None and hi is not None:
        return f"{_number(lo, spec.type)} to {_number(hi, spec.type)}"
    if lo is not None:
        return f"at least {_number(lo, spec.type)}"
    if hi is not None:
        return f"at most {_number(hi, spec.type)}"
    return ""


def help_text(spec: OptionSpec) -> str:
    """The option's help with its range and default, as ``--help`` shows it."""
    if spec.type is bool and spec.default:
        text = f"turn off: {spec.help}"
    else:
        text = spec.help
    notes = [n for n in (_range_text(spec), default_text(spec) and f"default: {default_text(spec)}") if n]
    if notes:
        text += f" ({'; '.join(notes)})"
    return text.replace("%", "%%")  # argparse %-formats help strings


def metavar(spec: OptionSpec) -> str:
    """``{a,b,c}`` for an option with choices (so ``--help`` lists them), else its name upper-cased."""
    choices = spec.choice_list
    if choices:
        return "{" + ",".join(choices) + "}"
    return spec.name.upper()


def add_option_flags(parser: argparse.ArgumentParser, specs: Iterable[OptionSpec], title: str = "settings") -> None:
    """One flag per option (``spec.cli_flag()``), plus each declared shortcut flag.

    A bool option is a switch: ``--name`` turns on one that is off by default, ``--no-name``
    turns off one that is on. A shortcut ``(flag, value, help)`` sets the option to
    ``value``; the option's own flag wins when both are given.
    """
    group = parser.add_argument_group(title)
    for spec in specs:
        flag = spec.cli_flag()
        dest = OPTION + spec.name
        if spec.type is bool:
            group.add_argument(flag, dest=dest, action="store_false" if spec.default else "store_true", default=None,
                               help=help_text(spec))
        else:
            group.add_argument(flag, dest=dest, default=None, metavar=metavar(spec), help=help_text(spec))
        if spec.shortcut is not None:
            short, value, text = spec.shortcut
            group.add_argument(short, dest=SHORTCUT + spec.name, action="store_const", const=value, default=None,
                               help=f"{text} (the same as {flag} {value}; {flag} wins if both are given)".replace("%", "%%"))


def given_values(specs: Iterable[OptionSpec], args: argparse.Namespace) -> dict[str, Any]:
    """The options the user gave, by name, as raw values (strings, or True/False for switches).

    An option set only through its shortcut flag takes the shortcut's value.
    """
    values = {}
    for spec in specs:
        value = getattr(args, OPTION + spec.name, None)
        if value is None:
            value = getattr(args, SHORTCUT + spec.name, None)
        if value is not None:
            values[spec.name] = value
    return values


def flag_labels(specs: Iterable[OptionSpec]) -> Callable[[str], str]:
    """Field name -> the flag that sets it, for messages (``lr`` -> ``--lr``, ``balance`` -> ``--no-balance``)."""
    flags = {spec.name: spec.cli_flag() for spec in specs}
    return lambda name: flags.get(name) or "--" + name.replace("_", "-")
