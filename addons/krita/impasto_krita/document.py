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
    from .impasto_http import RawImage
except ImportError:  # pragma: no cover - the source tree keeps it in addons/common
    from impasto_http import RawImage


class UnsupportedDocument(Exception):
    """A document or layer impasto cannot work on; the message is for the user."""


@dataclass
class LayerInputs:
    """A layer's pixels over the whole document, and the selection as a mask, as they leave Krita."""

    width: int
    height: int
    pixels: bytes  # BGRA, 8 bits, row-major, the document's size
    mask: bytes | None  # one byte a pixel (255 = selected), or None without a selection

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


def read_layer(doc, node, selection_only: bool) -> LayerInputs:
    """The pixels of ``node`` across the document and, if asked, the selection as a mask."""
    check_document(doc)
    if node is None or node.type() not in ("paintlayer", "grouplayer", "filelayer", "clonelayer"):
        raise UnsupportedDocument("select a paint layer to send")
    w, h = doc.width(), doc.height()
    pixels = bytes(node.projectionPixelData(0, 0, w, h))
    mask = None
    if selection_only:
        selection = doc.selection()
        if selection is None:
            raise UnsupportedDocument("'selection only' is on, but nothing is selected")
        mask = bytes(selection.pixelData(0, 0, w, h))
    return LayerInputs(w, h, pixels, mask)


def paint_layers(doc) -> list:
    """The document's paint layers, top to bottom (candidates for a style image)."""
    found = []

    def walk(node):
        for child in reversed(node.childNodes()):
            if child.type() == "paintlayer" and not child.name().startswith("impasto preview"):
                found.append(child)
            walk(child)

    if doc is not None:
        walk(doc.rootNode())
    return found


def layer_image(doc, node) -> RawImage:
    """A layer's pixels across the document as a raw BGRA image (e.g. a style image)."""
    check_document(doc)
    w, h = doc.width(), doc.height()
    return RawImage(bytes(node.projectionPixelData(0, 0, w, h)), w, h, 4, order="ORDER_BGR")


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
    """A new paint layer above ``source`` holding the result (outside a selection: the source unchanged)."""
    pixels = _result_pixels(inputs, png)
    layer = _add_above(doc, source, doc.createNode(name, "paintlayer"))
    layer.setPixelData(pixels, 0, 0, inputs.width, inputs.height)
    doc.refreshProjection()
    return layer


def update_preview_layer(doc, source, inputs: LayerInputs, png: bytes, name: str = "impasto preview"):
    """Create or refresh the preview layer above ``source`` (a smaller preview is scaled up to fit)."""
    try:
        pixels = _result_pixels(inputs, png, scale=True)
    except UnsupportedDocument:
        return None  # an unreadable preview is skipped; the result is what counts
    layer = doc.nodeByName(name) or _add_above(doc, source, doc.createNode(name, "paintlayer"))
    layer.setPixelData(pixels, 0, 0, inputs.width, inputs.height)
    doc.refreshProjection()
    return layer


def remove_preview_layer(doc, name: str = "impasto preview") -> None:
    layer = doc.nodeByName(name) if doc is not None else None
    if layer is not None:
        layer.remove()
        doc.refreshProjection()


def add_vector_layer(doc, source, svg: str, name: str):
    """The strokes as a vector layer (SVG shapes) above ``source``."""
    layer = _add_above(doc, source, doc.createVectorLayer(name))
    layer.addShapesFromSvg(svg)
    return layer


def layer_name(op: str, options: dict) -> str:
    """A result layer's name from the op and its key options, e.g. 'impasto paint (oil, 500 strokes)'."""
    if op == "paint":
        return f"impasto paint ({options.get('brush', 'oil')}, {options.get('strokes', 500)} strokes)"
    if op == "texture":
        return f"impasto texture ({options.get('loss', 'histogram')})"
    return f"impasto {op} ({options.get('loss', 'histogram')})"
