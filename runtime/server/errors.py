"""One mapping from impasto's exceptions to gRPC status codes (HTTP statuses derive from it)."""

from __future__ import annotations

import grpc

from impasto.export.registry import InvalidModelNameError
from impasto.runtime.api.convert import WireError
from impasto.runtime.backends.base import InferenceInputError
from impasto.runtime.formats.strokes import StrokeFileError
from impasto.runtime.images import ImageInputError
from impasto.runtime.server.jobs import JobsFull, UnknownJob
from impasto.runtime.server.models import ModelNotFound
from impasto.train.brushes import StrokeParamError, UnknownBrushError

STATUS = [
    ((WireError, ImageInputError, StrokeFileError, StrokeParamError, UnknownBrushError, InferenceInputError,
      InvalidModelNameError), grpc.StatusCode.INVALID_ARGUMENT),
    ((UnknownJob, ModelNotFound), grpc.StatusCode.NOT_FOUND),
    ((JobsFull,), grpc.StatusCode.RESOURCE_EXHAUSTED),
]

HTTP = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.INTERNAL: 500,
}


def status_of(error: BaseException) -> grpc.StatusCode | None:
    """The status a user error maps to, or None for a bug (reported as INTERNAL)."""
    for kinds, code in STATUS:
        if isinstance(error, kinds):
            return code
    return None
