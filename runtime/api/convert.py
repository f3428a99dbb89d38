"""Conversions between the wire messages (``studio_pb2``) and impasto's tensors and options.

Every check a request needs happens here, once, for gRPC and HTTP alike: a field that cannot
be used raises :class:`WireError` naming the field and the limit, which the server turns into
``INVALID_ARGUMENT``. Images arrive encoded (PNG/JPEG) or raw (u8/f16/f32, RGB or BGR order,
sRGB or linear, top-down or bottom-up rows) and leave as PNG.
"""

from __future__ import annotations

import json
from dataclasses import fields as dataclass_fields

import numpy as np
import torch

from impasto.runtime.api import studio_pb2 as pb
from impasto.runtime.images import ImageInputError, decode_image, encode_png, image_size
from impasto.runtime.ops.paint import MAX_STROKES, PaintOptions
from impasto.runtime.ops.paint_job import PaintJob, PaintOutcome, PaintRequestError, parse_colour

_DTYPES = {pb.DTYPE_UNSPECIFIED: np.uint8, pb.DTYPE_U8: np.uint8, pb.DTYPE_F16: np.float16, pb.DTYPE_F32: np.float32}


class WireError(ValueError):
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


def mask_to_tensor(msg: pb.Image, field: str, max_side: int, size: tuple[int, int]) -> torch.Tensor:
    """A mask as (1, H, W): grey level (1 channel), the mean of RGB, or the alpha of RGBA raw data."""
    if msg.WhichOneof("data") == "raw" and msg.raw.channels == 4:
        mask = raw_to_tensor(msg.raw, field, max_side)[3:]
    else:
        mask = image_to_tensor(msg, field, max_side).mean(0, keepdim=True)
    if tuple(mask.shape[1:]) != tuple(size):
        raise WireError(f"{field} is {mask.shape[2]}x{mask.shape[1]}, the image is {size[1]}x{size[0]}: they must match")
    return mask


def png_image(image: torch.Tensor) -> pb.Image:
    return pb.Image(encoded=encode_png(image))


# --- paint options ----------------------------------------------------------------------------

# the wire options that are PaintOptions fields, and the extra ones (size, canvas)
_PAINT_FIELDS = {f.name for f in dataclass_fields(PaintOptions)}
_CHOICES = {
    "brush": ["oil", "marker", "watercolor", "tape"],
    "renderer": ["exact", "neural"],
    "style_mode": ["color", "all"],
    "features": ["vgg19", "random"],
}
_RANGES = {
    "strokes": (1, MAX_STROKES), "levels": (1, 16), "size": (1, 16384), "iterations": (0, 10_000),
    "lr": (1e-6, 1.0), "patch": (8, 512), "ot_weight": (0.0, 100.0), "style_weight": (0.0, 1e6),
}
_HELP = {
    "brush": "brush that paints the strokes",
    "strokes": "strokes in total over all levels",
    "levels": "progressive levels: level m cuts the canvas into m x m patches",
    "size": "longer side of the output, px",
    "iterations": "optimisation steps per stroke (0: the reference's schedule)",
    "lr": "RMSprop learning rate",
    "renderer": "differentiable renderer used by the search",
    "patch": "px a patch is searched at (larger: slower, finer)",
    "ot_weight": "optimal-transport loss weight (0 = off; the reference's --ot is 0.1)",
    "style_mode": "with a style image: restyle colours only, or every parameter",
    "style_weight": "style loss weight against the content loss",
    "features": "style features: VGG-19 (ImageNet weights) or a random-weight stand-in",
    "canvas": "what to paint on: black, white or #rrggbb (or send canvas_image)",
    "seed": "random seed: the same seed gives the same painting",
}
DEFAULT_SIZE = 512
DEFAULT_CANVAS = "black"


def read_options(msg, choices: dict[str, list[str]], ranges: dict[str, tuple[float, float]]) -> dict:
    """The fields set in an options message, each checked against its choices or range (WireError names it)."""
    values = {}
    for name in msg.DESCRIPTOR.fields_by_name:
        if not msg.HasField(name):
            continue
        value = getattr(msg, name)
        if isinstance(value, float) and not np.isfinite(value):
            raise WireError(f"options.{name} must be a finite number, got {value}")
        if name in choices and value not in choices[name]:
            raise WireError(f"options.{name} '{value}' is not one of {', '.join(choices[name])}")
        if name in ranges and not ranges[name][0] <= value <= ranges[name][1]:
            lo, hi = ranges[name]
            raise WireError(f"options.{name} must be between {lo:g} and {hi:g}, got {value:g}")
        values[name] = value
    return values


_TYPE_NAMES = {9: "string", 13: "int", 3: "int", 2: "float", 8: "bool"}  # protobuf field types -> OptionInfo.type


