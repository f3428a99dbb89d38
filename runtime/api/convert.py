"""Conversions between the wire messages (``studio_pb2``) and impasto's op requests and results.

The wire carries any op as an ``OpRequest`` (images by slot, options as a JSON-like Struct)
and returns an ``OpResult``; this module maps them onto :class:`~impasto.runtime.ops.request.OpRequest`
and :class:`~impasto.runtime.ops.registry.OpOutcome`, and describes ops for Capabilities,
all from the op definitions (it never imports an op's module). A field that cannot be used
raises :class:`WireError` naming the field and the limit (``INVALID_ARGUMENT``). Images
arrive encoded (PNG, JPEG, WebP: checked from the header, decoded upright) or raw (u8/f16/f32,
RGB or BGR order, sRGB or linear, top-down or bottom-up rows) and leave as PNG. A slot of role
``flow`` takes a file, not pixels: the ``.npz`` bytes of a warp field in ``encoded``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch
from google.protobuf import json_format

from impasto.runtime.api import studio_pb2 as pb
from impasto.runtime.errors import InvalidArgument
from impasto.runtime.formats.flow import flow_shape, read_flow
from impasto.runtime.formats.jsontext import MAX_DEPTH, json_depth
from impasto.runtime.images import ImageInputError, decode_image, decode_rgba, encode_png, image_size, pixel_limit
from impasto.runtime.ops.registry import RGBA_ROLES, OpOutcome, OpSpec
from impasto.runtime.ops.request import OpRequest

_DTYPES = {pb.DTYPE_UNSPECIFIED: np.uint8, pb.DTYPE_U8: np.uint8, pb.DTYPE_F16: np.float16, pb.DTYPE_F32: np.float32}


class WireError(InvalidArgument):
    """A request field that cannot be used (the message names it and the limit)."""


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """The sRGB transfer function, for linear-light values in [0, 1]."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp_min(1e-12) ** (1 / 2.4) - 0.055)


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _check_raw(raw: pb.RawImage, field: str, max_side: int) -> np.dtype:
    """Sizes, channels, dtype, data length and finiteness of a raw image; returns its dtype."""
    w, h, c = raw.width, raw.height, raw.channels
    if w == 0 or h == 0:
        raise WireError(f"{field}: raw image is empty ({w}x{h})")
    if max(w, h) > max_side:
        raise WireError(f"{field}: raw image is {w}x{h}; the limit is {max_side} px a side")
    if w * h > pixel_limit(max_side):
        raise WireError(f"{field}: raw image is {w}x{h} ({w * h / 1e6:.1f} megapixels); the limit is "
                        f"{pixel_limit(max_side) / 1e6:.1f} megapixels")
    if c not in (1, 3, 4):
        raise WireError(f"{field}: raw image has {c} channels; use 1, 3 or 4")
    if raw.dtype not in _DTYPES:
        raise WireError(f"{field}: unknown dtype {raw.dtype}")
    dtype = np.dtype(_DTYPES[raw.dtype])
    expected = w * h * c * dtype.itemsize
    if len(raw.data) != expected:
        raise WireError(f"{field}: raw data is {len(raw.data)} bytes; {w}x{h}x{c} {dtype.name} needs {expected}")
    if dtype.kind == "f" and not np.isfinite(np.frombuffer(raw.data, dtype=dtype)).all():
        raise WireError(f"{field}: raw image contains NaN or infinite values")
    return dtype


def raw_to_tensor(raw: pb.RawImage, field: str, max_side: int) -> torch.Tensor:
    """A raw tensor message as (C, H, W) float in [0, 1], sRGB-encoded, RGB order, top row first."""
    w, h, c = raw.width, raw.height, raw.channels
    dtype = _check_raw(raw, field, max_side)
    array = np.frombuffer(raw.data, dtype=dtype).reshape(h, w, c)
    if dtype.kind == "f":
        t = torch.from_numpy(array.astype(np.float32))
    else:
        t = torch.from_numpy(array.copy()).float() / 255.0
    if raw.bottom_up:
        t = t.flip(0)
    t = t.permute(2, 0, 1).contiguous()
    if c >= 3 and raw.order == pb.ORDER_BGR:
        t[:3] = t[[2, 1, 0]]
    colour = t[: min(c, 3)]
    if raw.transfer == pb.TRANSFER_LINEAR:
        colour = linear_to_srgb(colour)
    t = torch.cat([colour.clamp(0, 1), t[3:].clamp(0, 1)])
    return t


def image_dims(msg: pb.Image, field: str, max_side: int) -> tuple[int, int]:
    """(H, W) of an Image message, checked without decoding its pixels (the server's quick check).

    Encoded files are measured from their header, so a small file that would decode to
    gigabytes is judged by its size, in the server process, and decoded only in the sidecar.
    """
    if _kind(msg, field) == "raw":
        _check_raw(msg.raw, field, max_side)
        return msg.raw.height, msg.raw.width
    try:
        w, h = image_size(msg.encoded, max_side=max_side, what=field)
    except ImageInputError as e:
        raise WireError(str(e)) from None
    return h, w


def _kind(msg: pb.Image, field: str) -> str:
    """Which form an Image message takes (encoded or raw); an empty or unresolved one is an error."""
    kind = msg.WhichOneof("data")
    if kind is None:
        raise WireError(f"{field}: no image given (set encoded or raw)")
    if kind == "ref":
        raise WireError(f"{field}: ref '{msg.ref}' was not resolved (multipart part missing)")
    return kind


