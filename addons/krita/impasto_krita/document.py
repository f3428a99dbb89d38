"""The document side of the plugin: what goes out of Krita and what comes back into it.

No widgets here, and no threads: these functions touch Krita's API, so they run on Krita's
main thread (the docker calls them before and after the network work, which runs on a
worker thread). Pixels leave as Krita stores them (8-bit BGRA, the server converts) and
results come back as PNG, decoded with Qt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from PyQt5.QtCore import QByteArray
from PyQt5.QtGui import QImage

try:  # inside the built plugin
    from .impasto_http import RawImage, series_items
except ImportError:  # pragma: no cover - the source tree keeps it in addons/common
    from impasto_http import RawImage, series_items


SOURCE_TYPES = ("paintlayer", "grouplayer", "filelayer", "clonelayer")  # layers whose pixels can be sent


class UnsupportedDocument(Exception):
    """A document or layer impasto cannot work on; the message is for the user."""


@dataclass
class LayerInputs:
    """A layer's pixels, and the selection as a mask, as they leave Krita.

    Over the whole document, or (``crop``) over the selection's bounds from (``x``, ``y``):
    results are placed where the pixels came from.
    """

    width: int
    height: int
    pixels: bytes  # BGRA, 8 bits, row-major, width x height
    mask: bytes | None  # one byte a pixel (255 = selected), or None without a selection
    x: int = 0  # where the pixels start in the document
    y: int = 0

    def image(self) -> RawImage:
        return RawImage(self.pixels, self.width, self.height, 4, order="ORDER_BGR")

    def mask_image(self) -> RawImage | None:
        return None if self.mask is None else RawImage(self.mask, self.width, self.height, 1)


def check_document(doc) -> None:
    if doc is None:
        raise UnsupportedDocument("open a document first")
    if doc.colorModel() != "RGBA" or doc.colorDepth() != "U8":
        raise UnsupportedDocument(
            f"impasto works on 8-bit RGBA documents; this one is {doc.colorModel()} {doc.colorDepth()}. "
            "Convert it with Image > Convert Image Color Space (RGB/Alpha, 8-bit integer/channel)"
        )


def selection_bounds(doc) -> tuple[int, int, int, int] | None:
    """(x, y, width, height) of the document's selection within the document; None without one."""
    selection = doc.selection() if doc is not None else None
    if selection is None or selection.width() <= 0 or selection.height() <= 0:
        return None
    x0, y0 = max(0, selection.x()), max(0, selection.y())
    x1, y1 = min(doc.width(), selection.x() + selection.width()), min(doc.height(), selection.y() + selection.height())
    return (x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else None


_UNSELECTED = re.compile(rb"\x00+")


def clear_outside(pixels: bytes, mask: bytes) -> bytes:
    """BGRA ``pixels`` made fully transparent (all zero) where ``mask`` is 0 (runs found in C, as keep_outside)."""
    out = bytearray(pixels)
    for match in _UNSELECTED.finditer(mask):
        a, b = 4 * match.start(), 4 * match.end()
        out[a:b] = bytes(b - a)
    return bytes(out)


def read_layer(doc, node, selection_only: bool, crop: bool = False) -> LayerInputs:
    """The pixels of ``node`` across the document and, if asked, the selection as a mask.

    ``crop``: with a selection, only its bounds, transparent outside it (for layers drawn on
    transparency, such as a sketch: only the strokes inside the selection go out, and the
    results land over the selection); without one, the whole layer.
    """
    check_document(doc)
    if node is None or node.type() not in SOURCE_TYPES:
        raise UnsupportedDocument("select a paint layer to send")
    bounds = selection_bounds(doc) if crop else None
    if bounds is not None:
        x, y, w, h = bounds
        mask = bytes(doc.selection().pixelData(x, y, w, h))
        return LayerInputs(w, h, clear_outside(bytes(node.projectionPixelData(x, y, w, h)), mask), mask, x, y)
    w, h = doc.width(), doc.height()
    pixels = bytes(node.projectionPixelData(0, 0, w, h))
    mask = None
    if selection_only:
        selection = doc.selection()
        if selection is None:
            raise UnsupportedDocument("'selection only' is on, but nothing is selected")
        mask = bytes(selection.pixelData(0, 0, w, h))
    return LayerInputs(w, h, pixels, mask)


def document_inputs(doc) -> LayerInputs:
    """The document's size and nothing else, for an op that takes no layer (results still land here)."""
    check_document(doc)
    return LayerInputs(doc.width(), doc.height(), b"", None)


def paint_layers(doc) -> list:
    """The document's paint layers, top to bottom (candidates for an op's other images)."""
    found = []

    def walk(node):
        for child in reversed(node.childNodes()):
            if child.type() == "paintlayer" and not child.name().startswith("impasto preview"):
                found.append(child)
            walk(child)

    if doc is not None:
        walk(doc.rootNode())
    return found


def layer_image(doc, node, bounds: tuple[int, int, int, int] | None = None) -> RawImage:
    """A layer's pixels as a raw BGRA image (e.g. a style image): across the document, or over
    ``bounds`` (x, y, width, height: the rectangle the source went out with, for a slot that must
    match the source's size, such as colour hints beside line art cropped to a selection)."""
    check_document(doc)
    x, y, w, h = bounds if bounds is not None else (0, 0, doc.width(), doc.height())
    return RawImage(bytes(node.projectionPixelData(x, y, w, h)), w, h, 4, order="ORDER_BGR")


def decode_png(png: bytes, width: int, height: int, scale: bool = False) -> bytes:
    """PNG bytes -> BGRA bytes (Krita's layout) at width x height (exactly, or ``scale``d to it)."""
    image = QImage.fromData(QByteArray(png), "PNG")
    if image.isNull():
        raise UnsupportedDocument("the server's result is not a readable PNG")
    if image.width() != width or image.height() != height:
        if not scale:
            raise UnsupportedDocument(f"the server returned {image.width()}x{image.height()}, the document is {width}x{height}")
        image = image.scaled(width, height)
    image = image.convertToFormat(QImage.Format_ARGB32)  # stored as B, G, R, A bytes on little-endian machines
    bits = image.constBits()
    bits.setsize(image.byteCount())
    row = width * 4
    data = bytes(bits)
    if image.bytesPerLine() == row:
        return data
    return b"".join(data[y * image.bytesPerLine() : y * image.bytesPerLine() + row] for y in range(height))


_SELECTED = re.compile(rb"[^\x00]+")


def keep_outside(result: bytes, original: bytes, mask: bytes) -> bytes:
    """``result`` where the selection mask is non-zero, ``original`` byte for byte elsewhere.

    Works on runs of selected pixels (found by a regular expression, in C), so a 4K layer
    takes a fraction of a second in plain Python.
    """
    out = bytearray(original)
    for match in _SELECTED.finditer(mask):
        a, b = 4 * match.start(), 4 * match.end()
        out[a:b] = result[a:b]
    return bytes(out)


def _result_pixels(inputs: LayerInputs, png: bytes, scale: bool = False) -> bytes:
    """A result's BGRA pixels; with a selection, the source's own bytes outside it."""
    pixels = decode_png(png, inputs.width, inputs.height, scale)
    return keep_outside(pixels, inputs.pixels, inputs.mask) if inputs.mask is not None else pixels


def _add_above(doc, source, layer):
    """Insert ``layer`` right above ``source`` (at the top when there is no source)."""
    parent = source.parentNode() if source is not None and source.parentNode() is not None else doc.rootNode()
    parent.addChildNode(layer, source)
    return layer


def add_result_layer(doc, source, inputs: LayerInputs, png: bytes, name: str):
    """A new paint layer above ``source`` holding the result (outside a selection: the source unchanged).

    A result of another size than the pixels sent (its size option set by hand) is scaled to fit.
    """
    pixels = _result_pixels(inputs, png, scale=True)
    layer = _add_above(doc, source, doc.createNode(name, "paintlayer"))
    layer.setPixelData(pixels, inputs.x, inputs.y, inputs.width, inputs.height)
    doc.refreshProjection()
    return layer


def _add_below(doc, source, layer):
    """Insert ``layer`` right below ``source`` in its parent (at the bottom when there is no source).

    Krita's API only inserts above a node: below the sibling under ``source``; when ``source`` is
    the lowest, ``layer`` goes above it and ``source`` is moved back above ``layer``.
    """
    parent = source.parentNode() if source is not None and source.parentNode() is not None else doc.rootNode()
    siblings = parent.childNodes()  # bottom to top
    at = next((i for i, n in enumerate(siblings) if source is not None and n.uniqueId() == source.uniqueId()), None)
    if at is None:  # no source: the bottom of the stack
        if not siblings:
            parent.addChildNode(layer, None)
            return layer
        at, source = 0, siblings[0]
    if at > 0:
        parent.addChildNode(layer, siblings[at - 1])
    else:
        parent.addChildNode(layer, source)
        source.remove()
        parent.addChildNode(source, layer)
    return layer


def _opaque(node, inputs: LayerInputs) -> bool:
    """Whether ``node`` has no transparent pixel where the pixels were sent from (lines on paper, not on transparency)."""
    data = bytes(node.projectionPixelData(inputs.x, inputs.y, inputs.width, inputs.height))
    return bool(data) and min(data[3::4]) == 255


def add_under_layer(doc, source, inputs: LayerInputs, png: bytes, name: str, notes: list | None = None):
    """A new paint layer right below ``source`` holding the result, aligned with the pixels sent
    (transparent outside a selection): colour under line art.

    A source with no transparent pixel (black lines on white paper) would hide the layer under
    it: its blending mode becomes Multiply (said in ``notes``), so the colour shows through the
    paper and the lines stay on top.
    """
    pixels = decode_png(png, inputs.width, inputs.height, scale=True)
    if inputs.mask is not None:
        pixels = keep_outside(pixels, bytes(len(pixels)), inputs.mask)
    layer = _add_below(doc, source, doc.createNode(name, "paintlayer"))
    layer.setPixelData(pixels, inputs.x, inputs.y, inputs.width, inputs.height)
    if source is not None and source.blendingMode() == "normal" and _opaque(source, inputs):
        source.setBlendingMode("multiply")
        if notes is not None:
            notes.append(f"'{source.name()}' set to Multiply so the colour under it shows")
    doc.refreshProjection()
    return layer


def update_preview_layer(doc, source, inputs: LayerInputs, png: bytes, name: str = "impasto preview"):
    """Create or refresh the preview layer above ``source`` (a smaller preview is scaled up to fit)."""
    try:
        pixels = _result_pixels(inputs, png, scale=True)
    except UnsupportedDocument:
        return None  # an unreadable preview is skipped; the result is what counts
    layer = doc.nodeByName(name) or _add_above(doc, source, doc.createNode(name, "paintlayer"))
    layer.setPixelData(pixels, inputs.x, inputs.y, inputs.width, inputs.height)
    doc.refreshProjection()
    return layer


def remove_preview_layer(doc, name: str = "impasto preview") -> None:
    layer = doc.nodeByName(name) if doc is not None else None
    if layer is not None:
        layer.remove()
        doc.refreshProjection()


def remove_layers_named(doc, name: str) -> int:
    """Remove every layer called ``name``, in groups too (a previous live result); how many went."""
    found = []

    def walk(node):
        for child in node.childNodes():
            (found.append if child.name() == name else walk)(child)

    if doc is not None:
        walk(doc.rootNode())
    for node in found:
        node.remove()
    gone = len(found)
    if gone:
        doc.refreshProjection()
    return gone


def add_vector_layer(doc, source, svg: str, name: str):
    """The strokes as a vector layer (SVG shapes) above ``source``."""
    layer = _add_above(doc, source, doc.createVectorLayer(name))
    layer.addShapesFromSvg(svg)
    return layer


def add_image_layer(doc, source, png: bytes, name: str, x: int = 0, y: int = 0):
    """A new paint layer above ``source`` holding an image at its own size, from (x, y) (a texture)."""
    image = QImage.fromData(QByteArray(png), "PNG")
    if image.isNull():
        raise UnsupportedDocument("the server's result is not a readable PNG")
    w, h = image.width(), image.height()
    layer = _add_above(doc, source, doc.createNode(name, "paintlayer"))
    layer.setPixelData(decode_png(png, w, h), x, y, w, h)
    doc.refreshProjection()
    return layer


def save_beside(doc, data: bytes, name: str) -> str | None:
    """Write ``data`` next to the document's file as 'DOCUMENT NAME'; None for an unsaved document."""
    path = doc.fileName() if doc is not None else ""
    if not path:
        return None
    folder, _, base = path.replace("\\", "/").rpartition("/")
    target = f"{folder}/{base.rsplit('.', 1)[0]} {name}" if folder else f"{base.rsplit('.', 1)[0]} {name}"
    with open(target, "wb") as f:
        f.write(data)
    return target


def place_results(doc, source, inputs: LayerInputs, outputs: list[dict], result: dict, name: str, wanted=(),
                  notes: list | None = None) -> list[str]:
    """Put each output of a finished job where its ``place`` says (Capabilities' OutputInfo).

    ``layer``: a new paint layer above the source, the size of the pixels sent, the source
    unchanged outside a selection; ``under``: a new paint layer right below the source, aligned
    the same way (colour under line art: :func:`add_under_layer`); when one comes, the job's
    ``layer`` images are left out (above the source they would hide it and the layer under it,
    and they show what the two already show together); ``texture``: a new paint layer at the image's own size;
    ``vector``: a vector layer of the SVG text; ``file``: saved next to the document when
    asked for (an on-request output), else left out. The first layer gets ``name``, others
    ``name`` and the output's name. A series output with several items (``series``: e.g.
    variations) gives a layer each, numbered from 1, item 1 on top and the others below it
    in order, all above the source. Returns what was added, in order: layer names and paths.
    """
    added = []
    under = any(o.get("place") == "under" and o.get("kind", "image") == "image" and o["name"] in result.get("images", {})
                and (not o.get("on_request") or o["name"] in wanted) for o in outputs)
    for out in outputs:
        out_name, kind, place = out["name"], out.get("kind", "image"), out.get("place", "layer")
        if out.get("on_request") and out_name not in wanted:
            continue
        if under and place == "layer" and kind == "image":
            continue
        items = series_items(result.get(kind + "s", {}), out_name, bool(out.get("series")))
        base = name if not added else f"{name} {out_name}"
        for index, value in items:  # each right above the source: item 1 ends on top
            label = f"{base} {index}" if len(items) > 1 else base
            if place == "layer" and kind == "image":
                added.append(add_result_layer(doc, source, inputs, value, label).name())
            elif place == "under" and kind == "image":
                added.append(add_under_layer(doc, source, inputs, value, label, notes).name())
            elif place == "texture" and kind == "image":
                added.append(add_image_layer(doc, source, value, label, inputs.x, inputs.y).name())
            elif place == "vector" and kind == "text":
                added.append(add_vector_layer(doc, source, value, f"{name} {out_name}" + (f" {index}" if index > 1 else "")).name())
            elif place == "file" and out.get("on_request"):
                data = value.encode() if isinstance(value, str) else value
                saved = save_beside(doc, data, series_filename(out.get("filename") or out_name, index))
                if saved:
                    added.append(saved)
    return added


def series_filename(filename: str, index: int) -> str:
    """Item ``index`` of a series as a file: ``image.png``, ``image.2.png``, ... (as the server names them)."""
    stem, dot, suffix = filename.rpartition(".")
    return filename if index == 1 else f"{stem}.{index}.{suffix}" if dot and stem else f"{filename}.{index}"
