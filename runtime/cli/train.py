"""``impasto train FAMILY``: one subcommand per registered trainer, generated from its declaration.

Each trainer in :mod:`impasto.train.loops.registry` names its config dataclass; its
:func:`~impasto.train.options.option` fields become the flags (see :mod:`.flags`) and are
checked by :func:`~impasto.train.options.read_options`, so a new model family is trainable
from the command line without CLI code. Options named like a setting (``device``, ``threads``)
take the setting (``IMPASTO_DEVICE``, impasto.toml) when their flag is not given. The summary
is the trainer's own line, or JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from impasto.runtime.cli import flags
from impasto.train.options import options_of, read_options


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``impasto train`` and ``impasto train FAMILY`` for every registered trainer."""
    from impasto.train.loops.registry import list_trainers

    trainers = list_trainers()
    t = sub.add_parser("train", help=f"train models ({', '.join(tr.name for tr in trainers)})",
                       description="Train impasto's models: one subcommand per model family.")
    tsub = t.add_subparsers(dest="family", metavar="FAMILY", required=True)
    for trainer in trainers:
        p = tsub.add_parser(trainer.name, help=trainer.help, description=trainer.description, allow_abbrev=False)
        flags.add_option_flags(p, options_of(trainer.config), f"{trainer.name} options")
        p.add_argument("--json", action="store_true", help="no progress bar; print the final summary as JSON")
        p.set_defaults(func=run_training, trainer=trainer.name)


def run_training(args: argparse.Namespace) -> int:
    """Check the flags against the trainer's config, train, print its summary."""
    from impasto.train.loops.registry import get_trainer

    trainer = get_trainer(args.trainer)
    specs = options_of(trainer.config)
    values = flags.given_values(specs, args)
    values.update(_from_settings(specs, values))
    config = read_options(trainer.config, values, label=flags.flag_labels(specs))
    if not args.json and not sys.stderr.isatty():  # a log or a pipe: the loops' periodic progress lines, not silence
        logging.getLogger("impasto.train").setLevel(logging.INFO)
    result = trainer.run(config, not args.json)
    if result.get("rank", 0):  # under torchrun the main process (rank 0) speaks for the run
        return 0
    if args.json:
        print(json.dumps(result, indent=1))
    elif trainer.summary is not None:
        print(trainer.summary(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0


def _from_settings(specs, given: dict) -> dict:
    """Values for options not given on the command line that impasto's settings hold (flags > env > TOML)."""
    from dataclasses import fields

    from impasto.runtime.config import Settings, load_settings

    names = {f.name for f in fields(Settings)} & {s.name for s in specs} - set(given)
    if not names:
        return {}
    settings, defaults = load_settings(), Settings()
    return {n: getattr(settings, n) for n in names if getattr(settings, n) != getattr(defaults, n)}
