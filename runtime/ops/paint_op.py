"""The ``paint`` op: a picture re-made as brush strokes (Stylized Neural Painting).

This module is the op's one definition: its options (the painter's :class:`PaintOptions`
plus the output size and canvas), its image slots, its outputs and its run function. The
CLI, the server, the sidecar, batch and the add-ons all derive from it, so a painting for a
given request and seed is the same wherever it runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from impasto.export.repository import RepositoryError
from impasto.runtime.errors import InvalidArgument, NotFound
from impasto.runtime.formats.strokes import StrokeFile, save_strokes, strokes_from_json
from impasto.runtime.images import resize
from impasto.runtime.ops.paint import MAX_STROKES, PaintOptions, paint, starting_canvas
from impasto.runtime.ops.paint_predict import (
    Predictor,
    engine_model_name,
    engine_predictor,
    shipped_predictor,
    shipped_predictor_brushes,
    shipped_predictor_file,
)
from impasto.runtime.ops.registry import (
    ImageSlot,
    OpOutcome,
    OpSpec,
    Output,
    RunContext,
    register_op,
)
from impasto.train.options import option

NAMED_COLOURS = {"black": (0.0, 0.0, 0.0), "white": (1.0, 1.0, 1.0)}


class PaintRequestError(InvalidArgument):
    """A paint request that cannot run; the message names the field and the limit."""


def parse_colour(value: str, field: str = "canvas") -> tuple[float, float, float]:
    """black | white | #rrggbb -> an RGB tuple in [0, 1]."""
    if value in NAMED_COLOURS:
        return NAMED_COLOURS[value]
    hexdigits = "0123456789abcdefABCDEF"
    if len(value) == 7 and value.startswith("#") and all(c in hexdigits for c in value[1:]):
        return tuple(int(value[i : i + 2], 16) / 255 for i in (1, 3, 5))  # type: ignore[return-value]
    raise PaintRequestError(f"{field} '{value}' is not a colour: use #rrggbb, black or white")


def output_size(h: int, w: int, longer: int) -> tuple[int, int]:
    """(H, W) with the longer side ``longer`` and the aspect of h x w."""
    if h >= w:
        return longer, max(1, round(w * longer / h))
    return max(1, round(h * longer / w)), longer


@dataclass
class PaintJobOptions(PaintOptions):
    """A painting request's options: the painter's, plus what to paint on and how large."""

    size: int = option(512, "longer side of the output, px", min=1, max=16384)
    canvas: str = option("black", "what to paint on: black (the reference's), white, #rrggbb, or an image file",
                         or_image="canvas_image")


def _check(options: PaintJobOptions, dims: dict[str, tuple[int, int]], max_side: int, label) -> None:
    if options.size > max_side:
        raise PaintRequestError(f"{label('size')} must be between 1 and {max_side}, got {options.size}")
    options.background = parse_colour(options.canvas, label("canvas"))
    try:
        options.validate()
    except ValueError as e:
        raise PaintRequestError(str(e)) from None
    if options.predict and options.brush not in shipped_predictor_brushes():
        have = ", ".join(shipped_predictor_brushes()) or "none yet"
        raise PaintRequestError(f"{label('predict')} needs the brush's stroke predictor and {label('brush')} "
                                f"'{options.brush}' has none ({shipped_predictor_file(options.brush).name} is not "
                                f"shipped; brushes with one: {have}; train one with `impasto train strokes`)")


def _predictor(ctx: RunContext, options: PaintJobOptions) -> Predictor | None:
    """With --predict, the brush's stroke predictor: the exported model (``stroke_BRUSH``) on the engine where the
    context has one (``ctx.infer``: on a server, the sidecar runs the served repository's model) and it is in the
    repository, else the shipped torch weights (loaded once per worker, kept in ``ctx.cache``)."""
    if not options.predict:
        return None
    if ctx.infer is not None and ctx.model_parameters is not None:
        name = engine_model_name(options.brush)
        try:
            parameters = ctx.model_parameters(name)
        except (RepositoryError, NotFound):  # the repository does not serve this brush's predictor
            parameters = None
        if parameters is not None:
            return engine_predictor(ctx.infer, options.brush, parameters)
    key = ("stroke_predictor", options.brush, ctx.device)
    if key not in ctx.cache:
        ctx.cache[key] = shipped_predictor(options.brush, ctx.device)
    return ctx.cache[key]


