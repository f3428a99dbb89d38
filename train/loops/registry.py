"""The trainers that ``impasto train`` knows, each declared once.

A :class:`Trainer` names a training run, says what it is for, gives its config (a dataclass
whose user-facing fields are made with :func:`impasto.train.options.option`) and the function
that runs it. The command line (``impasto train NAME --OPTION ...``), its help and its checks
all derive from that declaration, so a new model family (SPADE, SketchyGAN, ...) becomes
trainable by defining one ``Trainer`` and calling :func:`register_trainer`, the way
torchvision's models register themselves.

Built-in trainers live in their own modules and register themselves on import; this module
imports them lazily, on the first :func:`get_trainer` or :func:`list_trainers`, so that it
never imports a training loop (or torch models) before one is asked for, and a loop module
can import :class:`Trainer` from here without an import cycle.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from impasto.train.options import options_of

__all__ = ["Trainer", "UnknownTrainerError", "get_trainer", "list_trainers", "register_trainer"]

TRAINER_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")  # it becomes a CLI subcommand

# modules that register the built-in trainers when imported
_BUILTIN_MODULES = ("impasto.train.loops.renderer", "impasto.train.loops.semantic", "impasto.train.loops.segmenter",
                    "impasto.train.loops.sketch", "impasto.train.loops.colorize", "impasto.train.loops.warp",
                    "impasto.train.loops.strokes")


class UnknownTrainerError(KeyError):
    """A trainer name that nothing registered (the message lists the known ones)."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Trainer:
    """One kind of training run, as ``impasto train`` sees it."""

    name: str  # "renderer": the subcommand
    help: str  # one line for `impasto train --help`
    description: str  # for `impasto train NAME --help`
    config: type  # a dataclass; its user-facing fields are made with impasto.train.options.option(...)
    run: Callable[[Any, bool], dict]  # (config instance, show_progress) -> summary dict for printing / --json
    summary: Callable[[dict], str] | None = None  # the one line a person reads after a run (else key: value lines)


_TRAINERS: dict[str, Trainer] = {}
_loaded = False


def register_trainer(trainer: Trainer) -> Trainer:
    """Make ``trainer`` available under its name; returns it (so a module can write ``TRAINER = register_trainer(...)``).

    The declaration is checked now rather than when a user runs it: a plain subcommand name,
    a dataclass config whose options have supported types, and no second trainer of that name.
    """
    if not TRAINER_NAME.match(trainer.name):
        raise ValueError(f"trainer name {trainer.name!r}: use lower-case letters, digits and '-', starting with a letter")
    if not (isinstance(trainer.config, type) and dataclasses.is_dataclass(trainer.config)):
        raise TypeError(f"trainer '{trainer.name}': config must be a dataclass, not {trainer.config!r}")
    options_of(trainer.config)  # raises TypeError for an option of an unsupported type
    known = _TRAINERS.get(trainer.name)
    if known is not None and known != trainer and _qualname(known) != _qualname(trainer):
        raise ValueError(f"a trainer called '{trainer.name}' is already registered ({_qualname(known)})")
    _TRAINERS[trainer.name] = trainer  # the same declaration again (a module reloaded) replaces it
    return trainer


def _qualname(trainer: Trainer) -> str:
    return f"{trainer.run.__module__}.{trainer.run.__qualname__}"


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    _loaded = True


def list_trainers() -> list[Trainer]:
    """Every registered trainer, sorted by name."""
    _load_builtins()
    return [_TRAINERS[name] for name in sorted(_TRAINERS)]


def get_trainer(name: str) -> Trainer:
    """The trainer called ``name``; :class:`UnknownTrainerError` lists the known ones otherwise."""
    _load_builtins()
    try:
        return _TRAINERS[name]
    except KeyError:
        raise UnknownTrainerError(f"unknown trainer '{name}': choose one of {', '.join(sorted(_TRAINERS))}") from None
