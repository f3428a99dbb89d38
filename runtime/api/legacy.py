"""The typed RPCs of the first three ops (Paint, Texture, Stylize), as aliases of the generic Run.

Existing pipelines send ``PaintRequest``/``TextureRequest``/``StylizeRequest`` and read
``PaintResult``/``ImageResult``. Each is translated here, once, into the generic
``OpRequest`` and back from the generic ``OpResult``, so the jobs themselves are the same
whichever way they were started. These messages are frozen: new ops exist only as ``Run``.
"""

from __future__ import annotations

from google.protobuf import json_format
from google.protobuf.message import Message

from impasto.runtime.api import studio_pb2 as pb

# the typed request message of each aliased op, and its image fields (same names as the op's slots)
REQUESTS: dict[str, tuple[type[Message], tuple[str, ...]]] = {
    "paint": (pb.PaintRequest, ("image", "mask", "style", "canvas_image")),
    "texture": (pb.TextureRequest, ("exemplar",)),
    "stylize": (pb.StylizeRequest, ("content", "style", "content_labels", "style_labels")),
}


def to_op_request(op: str, msg: Message) -> pb.OpRequest:
    """The generic request a typed one stands for (unset options stay unset: they take the op's defaults)."""
    _, images = REQUESTS[op]
    request = pb.OpRequest(op=op, preview_interval_ms=msg.preview_interval_ms)
    for name in images:
        if msg.HasField(name):
            request.images[name].CopyFrom(getattr(msg, name))
    options = json_format.MessageToDict(msg.options, preserving_proto_field_name=True)
    if op == "texture":
        options.update({k: getattr(msg, k) for k in ("width", "height") if getattr(msg, k)})
        if msg.tileable:
            options["tileable"] = True
    if op == "paint":
        request.outputs.extend(name for name in ("svg", "animation") if getattr(msg, name))
    if options:
        request.options.update(options)
    return request


def result_event(op: str, result: pb.OpResult) -> dict:
    """The final-event field a typed RPC's client expects, from the generic result."""
    n = result.numbers
    if op == "paint":
        paint = pb.PaintResult(image=result.images["image"], strokes_json=result.texts["strokes"],
                               width=int(n["width"]), height=int(n["height"]), strokes=int(n["strokes"]),
                               seconds=n["seconds"])
        if "svg" in result.texts:
            paint.svg = result.texts["svg"]
        if "animation" in result.files:
            paint.animation.CopyFrom(result.files["animation"])
        return {"result": paint}
    return {"image_result": pb.ImageResult(image=result.images["image"], width=int(n["width"]),
                                           height=int(n["height"]), seconds=n["seconds"])}