def _option_infos(message, defaults: dict, choices: dict, ranges: dict, help_text: dict) -> list[pb.OptionInfo]:
    """One OptionInfo per field of an options message: type, default, choices, range, help."""
    infos = []
    for name, field in message.DESCRIPTOR.fields_by_name.items():
        lo, hi = ranges.get(name, (0, 0))
        default = defaults.get(name)
        infos.append(pb.OptionInfo(name=name, type=_TYPE_NAMES.get(field.type, "string"),
                                   default="" if default is None else str(default), choices=choices.get(name, []),
                                   min=lo, max=hi, help=help_text.get(name, "")))
    return infos


def paint_option_infos() -> list[pb.OptionInfo]:
    """The paint options with defaults, choices and ranges, for Capabilities (add-ons build forms from it)."""
    defaults = {**vars(PaintOptions()), "size": DEFAULT_SIZE, "canvas": DEFAULT_CANVAS}
    return _option_infos(pb.PaintOptions, defaults, _CHOICES, _RANGES, _HELP)


def paint_options(msg: pb.PaintOptions, device: str, vgg_weights: str | None) -> tuple[PaintOptions, int, tuple[float, float, float]]:
    """(PaintOptions, output size, canvas colour) from the wire options; unset fields take the defaults."""
    values = read_options(msg, _CHOICES, _RANGES)
    size = int(values.pop("size", DEFAULT_SIZE))
    canvas = values.pop("canvas", DEFAULT_CANVAS)
    try:
        colour = parse_colour(canvas, "options.canvas")
    except PaintRequestError as e:
        raise WireError(str(e)) from None
    if "iterations" in values:
        values["iterations"] = int(values["iterations"]) or None
    options = PaintOptions(**{k: v for k, v in values.items() if k in _PAINT_FIELDS}, device=device, vgg_weights=vgg_weights)
    return options, size, colour


def paint_job(req: pb.PaintRequest, max_side: int, device: str = "cpu", vgg_weights: str | None = None) -> PaintJob:
    """A checked :class:`PaintJob` from a PaintRequest (raises :class:`WireError`)."""
    image = image_to_tensor(req.image, "image", max_side)
    options, size, colour = paint_options(req.options, device, vgg_weights)
    if size > max_side:
        raise WireError(f"options.size must be between 1 and {max_side}, got {size}")
    h, w = image.shape[1:]
    mask = mask_to_tensor(req.mask, "mask", max_side, (h, w)) if req.HasField("mask") else None
    style = image_to_tensor(req.style, "style", max_side) if req.HasField("style") else None
    canvas = colour
    if req.HasField("canvas_image"):
        canvas = image_to_tensor(req.canvas_image, "canvas_image", max_side)
    job = PaintJob(image, options, size, mask, style, canvas, svg=req.svg, animation=req.animation)
    try:
        job.validate(max_side)
    except PaintRequestError as e:
        raise WireError(str(e)) from None
    return job


def paint_result(outcome: PaintOutcome) -> pb.PaintResult:
    result = pb.PaintResult(
        image=png_image(outcome.canvas),
        strokes_json=json.dumps(outcome.strokes.to_dict(), separators=(",", ":")),
        width=outcome.width,
        height=outcome.height,
        strokes=int(outcome.strokes.strokes.shape[0]),
        seconds=outcome.seconds,
    )
    if outcome.svg is not None:
        result.svg = outcome.svg
    if outcome.animation_gif is not None:
        result.animation.encoded = outcome.animation_gif
    return result


# --- texture and stylize -----------------------------------------------------------------------

_SYNTHESIS_CHOICES = {"loss": ["histogram", "gram", "sliced"], "features": ["vgg19", "random"]}
_SYNTHESIS_RANGES = {"iterations": (1, 100_000), "scales": (0, 8), "lr": (1e-6, 10.0), "content_weight": (0.0, 1e6),
                     "tv_weight": (0.0, 1e6)}
_SYNTHESIS_HELP = {
    "loss": "histogram: Gram + histogram losses (Risser et al.); gram: Gram only (Gatys); sliced: sliced Wasserstein",
    "iterations": "optimisation steps per scale",
    "scales": "coarse-to-fine scales (0: as many as fit, up to 4)",
    "lr": "Adam learning rate on pixels",
    "content_weight": "stylize: weight of the content against the style",
    "tv_weight": "total-variation weight (smoothness)",
    "features": "VGG-19 with ImageNet weights, or a random-weight stand-in (weak)",
    "seed": "random seed",
}
DEFAULT_TEXTURE_SIDE = 512


def synthesis_option_infos(extra: list[pb.OptionInfo] = ()) -> list[pb.OptionInfo]:
    from impasto.runtime.ops.synthesis import SynthesisOptions

    return list(extra) + _option_infos(pb.SynthesisOptions, vars(SynthesisOptions()), _SYNTHESIS_CHOICES,
                                       _SYNTHESIS_RANGES, _SYNTHESIS_HELP)