def _save_strokes(text: str, path: str) -> None:
    save_strokes(strokes_from_json(text, "strokes"), path)


def _save_animation(gif: bytes, path: str) -> None:
    from impasto.runtime.formats.animation import save_gif_as

    save_gif_as(gif, Path(path))


def _run(ctx: RunContext, images: dict[str, torch.Tensor], options: PaintJobOptions, wanted: set[str]) -> OpOutcome:
    import json

    from impasto.runtime.formats.animation import animation_gif
    from impasto.runtime.formats.svg import strokes_to_svg

    image, mask, canvas_image = images["image"], images.get("mask"), images.get("canvas_image")
    h, w = image.shape[1:]
    out_h, out_w = output_size(h, w, options.size)
    background = options.background
    start = starting_canvas(image, mask, canvas_image, background)
    result = paint(image, options, out_size=(out_h, out_w), mask=mask, start=start, style=images.get("style"),
                   progress=lambda p: ctx.report(p.level, p.levels, p.step, p.total, p.loss, p.canvas),
                   predictor=_predictor(ctx, options))
    strokes = StrokeFile(options.brush, result.strokes, out_w, out_h, background, result.levels)
    values: dict = {"image": result.canvas, "strokes": json.dumps(strokes.to_dict(), separators=(",", ":"))}
    if "svg" in wanted:
        values["svg"] = strokes_to_svg(options.brush, result.strokes, out_w, out_h, background if start is None else None)
    if "animation" in wanted:
        bg = background if start is None else resize(start, out_h, out_w)
        values["animation"] = animation_gif(options.brush, result.strokes, out_h, out_w, bg)
    return OpOutcome(values, {"width": out_w, "height": out_h, "strokes": int(result.strokes.shape[0])})


PAINT = register_op(OpSpec(
    name="paint",
    help="re-make an image as brush strokes (PNG, and optionally strokes JSON/npz, SVG, animation)",
    description="Stylized Neural Painting's progressive stroke search: level m cuts the canvas into m x m patches; "
    "strokes are added where the error is largest and optimised through a differentiable renderer. --predict lays "
    "the strokes instead with a trained stroke predictor, coarse to fine (Paint Transformer), in seconds; "
    "--refine N then gives each predicted stroke N steps of the search. The final picture is rendered from the "
    "strokes by the exact brush engine at --size.",
    options=PaintJobOptions,
    images=(
        ImageSlot("image", "the picture to paint (PNG, JPEG, ...; or example:astronaut, coffee, chelsea, rocket)"),
        ImageSlot("mask", "paint only where it is white (a selection); elsewhere the output is the image unchanged",
                  role="mask", required=False, same_size_as="image"),
        ImageSlot("style", "a style image: after each level, its strokes are restyled toward it (VGG-19 Gram "
                  "matrices)", role="style", required=False),
        ImageSlot("canvas_image", "paint on this picture instead of a plain colour", required=False,
                  same_size_as="image"),
    ),
    outputs=(
        Output("image", "image", "the painting, its longer side the size option", "image.png"),
        Output("strokes", "text", "the strokes (impasto.strokes v1 JSON, or numpy .npz; re-render with "
               "`impasto render`)", "strokes.json", "application/json",
               flags=(("--json", (".json",)), ("--npz", (".npz",))), place="file", save=_save_strokes),
        Output("svg", "text", "the strokes as SVG vector elements", "strokes.svg", "image/svg+xml",
               flags=(("--svg", (".svg",)),), on_request=True, place="vector"),
        Output("animation", "file", "an animation of the painting being laid down (.gif; .mp4 with "
               "imageio-ffmpeg)", "animation.gif", "image/gif", flags=(("--animate", (".gif", ".mp4")),),
               on_request=True, place="file", save=_save_animation),
    ),
    run=_run,
    check=_check,
    live=(("predict", True), ("refine", 0)),  # Krita's Live box: a predictor-only painting in about a second
    internal=lambda ctx: {"device": ctx.device, "vgg_weights": ctx.vgg_weights},
))

__all__ = ["MAX_STROKES", "PAINT", "PaintJobOptions", "PaintRequestError", "output_size", "parse_colour"]
