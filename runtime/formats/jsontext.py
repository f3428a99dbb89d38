"""JSON text from users, read with clear errors: bad UTF-8, invalid JSON and deep nesting.

Python's ``json`` module recurses once per nesting level, so a body of ten thousand ``[``
raises ``RecursionError``, which is no user error and would surface as INTERNAL / HTTP 500
or a traceback. :func:`load_json` refuses such input as an InvalidArgument naming the field
and the limit; the depth of what it returns is checked without recursion.
"""

from __future__ import annotations

from impasto.runtime.errors import InvalidArgument

MAX_DEPTH = 32  # nesting levels: the deepest message impasto reads (an OpRequest's options) needs about 6


_KINDS = {dict: "a JSON object", list: "a JSON array", str: "a string", int: "a number", float: "a number",
          bool: "true or false", type(None): "null"}


class JsonInputError(InvalidArgument):
    """JSON text that cannot be used; the message names the field and what is wrong."""


def json_depth(value: object, limit: int = MAX_DEPTH) -> int:
    """How deeply lists and objects nest in ``value`` (a scalar is 0), counted up to ``limit + 1``."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def load_json(text: str | bytes, what: str, *, max_depth: int = MAX_DEPTH, want: type | None = None) -> object:
    """Parse ``text`` (UTF-8 bytes or str); ``want=dict`` also insists on an object at the top.

    Raises JsonInputError naming ``what``: not UTF-8 (with the byte offset), not JSON (with
    line and column), nested deeper than ``max_depth``, or not the type wanted.
    """
    import json

    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise JsonInputError(f"{what} is not UTF-8 text (byte {e.start}: {bytes(text)[e.start:e.start + 1]!r}); "
                                 "send JSON encoded as UTF-8") from None
    try:
        value = json.loads(text)
    except RecursionError:
        raise JsonInputError(f"{what} is nested too deeply; the limit is {max_depth} levels") from None
    except ValueError as e:
        raise JsonInputError(f"{what} is not valid JSON: {e}") from None
    if json_depth(value, max_depth) > max_depth:
        raise JsonInputError(f"{what} is nested too deeply; the limit is {max_depth} levels")
    if want is not None and not isinstance(value, want):
        raise JsonInputError(f"{what} must be {_KINDS.get(want, want.__name__)}, got {_KINDS[type(value)]}")
    return value
