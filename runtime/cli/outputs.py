"""Output files of the command line: every path checked before any work, every file written atomically.

A run that takes minutes must not fail at its end because ``-o`` names a missing folder or
``--svg`` a ``.png``; so :func:`check_targets` checks every path up front, and nothing is
written when a check fails. Results are written through a temporary file and a rename, so
a failed or interrupted run never leaves half a file.

An op's result values come in two forms: a local run gives tensors (images), strings
(texts) and bytes (files); a server's reply gives the same, except that images arrive as
encoded PNG. :func:`write_output` takes either. A series output (``Output.series``: several
results, e.g. ``--variations``) writes ``OUT.png``, ``OUT.2.png``, ``OUT.3.png``, ...
(:func:`write_items`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from impasto.runtime.ops.registry import Output, series_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class Target:
    """One file to write: which output, the flag that named it (for messages), the path."""

    output: Output
    flag: str
    path: str
    suffixes: tuple[str, ...]  # accepted; () = any


def primary_suffixes(output: Output) -> tuple[str, ...]:
    """What ``-o`` accepts for an op's main output: an image's formats, or its flags' suffixes."""
    if output.kind == "image":
        return IMAGE_SUFFIXES
    return tuple(s for _, suffixes in output.flags for s in suffixes)


def check_folder(*paths: str | None) -> None:
    """Raise a user error, before any work, if an output's folder does not exist."""
    from impasto.runtime.cli import UsageError

    for p in paths:
        if p is not None and not Path(p).resolve().parent.is_dir():
            raise UsageError(f"output folder does not exist: {Path(p).parent}")


def check_targets(targets: list[Target]) -> None:
    """Suffix, folder and no two flags writing one file; a user error names the flag."""
    from impasto.runtime.cli import UsageError

    seen: dict[Path, str] = {}
    for t in targets:
        if t.suffixes and not t.path.lower().endswith(t.suffixes):
            raise UsageError(f"{t.flag} '{t.path}' must end with {' or '.join(t.suffixes)}")
        check_folder(t.path)
        where = Path(t.path).resolve()
        if where in seen:
            raise UsageError(f"{seen[where]} and {t.flag} both write '{t.path}': give each its own file")
        seen[where] = t.flag


def series_note(output: Output) -> str:
    """The help text's note on how a series output's files are named ('' for a plain output)."""
    return "; several results: out.png, out.2.png, out.3.png, ..." if output.series else ""


def write_items(target: Target, values: dict[str, Any]) -> list[str]:
    """Every item of ``target``'s output in the result ``values`` written; the paths, in order.

    A plain output is one file, ``target.path``; a series output's item k goes to
    :func:`series_path` (``OUT.png``, ``OUT.2.png``, ...)."""
    items = target.output.items_in(values)
    if not items:
        raise RuntimeError(f"the op gave no '{target.output.name}' output")  # a definition bug, not the user's
    return [write_output(Target(target.output, target.flag, series_path(target.path, index), target.suffixes), value)
            for index, _, value in items]


def write_output(target: Target, value: Any) -> str:
    """Write one result value to ``target.path`` atomically; returns the path.

    Images: a tensor is saved in the format of the suffix; PNG bytes (from a server) are
    written as they are to a ``.png`` and re-encoded otherwise. Texts and files go through
    the output's own writer (``Output.save``, e.g. strokes JSON -> ``.npz``) when it has one.
    """
    from impasto.runtime.atomic import atomic_output
    from impasto.runtime.images import decode_image, save_image

    output, path = target.output, target.path
    if output.kind == "image":
        if isinstance(value, (bytes, bytearray)):
            if output.save is None and path.lower().endswith(".png"):
                with atomic_output(path) as f:
                    f.write(value)
                return path
            value = decode_image(bytes(value), what=f"the server's {output.name}")
        if output.save is not None:
            output.save(value, path)
        else:
            save_image(value, path)
        return path
    if output.save is not None:
        output.save(value, path)
    elif output.kind == "text":
        with atomic_output(path, "w") as f:
            f.write(value)
    else:
        with atomic_output(path) as f:
            f.write(bytes(value))
    return path