def synthesis_options(msg: pb.SynthesisOptions, device: str, vgg_weights: str | None, tileable: bool = False):
    """SynthesisOptions from the wire; unset fields take the defaults, bad ones raise WireError."""
    from impasto.runtime.ops.synthesis import SynthesisInputError, SynthesisOptions

    values = read_options(msg, _SYNTHESIS_CHOICES, _SYNTHESIS_RANGES)
    options = SynthesisOptions(**values, tileable=tileable, device=device, vgg_weights=vgg_weights)
    try:
        options.validate()
    except SynthesisInputError as e:
        raise WireError(str(e)) from None
    return options


def texture_inputs(req: pb.TextureRequest, max_side: int, device: str = "cpu", vgg_weights: str | None = None):
    """(exemplar, (H, W), options) of a TextureRequest: :func:`check_texture`, then the pixels decoded."""
    check_texture(req, max_side)
    exemplar = image_to_tensor(req.exemplar, "exemplar", max_side)
    size = (req.height or DEFAULT_TEXTURE_SIDE, req.width or DEFAULT_TEXTURE_SIDE)
    return exemplar, size, synthesis_options(req.options, device, vgg_weights, req.tileable)


def stylize_inputs(req: pb.StylizeRequest, max_side: int, device: str = "cpu", vgg_weights: str | None = None):
    """(content, style, labels dict, options) of a StylizeRequest: :func:`check_stylize`, then the pixels decoded."""
    check_stylize(req, max_side)
    content = image_to_tensor(req.content, "content", max_side)
    style = image_to_tensor(req.style, "style", max_side)
    labels = {name: image_to_tensor(getattr(req, name), name, max_side)
              for name in ("content_labels", "style_labels") if req.HasField(name)}
    return content, style, labels, synthesis_options(req.options, device, vgg_weights)


def image_result(image: torch.Tensor, seconds: float) -> pb.ImageResult:
    return pb.ImageResult(image=png_image(image), width=int(image.shape[2]), height=int(image.shape[1]), seconds=seconds)


# --- the server's quick checks: everything but decoding pixels ---------------------------------

MIN_SYNTHESIS_SIDE = 64  # VGG-19's relu5_1 sits after four 2x poolings


def check_paint(req: pb.PaintRequest, max_side: int) -> None:
    """Everything :func:`paint_job` checks, without decoding the images (raises WireError)."""
    h, w = image_dims(req.image, "image", max_side)
    options, size, colour = paint_options(req.options, "cpu", None)
    if size > max_side:
        raise WireError(f"options.size must be between 1 and {max_side}, got {size}")
    for field in ("mask", "canvas_image"):
        if req.HasField(field):
            fh, fw = image_dims(getattr(req, field), field, max_side)
            if (fh, fw) != (h, w):
                raise WireError(f"{field} is {fw}x{fh}, the image is {w}x{h}: they must match")
    if req.HasField("style"):
        image_dims(req.style, "style", max_side)
    options.background = colour
    try:
        options.validate()
    except ValueError as e:
        raise WireError(str(e)) from None


def check_texture(req: pb.TextureRequest, max_side: int) -> None:
    h, w = image_dims(req.exemplar, "exemplar", max_side)
    width, height = req.width or DEFAULT_TEXTURE_SIDE, req.height or DEFAULT_TEXTURE_SIDE
    if max(width, height) > max_side:
        raise WireError(f"width x height is {width}x{height}; the limit is {max_side} px a side")
    if min(h, w) < MIN_SYNTHESIS_SIDE or min(width, height) < MIN_SYNTHESIS_SIDE:
        raise WireError(f"exemplar ({w}x{h}) and output ({width}x{height}) need at least {MIN_SYNTHESIS_SIDE} px a side")
    synthesis_options(req.options, "cpu", None, req.tileable)


def check_stylize(req: pb.StylizeRequest, max_side: int) -> None:
    content = image_dims(req.content, "content", max_side)
    style = image_dims(req.style, "style", max_side)
    if req.HasField("content_labels") != req.HasField("style_labels"):
        raise WireError("give both content_labels and style_labels, or neither")
    if req.HasField("content_labels"):
        for field, ref in (("content_labels", content), ("style_labels", style)):
            dims = image_dims(getattr(req, field), field, max_side)
            if dims != ref:
                raise WireError(f"{field} is {dims[1]}x{dims[0]}, its image {ref[1]}x{ref[0]}: they must match")
    if min(*content, *style) < MIN_SYNTHESIS_SIDE:
        raise WireError(f"content and style need at least {MIN_SYNTHESIS_SIDE} px a side")
    synthesis_options(req.options, "cpu", None)
