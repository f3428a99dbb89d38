"""One error taxonomy: which failures are the user's, and what each becomes on every surface.

A user error is an exception whose message names the field and the limit. It maps once to a
gRPC status name, and from there to an HTTP status and (for every user error) the CLI's exit
code 2 with one line on stderr. Runtime exceptions subclass the kinds below; exceptions of
``impasto.train`` and ``impasto.export`` (which may not import the runtime) are listed in
:data:`FOREIGN`. Anything else is a bug: INTERNAL, HTTP 500, a traceback on the CLI.
"""

from __future__ import annotations

import functools
import re


class InvalidArgument(ValueError):
    """A request, option, file or spec that cannot be used (gRPC INVALID_ARGUMENT, HTTP 400)."""

    code = "INVALID_ARGUMENT"


class NotFound(LookupError):
    """A job, model or op that does not exist (NOT_FOUND, 404)."""

    code = "NOT_FOUND"

    def __str__(self) -> str:  # KeyError-like subclasses would quote the message
        return str(self.args[0]) if self.args else ""


class ResourceExhausted(RuntimeError):
    """More work than the server accepts now (RESOURCE_EXHAUSTED, 429)."""

    code = "RESOURCE_EXHAUSTED"


class FailedPrecondition(RuntimeError):
    """The request is fine but this machine lacks something (weights, TensorRT) (FAILED_PRECONDITION, 412)."""

    code = "FAILED_PRECONDITION"


class Unavailable(RuntimeError):
    """A server or sidecar that cannot be reached (UNAVAILABLE, 503)."""

    code = "UNAVAILABLE"


HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "FAILED_PRECONDITION": 412,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "DEADLINE_EXCEEDED": 504,
    "UNAVAILABLE": 503,
    "INTERNAL": 500,
}


@functools.cache
def _foreign() -> tuple[tuple[tuple[type, ...], str], ...]:
    """Exceptions of train/ and export/ (which cannot subclass the kinds above), by status."""
    from impasto.export.onnx import ExportError
    from impasto.export.registry import InvalidModelNameError, UnknownModelError
    from impasto.export.repository import RepositoryError
    from impasto.export.tensorrt import EngineBuildError, TensorRTUnavailable
    from impasto.train.brushes import StrokeParamError, UnknownBrushError
    from impasto.train.data.labels import LabelError
    from impasto.train.data.recipes import DataError
    from impasto.train.models.stroke_predictor import PredictorWeightsMissing
    from impasto.train.models.vgg import VGGWeightsMissing
    from impasto.train.options import OptionError

    return (
        ((OptionError, StrokeParamError, UnknownBrushError, InvalidModelNameError, RepositoryError, ExportError,
          LabelError, DataError),
         "INVALID_ARGUMENT"),
        ((UnknownModelError,), "NOT_FOUND"),
        ((VGGWeightsMissing, PredictorWeightsMissing, TensorRTUnavailable, EngineBuildError), "FAILED_PRECONDITION"),
    )


def code_of(error: BaseException) -> str | None:
    """The status name of a user error, or None for a bug (reported as INTERNAL)."""
    code = getattr(type(error), "code", None)
    if isinstance(code, str) and isinstance(error, (InvalidArgument, NotFound, ResourceExhausted,
                                                    FailedPrecondition, Unavailable)):
        return code
    for kinds, name in _foreign():
        if isinstance(error, kinds):
            return name
    if isinstance(error, FileNotFoundError):
        return "NOT_FOUND"
    return None


MAX_ECHO = 200  # characters of one echoed value (a brush name, a job id) kept in a message
MAX_MESSAGE_BYTES = 1500  # a message's UTF-8 size at most: gRPC sends it in a trailer (8 kB metadata limit)
_LONG_WORD = re.compile(rf"\S{{{MAX_ECHO + 1},}}")


def elide(text: str, keep: int = MAX_ECHO) -> str:
    """``text`` itself, or its start and end around a note of its length when it is over ``keep`` characters."""
    if len(text) <= keep:
        return text
    head, tail = keep * 2 // 3, keep // 3
    return f"{text[:head]}...[{len(text)} characters]...{text[-tail:]}"


def bounded(message: str) -> str:
    """A message with every long value shortened, and at most MAX_MESSAGE_BYTES in all.

    Messages echo what the user sent (an unknown brush, a job id); a 10 kB value echoed in
    full would make the reply exceed gRPC's metadata limit and arrive as RESOURCE_EXHAUSTED.
    The start (the field) and the end (the limit) of a message are kept.
    """
    message = _LONG_WORD.sub(lambda m: elide(m.group(0)), message)
    if len(message.encode()) <= MAX_MESSAGE_BYTES:
        return message
    keep = MAX_MESSAGE_BYTES // 4  # characters are at most 4 bytes
    while len(elide(message, keep).encode()) <= MAX_MESSAGE_BYTES and keep < len(message):
        keep += 64
    return elide(message, keep - 64)


def message_of(error: BaseException) -> str:
    """The one line a user sees: the message of a user error, the type too for a bug; bounded in size."""
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return bounded(text if code_of(error) else f"{type(error).__name__}: {text}")


def http_status(code: str) -> int:
    return HTTP_STATUS.get(code, 500)


def from_status(code: str, message: str) -> Exception:
    """The taxonomy's exception for a status another process sent (the sidecar's), keeping its message.

    A status outside the taxonomy (INTERNAL, UNKNOWN) becomes a RuntimeError: a bug over there.
    """
    kinds = {k.code: k for k in (InvalidArgument, NotFound, ResourceExhausted, FailedPrecondition, Unavailable)}
    kind = kinds.get(code)
    return kind(message) if kind else RuntimeError(f"{code}: {message}")