def image_to_tensor(msg: pb.Image, field: str, max_side: int) -> torch.Tensor:
    """An Image message as (3, H, W) in [0, 1]; alpha is composited on white, as for files."""
    if _kind(msg, field) == "encoded":
        try:
            return decode_image(msg.encoded, max_side=max_side, what=field)
        except ImageInputError as e:
            raise WireError(str(e)) from None
    t = raw_to_tensor(msg.raw, field, max_side)
    if t.shape[0] == 1:
        return t.expand(3, -1, -1).contiguous()
    if t.shape[0] == 4:
        alpha = t[3:]
        return t[:3] * alpha + (1 - alpha)
    return t


def mask_to_tensor(msg: pb.Image, field: str, max_side: int) -> torch.Tensor:
    """A mask as (1, H, W): grey level (1 channel), the mean of RGB, or the alpha of RGBA raw data."""
    if msg.WhichOneof("data") == "raw" and msg.raw.channels == 4:
        return raw_to_tensor(msg.raw, field, max_side)[3:]
    return image_to_tensor(msg, field, max_side).mean(0, keepdim=True)


def png_image(image: torch.Tensor) -> pb.Image:
    return pb.Image(encoded=encode_png(image))


# --- any op: requests, results, descriptions ------------------------------------------------


@dataclass(frozen=True)
class WireImage:
    """An Image message as an op's image source: sized from its header, decoded for its slot's role.

    A ``flow`` slot's file comes as the message's ``encoded`` bytes (a raw tensor is refused)."""

    msg: pb.Image

    def dims(self, label: str, max_side: int, role: str = "image") -> tuple[int, int]:
        if role == "flow":
            return flow_shape(self._file(label), label, max_side)
        return image_dims(self.msg, label, max_side)

    def _file(self, label: str) -> bytes:
        if _kind(self.msg, label) != "encoded":
            raise WireError(f"{label}: a flow file goes as the bytes of the .npz in 'encoded', not as a raw image")
        return self.msg.encoded

    def decode(self, role: str, label: str, max_side: int) -> torch.Tensor:
        if role == "flow":
            return torch.from_numpy(read_flow(self._file(label), label, max_side))
        if role == "mask":
            return mask_to_tensor(self.msg, label, max_side)
        if role in RGBA_ROLES:
            if _kind(self.msg, label) == "raw":
                t = raw_to_tensor(self.msg.raw, label, max_side)
                alpha = t[3:] if t.shape[0] == 4 else torch.ones_like(t[:1])
                return torch.cat([t[:3].expand(3, -1, -1), alpha])
            try:
                return decode_rgba(self.msg.encoded, max_side=max_side, what=label)
            except ImageInputError as e:
                raise WireError(str(e)) from None
        return image_to_tensor(self.msg, label, max_side)


def op_request(msg: pb.OpRequest) -> OpRequest:
    """The op request a wire message carries (images stay encoded until decoded by the op's run)."""
    try:  # a Struct off the wire nests at most as deep as protobuf's decoder allows (about 45 levels)
        options = json_format.MessageToDict(msg.options) if msg.HasField("options") else {}
    except RecursionError:
        options = None
    if options is None or json_depth(options) > MAX_DEPTH:
        raise WireError(f"options: nested too deeply; the limit is {MAX_DEPTH} levels")
    return OpRequest(msg.op, {name: WireImage(image) for name, image in msg.images.items()}, options,
                     set(msg.outputs))


def op_result(spec: OpSpec, outcome: OpOutcome) -> pb.OpResult:
    """An OpResult with each output under its name, by the kind its definition declares.

    A series output's further items go under ``name.2``, ``name.3``, ... (``Output.series``)."""
    result = pb.OpResult(op=spec.name, numbers=outcome.numbers)
    for output in spec.outputs:
        for _, key, value in output.items_in(outcome.values):
            if output.kind == "image":
                result.images[key].encoded = encode_png(value)
            elif output.kind == "text":
                result.texts[key] = value
            else:
                result.files[key].encoded = value
    return result


def option_infos(spec: OpSpec) -> list[pb.OptionInfo]:
    """Each user-facing option with its type, default, choices, range and help (the add-ons' forms)."""
    infos = []
    for o in spec.option_specs():
        info = pb.OptionInfo(name=o.name, type=o.type_name, default=str(o.default), choices=o.choice_list, help=o.help)
        if o.min is not None:
            info.min = o.min
        if o.max is not None:
            info.max = o.max
        infos.append(info)
    return infos


def op_info(spec: OpSpec) -> pb.OpInfo:
    """An op's Capabilities entry. A slot another can stand in for (``ImageSlot.unless``: warp's geometry, or a flow
    file to apply) is not always needed, so it reads as optional; the op says what is missing when neither comes.
    ``live``: the op's fast settings (:attr:`OpSpec.live`), each value JSON-encoded (``true``, ``0``, ``"oil"``)."""
    return pb.OpInfo(
        name=spec.name, help=spec.help, description=spec.description, options=option_infos(spec), job=True,
        runs_in=spec.runs_in, models=list(spec.models), live={name: json.dumps(value) for name, value in spec.live},
        images=[pb.ImageSlotInfo(name=s.name, role=s.role, required=s.required and s.unless is None,
                                 same_size_as=s.same_size_as or "",
                                 together_with=s.together_with or "", min_side=s.min_side, help=s.help,
                                 unless=s.unless or "")
                for s in spec.images],
        outputs=[pb.OutputInfo(name=o.name, kind=o.kind, filename=o.filename, mime=o.mime, on_request=o.on_request,
                               place=o.place, help=o.help, series=o.series) for o in spec.outputs],
    )
