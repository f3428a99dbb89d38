"""Flow files: a warp field saved by ``impasto warp --flow FLOW.npz`` and applied again with ``--apply``.

A flow file is a NumPy ``.npz`` archive (written with :func:`numpy.savez_compressed`, read with
``allow_pickle=False``) holding:

- ``flow``: (2, h, w) float32, a backward warp in normalised coordinates (channel 0 = dx,
  channel 1 = dy, in units of ``grid_sample``'s grid: 1.0 is half the image side), so
  ``out(x) = image(x + flow(x))``. It is size-independent: at any H x W the dense field is its
  bilinear upsample, so one file moves every layer of a drawing, whatever their sizes;
- ``version``: the format version (:data:`FLOW_VERSION`), refused when newer than this reader;
- ``model``: the model that estimated it ('' for a field made by hand).

Only ``flow`` is required (a field made in NumPy is welcome); other keys are ignored. The file
travels as an image slot of role ``flow`` (its bytes, as a ``.npz`` file on disk or an Image
message's ``encoded`` bytes on the wire). Everything is checked before it is used, with errors
that name the field: that it is an ``.npz``, its keys, the shape and type read from the array's
header before any value is (so a small file cannot claim gigabytes), finite values, and
``|flow| <=`` :data:`FLOW_LIMIT`.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np

from impasto.runtime.errors import InvalidArgument

__all__ = ["FLOW_LIMIT", "FLOW_VERSION", "MAX_FLOW_SIDE", "FlowFileError", "flow_shape", "read_flow", "write_flow"]

FLOW_VERSION = 1
FLOW_LIMIT = 2.0  # |dx|, |dy| at most: 2.0 moves a pixel by the whole image side (a model's max_shift is 1.0)
MAX_FLOW_SIDE = 4096  # cells a side: a flow is a coarse field (the demo writes 16 x 16), upsampled where applied
HINT = "write one with `impasto warp CONTENT GEOMETRY --flow FLOW.npz`"


class FlowFileError(InvalidArgument):
    """A flow file that cannot be used; the message names the field and the limit."""


def write_flow(flow: np.ndarray, *, model: str = "") -> bytes:
    """The ``.npz`` bytes of a (2, h, w) field (stored as float32) with the format version and ``model``."""
    flow = np.asarray(flow, np.float32)
    if flow.ndim != 3 or flow.shape[0] != 2:
        raise ValueError(f"a flow is (2, h, w), got {flow.shape}")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, flow=np.ascontiguousarray(flow), version=np.int32(FLOW_VERSION), model=np.str_(model))
    return buffer.getvalue()


def _archive(data: bytes, what: str) -> zipfile.ZipFile:
    if not data[:4] == b"PK\x03\x04":
        raise FlowFileError(f"{what} is not a flow file (a .npz archive): {HINT}")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise FlowFileError(f"{what} is not a readable .npz archive ({e}): {HINT}") from None
    if "flow.npy" not in archive.namelist():
        keys = ", ".join(n.removesuffix(".npy") for n in archive.namelist()) or "none"
        raise FlowFileError(f"{what} has no 'flow' array (its keys: {keys}): {HINT}")
    return archive


def _header(archive: zipfile.ZipFile, member: str, what: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of an array in the archive, from its .npy header alone."""
    try:
        with archive.open(member) as f:
            major, _ = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, RuntimeError) as e:
        raise FlowFileError(f"{what}: '{member.removesuffix('.npy')}' is not a readable array ({e})") from None
    return tuple(shape), np.dtype(dtype)


def flow_shape(data: bytes, what: str, max_side: int = MAX_FLOW_SIDE) -> tuple[int, int]:
    """(h, w) of the flow in ``.npz`` bytes, from the array's header (no values read); an error names ``what``.

    The flow must be (2, h, w) of a float type with 1 <= h, w <= min(``max_side``, :data:`MAX_FLOW_SIDE`).
    """
    shape, dtype = _header(_archive(data, what), "flow.npy", what)
    limit = min(max_side, MAX_FLOW_SIDE)
    if len(shape) != 3 or shape[0] != 2:
        raise FlowFileError(f"{what}: 'flow' is {shape}; a flow is (2, h, w): dx and dy for each cell")
    if dtype.kind != "f" or dtype.itemsize > 8:
        raise FlowFileError(f"{what}: 'flow' holds {dtype}; a flow holds floats (float16, float32 or float64)")
    h, w = shape[1:]
    if min(h, w) < 1 or max(h, w) > limit:
        raise FlowFileError(f"{what}: 'flow' is {w}x{h} cells; the limit is 1 to {limit} cells a side")
    return int(h), int(w)


def read_flow(data: bytes, what: str, max_side: int = MAX_FLOW_SIDE) -> np.ndarray:
    """The (2, h, w) float32 field of a flow file's bytes, every rule checked; an error names ``what``."""
    flow_shape(data, what, max_side)
    archive = _archive(data, what)
    if "version.npy" in archive.namelist():
        shape, dtype = _header(archive, "version.npy", what)
        if shape not in ((), (1,)) or dtype.kind not in "iu":
            raise FlowFileError(f"{what}: 'version' must be one whole number, got {dtype} of shape {shape}")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            flow = np.asarray(npz["flow"], np.float32)
            version = int(np.asarray(npz["version"]).reshape(-1)[0]) if "version" in npz.files else FLOW_VERSION
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise FlowFileError(f"{what} cannot be read ({e}): {HINT}") from None
    if version > FLOW_VERSION:
        raise FlowFileError(f"{what} is flow format version {version}; this impasto reads up to {FLOW_VERSION}: "
                            "update impasto, or write the file again with this one")
    if not np.isfinite(flow).all():
        raise FlowFileError(f"{what}: 'flow' contains NaN or infinite values")
    largest = float(np.abs(flow).max())
    if largest > FLOW_LIMIT:
        raise FlowFileError(f"{what}: 'flow' moves pixels by up to {largest:.3g} (in half image sides); the limit is "
                            f"{FLOW_LIMIT:g}, the whole image side")
    return flow
