"""The ``impasto`` command line: one subcommand per job, ``impasto SUBCOMMAND --help`` for each.

The op subcommands (``impasto OP``, ``impasto client OP``) and ``impasto train FAMILY`` are
generated from their one definition (``impasto.runtime.ops``, ``impasto.train.loops.registry``),
so the command line accepts and refuses exactly what the server and batch do, with the
same messages. The other commands are written by hand:

- :mod:`.ops`: ``impasto OP`` run here, and the flag builder ``impasto client OP`` shares;
- :mod:`.remote`: ``impasto client OP`` against a running server;
- :mod:`.outputs`: output paths checked before any work, results written atomically;
- :mod:`.strokes`: ``demo``, ``brushes``, ``render`` (the brush engine and stroke files);
- :mod:`.train`: ``impasto train FAMILY``;
- :mod:`.admin`: ``export``, ``build-engine``, ``models``, ``infer``, ``serve``, ``batch``;
- :mod:`.labels`: ``labels`` (a semantic model's label table); :mod:`.data`: ``data`` (training-data recipes).

Errors: :func:`main` is the one place that turns an exception into an exit code. A user
error (anything :func:`impasto.runtime.errors.code_of` names) is one line on stderr and
exit code 2; Ctrl-C is 130; a closed stdout (``impasto brushes --json | head``) ends
quietly; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from impasto.runtime.errors import InvalidArgument, code_of, message_of

__all__ = ["UsageError", "build_parser", "main"]

log = logging.getLogger("impasto")


class UsageError(InvalidArgument):
    """Bad input from the user that no lower layer checks: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree; each subcommand's ``func(args) -> int | None`` does the work.

    Building it imports the op and trainer registries (the generated subcommands need
    their definitions); the commands import what they run only when run.
    """
    from impasto.runtime.cli import admin, data, labels, ops, remote, strokes, train

    p = argparse.ArgumentParser(
        prog="impasto",
        description="Neural painting and texturing: photos, sketches and exemplars in, paintings and textures out.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    ops.add_commands(sub)
    remote.add_commands(sub)
    strokes.add_commands(sub)
    train.add_commands(sub)
    admin.add_commands(sub)
    labels.add_commands(sub)
    data.add_commands(sub)
    _verbose_everywhere(p)
    return p


def _verbose_everywhere(parser: argparse.ArgumentParser) -> None:
    """Accept ``-v`` after a subcommand too (``impasto paint ... -v``), not only before it.

    The subcommands' flag leaves the attribute alone unless given (SUPPRESS), so the
    top-level default or value stands.
    """
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for child in action.choices.values():
            if not any("--verbose" in a.option_strings for a in child._actions):
                child.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                   help="log progress details to stderr")
            _verbose_everywhere(child)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``impasto ARGV``; returns the exit code (0, 2 for a user error, 130 when interrupted)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
    except KeyboardInterrupt:
        print("impasto: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout's reader went away (`| head`): stop quietly, as `yes | head` does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as e:
        if code_of(e) is None:
            raise  # a bug: its traceback is what a report needs
        print(f"impasto: error: {_one_line(message_of(e))}", file=sys.stderr)
        return 2
    return code or 0
