"""KServe v2 tensors, checked the same way whichever transport carried them (gRPC or REST).

Every input is checked against the model before any memory is allocated for it: its name is
an input of the model, its datatype is the model's (Triton refuses FP64 data for an FP32 input,
and so does impasto), its dims are non-negative, and its element count (computed with Python
integers, so a shape like ``[2**32, 2**32]`` cannot overflow) fits both the data that was sent
and the server's message limit. Bad input raises :class:`WireError` (INVALID_ARGUMENT / 400),
naming the input and the limit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from impasto.export.repository import RepositoryModel
from impasto.runtime.api.convert import WireError

# KServe datatype -> (numpy dtype, InferTensorContents field of the gRPC protocol)
DATATYPES: dict[str, tuple[type, str | None]] = {
    "FP32": (np.float32, "fp32_contents"), "FP64": (np.float64, "fp64_contents"), "FP16": (np.float16, None),
    "INT64": (np.int64, "int64_contents"), "INT32": (np.int32, "int_contents"), "INT16": (np.int16, "int_contents"),
    "INT8": (np.int8, "int_contents"), "UINT8": (np.uint8, "uint_contents"), "UINT16": (np.uint16, "uint_contents"),
    "UINT32": (np.uint32, "uint_contents"), "UINT64": (np.uint64, "uint64_contents"), "BOOL": (np.bool_, "bool_contents"),
}
NUMPY_TO_KSERVE = {np.dtype(v[0]).str: k for k, v in DATATYPES.items()}
DEFAULT_MAX_BYTES = 256 << 20  # the server's default --max-message-mb


def kserve_datatype(array: np.ndarray) -> str:
    """The KServe datatype name of ``array``'s dtype."""
    return NUMPY_TO_KSERVE[array.dtype.str]


def check_input(model: RepositoryModel, name: str, datatype: str, shape: Sequence, max_bytes: int) -> tuple[np.dtype, tuple[int, ...], int]:
    """(numpy dtype, shape, element count) of input ``name`` as declared by a request, checked against the model.

    Raises :class:`WireError` for an unknown input, a datatype that is not the model's, a shape
    that is not a list of non-negative integers, or one whose bytes exceed ``max_bytes``.
    """
    declared = {t.name: t for t in model.inputs}
    if name not in declared:
        raise WireError(f"model '{model.name}' has no input '{name}' (inputs: {', '.join(sorted(declared))})")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise WireError(f"input '{name}': datatype {datatype!r} is not supported (use one of {', '.join(DATATYPES)})")
    expected = declared[name].dtype
    if datatype != expected:
        raise WireError(f"input '{name}': unexpected datatype {datatype}, model '{model.name}' expects {expected}")
    if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise WireError(f"input '{name}': shape must be a list of integers, got {shape!r}")
    if any(d < 0 for d in shape):
        raise WireError(f"input '{name}': shape {list(shape)} has a negative dimension")
    count = math.prod(shape)
    dtype = np.dtype(DATATYPES[datatype][0])
    if count * dtype.itemsize > max_bytes:
        raise WireError(f"input '{name}': shape {list(shape)} {datatype} is {count * dtype.itemsize} bytes, "
                        f"over the server's message limit of {max_bytes} bytes")
    return dtype, tuple(int(d) for d in shape), count


def from_bytes(name: str, datatype: str, dtype: np.dtype, shape: tuple[int, ...], count: int, data: bytes) -> np.ndarray:
    """An input sent as raw little-endian bytes (gRPC ``raw_input_contents``, REST binary data)."""
    needed = count * dtype.itemsize
    if len(data) != needed:
        raise WireError(f"input '{name}': {len(data)} bytes of data for shape {list(shape)} {datatype}, which needs {needed}")
    return np.frombuffer(data, dtype=dtype.newbyteorder("<")).reshape(shape)


def _flatten(name: str, data: object, max_depth: int) -> list:
    """JSON tensor data, flat or nested lists, as one flat list (iteratively: deep nesting cannot recurse)."""
    if not isinstance(data, list):
        raise WireError(f"input '{name}': data must be a list of numbers, got {type(data).__name__}")
    flat: list = []
    stack = [(iter(data), 1)]
    while stack:
        items, depth = stack[-1]
        for value in items:
            if isinstance(value, list):
                if depth >= max_depth:
                    raise WireError(f"input '{name}': data is nested deeper than its shape's {max_depth - 1} dimensions")
                stack.append((iter(value), depth + 1))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def from_json(name: str, datatype: str, dtype: np.dtype, shape: tuple[int, ...], count: int, data: object) -> np.ndarray:
    """An input sent as JSON numbers (REST ``data``: row-major, flat or nested as the shape)."""
    flat = _flatten(name, data, max(len(shape), 1) + 1)
    if len(flat) != count:
        raise WireError(f"input '{name}': {len(flat)} values for shape {list(shape)}, which needs {count}")
    if dtype.kind == "b":
        allowed: tuple[type, ...] = (bool,)
    elif dtype.kind == "f":
        allowed = (int, float)
    else:
        allowed = (int,)
    for i, value in enumerate(flat):
        if not isinstance(value, allowed) or (dtype.kind != "b" and isinstance(value, bool)):
            kind = "true/false" if dtype.kind == "b" else ("numbers" if dtype.kind == "f" else "integers")
            raise WireError(f"input '{name}': data[{i}] is {value!r}; {datatype} data must be {kind}")
    try:
        array = np.asarray(flat, dtype=dtype)
    except (OverflowError, ValueError) as e:
        raise WireError(f"input '{name}': a value does not fit {datatype}: {e}") from None
    return array.reshape(shape)


def from_contents(name: str, datatype: str, dtype: np.dtype, shape: tuple[int, ...], count: int, contents) -> np.ndarray:
    """An input sent in gRPC's typed ``InferTensorContents`` (the field its datatype uses)."""
    field = DATATYPES[datatype][1]
    if field is None:
        raise WireError(f"input '{name}': {datatype} must be sent as raw_input_contents")
    values = getattr(contents, field)
    if len(values) != count:
        raise WireError(f"input '{name}': {len(values)} values in contents.{field} for shape {list(shape)}, which needs {count}")
    try:
        return np.asarray(values, dtype=dtype).reshape(shape)
    except (OverflowError, ValueError) as e:
        raise WireError(f"input '{name}': a value does not fit {datatype}: {e}") from None


def check_outputs(model: RepositoryModel, wanted: Sequence[str]) -> list[str]:
    """The requested output names (all of the model's when none), each checked to exist, before anything runs."""
    names = [t.name for t in model.outputs]
    if not wanted:
        return names
    for n in wanted:
        if n not in names:
            raise WireError(f"model '{model.name}' has no output '{n}' (outputs: {', '.join(names)})")
    if len(set(wanted)) != len(wanted):
        raise WireError(f"model '{model.name}': an output is requested twice in {list(wanted)}")
    return list(wanted)


def check_unique(names: Sequence[str]) -> None:
    """Refuse a request that sends the same input twice."""
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise WireError(f"input '{n}' is sent twice")
        seen.add(n)
