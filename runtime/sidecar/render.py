"""The Render RPC: saved strokes (impasto.strokes JSON) re-rendered at any size, on a colour or a picture.

The server checks what it can without decoding or allocating (:func:`check_render`: sizes,
the colour, the canvas picture's header) and forwards the request to the sidecar, which
parses the strokes, decodes the picture and renders (:func:`render`). So a small file that
declares a huge picture, or a render that needs gigabytes, can only ever cost the sidecar
process (which the server restarts), never the server.
"""

from __future__ import annotations

from impasto.runtime.api import convert
from impasto.runtime.api import studio_pb2 as pb
from impasto.runtime.errors import elide
from impasto.runtime.ops.paint import MAX_STROKES

MAX_RENDER_PIXELS = 64 << 20  # 8192 x 8192: about 3 GB of float canvas and buffers at most
MAX_RENDER_STROKES = 10 * MAX_STROKES


def check_render(request: pb.RenderRequest, max_side: int) -> None:
    """Every check of a RenderRequest that needs neither the strokes parsed nor a pixel decoded."""
    from impasto.runtime.formats.strokes import MAX_JSON_CHARS
    from impasto.runtime.ops.paint_op import parse_colour

    if not request.strokes_json:
        raise convert.WireError("strokes_json: no strokes given (impasto.strokes JSON, as `impasto paint --json` writes)")
    if len(request.strokes_json) > MAX_JSON_CHARS:
        raise convert.WireError(f"strokes_json is {len(request.strokes_json) / 1e6:.0f} MB; "
                                f"the limit is {MAX_JSON_CHARS / 1e6:.0f} MB")
    if request.size > max_side:
        raise convert.WireError(f"size must be between 1 and {max_side}, got {request.size}")
    if request.canvas:
        parse_colour(elide(request.canvas, 64), "canvas")
    if request.HasField("canvas_image"):
        convert.image_dims(request.canvas_image, "canvas_image", max_side)  # the header only


def render(request: pb.RenderRequest, max_side: int) -> pb.RenderReply:
    """Parse, check and render a RenderRequest (in the sidecar, with its torch)."""
    from impasto.runtime.formats.strokes import strokes_from_json
    from impasto.runtime.images import resize
    from impasto.runtime.ops.paint_op import output_size, parse_colour
    from impasto.train.brushes import get_brush, render_strokes

    check_render(request, max_side)
    sf = strokes_from_json(request.strokes_json, "strokes_json")
    if sf.strokes.shape[0] > MAX_RENDER_STROKES:
        raise convert.WireError(f"strokes_json has {sf.strokes.shape[0]} strokes; the limit is {MAX_RENDER_STROKES}")
    longer = request.size or max(sf.width, sf.height)
    if not 1 <= longer <= max_side:
        raise convert.WireError(f"size must be between 1 and {max_side}, got {longer}")
    h, w = output_size(sf.height, sf.width, longer)
    if h * w > MAX_RENDER_PIXELS:
        raise convert.WireError(f"a {w}x{h} render is {h * w / 1e6:.0f} megapixels; the server renders at most "
                                f"{MAX_RENDER_PIXELS / 1e6:.0f} (render larger prints locally with `impasto render`)")
    background = sf.background
    if request.canvas:
        background = parse_colour(request.canvas, "canvas")
    if request.HasField("canvas_image"):
        background = resize(convert.image_to_tensor(request.canvas_image, "canvas_image", max_side), h, w)
    canvas = render_strokes(get_brush(sf.brush), sf.strokes, h, w, background)
    return pb.RenderReply(image=convert.png_image(canvas), width=w, height=h)
