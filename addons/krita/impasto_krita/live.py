"""Live mode: run an op again each time the layers it reads change (GauGAN's paint-and-see loop).

A :class:`LiveMode` watches some layers of one document: the source (a label layer, line
art) and, for an op that takes colour hints, the layer the user paints them on (asked for at
every tick, so choosing another hints layer in the form is followed). Every ``interval`` ms
(a ``QTimer`` on Krita's main thread) it takes a checksum of their pixels (CRC-32 of the
BGRA bytes: under a millisecond for 512 x 512) and asks the docker to run once the pixels
have changed since the last run **and** have stayed the same for one whole interval (a
pause in painting: no request per dab while a stroke goes on). It never starts a request
while one is in flight; the docker puts each live result in place of the previous one.

An op may declare **live settings** (Capabilities ``live``: option name -> JSON value), its fast
settings (paint: the stroke predictor alone, no search): each live run sends the form's options
with those over them, so a painting follows the layer in about a second; Run sends the form as it is.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable

from PyQt5.QtCore import QObject, QTimer
from PyQt5.QtWidgets import QCheckBox

INTERVAL_MS = 500


def live_settings(info: dict) -> dict:
    """The options a live run of the op ``info`` (its Capabilities entry) sets: ``live``, name -> JSON-encoded
    value, decoded, in the order of the op's options (a map keeps none); a value that is not JSON is left out
    (the run keeps the form's value)."""
    order = {o.get("name"): i for i, o in enumerate(info.get("options", []))}
    found = {}
    for name, text in sorted((info.get("live") or {}).items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])):
        try:
            found[str(name)] = json.loads(text)
        except (TypeError, ValueError):
            continue
    return found


def live_box(hints_slot: str | None, labels: bool, settings: dict) -> QCheckBox:
    """A form's Live check box: what it watches (the source, and the layer of ``hints_slot``: colour hints),
    and in its tooltip the live ``settings`` each live run sends."""
    watched = f"the {hints_slot} layer" if hints_slot else "the label layer" if labels else "the layer"
    box = QCheckBox(f"Live: run again when {watched} changes")
    box.setObjectName("live")
    sets = ", ".join(f"{name}={json.dumps(value)}" for name, value in settings.items())
    box.setToolTip("watches the active layer" + (f" and the layer chosen for {hints_slot}" if hints_slot else "")
                   + " while on; each change (after a pause in painting) replaces the live result layer; one "
                   "request at a time" + (f"; a live run sets {sets} (the fast settings), Run uses the form as it "
                                          "is" if sets else ""))
    return box


class LiveMode(QObject):
    """Watches ``node``'s pixels (and those of ``more()``'s layers) and calls ``run()`` after each
    settled change, while ``busy()`` is false."""

    def __init__(self, run: Callable[[], None], busy: Callable[[], bool], interval_ms: int = INTERVAL_MS, parent=None):
        super().__init__(parent)
        self.run = run
        self.busy = busy
        self.doc = self.node = None
        self.more: Callable[[], list] = list  # the other layers to watch, asked for at each tick
        self.sent: int | None = None  # checksum of the pixels of the last run
        self.seen: int | None = None  # checksum at the last tick
        self.runs = 0
        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.tick)

    @property
    def active(self) -> bool:
        return self.timer.isActive()

    def start(self, doc, node, more: Callable[[], list] | None = None) -> None:
        """Watch ``node`` of ``doc`` (the source) and the layers ``more()`` names; their current pixels
        count as a change (the first run comes after one interval)."""
        self.doc, self.node, self.more = doc, node, more or list
        self.sent = self.seen = None
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()
        self.doc = self.node = None
        self.more = list

    def watched(self) -> list:
        """The layers watched now: the source first, then the others (each once)."""
        nodes = [self.node]
        try:
            extra = self.more()
        except (AttributeError, RuntimeError):  # the document is gone
            extra = []
        for n in extra:
            if all(n.uniqueId() != m.uniqueId() for m in nodes):
                nodes.append(n)
        return nodes

    def checksum(self) -> int | None:
        crc = 0
        try:
            w, h = self.doc.width(), self.doc.height()
            for node in self.watched():
                crc = zlib.crc32(bytes(node.uniqueId().toByteArray()), crc)  # another hints layer is a change too
                crc = zlib.crc32(bytes(node.projectionPixelData(0, 0, w, h)), crc)
        except (AttributeError, RuntimeError):  # the layer or document is gone
            return None
        return crc

    def tick(self) -> None:
        if self.node is None or self.busy():
            return  # at most one request in flight: look again at the next tick
        crc = self.checksum()
        if crc is None:
            self.stop()
            return
        settled, self.seen = crc == self.seen, crc
        if crc == self.sent or not settled:
            return
        self.sent = crc
        self.runs += 1
        self.run()
