"""Line-art colourisation in real Krita: colour under the line art, hints and a reference from layers, live mode.

A full Krita window under Xvfb (as in ``tests/test_krita_semantic.py``) runs the docker against
a real ``impasto serve`` whose repository holds the tiny random-weight colorize pair
(``colorize_repo.py``). Nothing in the plugin names the op: the colour's layer goes under the
line art because its output's place is ``under`` (and it is asked for because that output is
on request with that place), the line art goes out with its alpha because of its slot's role,
the hints layer goes out over the line art's rectangle because the slot is ``same_size_as``
the line art, and live mode watches the hints layer because of that slot's role.

One Krita start drives the docker as a user would:

- black lines on a transparent layer, a hints layer with a dot: the colour comes back as one
  layer right below the line art (none above it), the size of the document, opaque, colour
  under the lines too; the line art and hints layers are untouched; the dot changes the colour;
- a style reference as a file and as a layer with the same picture give the same colour,
  which differs from no reference;
- the active layer also chosen as the hints layer is refused, saying why;
- with a selection, the line art and the hints go out over its bounds and the colour lands there;
- with the colour output unticked, the coloured line art comes back above the line art instead;
- live mode: one run for the layers as they are, none while idle, one after a dot is painted on
  the hints layer (not the active layer), its result in place of the previous one, under the lines;
- black lines on an opaque white bottom layer (a scan): the colour goes below it and the scan
  is set to Multiply so the colour shows;
- round trips (read, run on the server, layer placed) at 256² and 512² are timed and printed.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from colorize_repo import MODEL, shared_colorize_repo
from PIL import Image
from serving import RunningServer, build_addons
from test_krita import PROBE_DESKTOP, display, krita_env  # noqa: F401  (display is a fixture)

pytestmark = pytest.mark.skipif(
    shutil.which("krita") is None or shutil.which("Xvfb") is None,
    reason="needs Debian's krita and xvfb packages (.ci/run installs them)",
)

PROBE = r'''
import json, math, os, time, traceback, urllib.request
from krita import Extension, Krita, Selection
from PyQt5.QtCore import QTimer
from PyQt5.QtGui import QImage

PARAMS = json.load(open(os.environ["IMPASTO_KRITA_TEST"]))


def line_art(w, h, opaque=False):
    """Black lines 3 px wide (BGRA): a frame, a box, a circle and a diagonal, on transparency or on white."""
    paper = b"\xff\xff\xff\xff" if opaque else b"\x00\x00\x00\x00"
    data = bytearray(paper * (w * h))
    s = w / 256.0

    def dot(x, y):
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                if 0 <= x + dx < w and 0 <= y + dy < h:
                    i = 4 * ((y + dy) * w + x + dx)
                    data[i:i + 4] = b"\x00\x00\x00\xff"

    for t in range(int(8 * s), int(248 * s)):
        dot(t, int(8 * s)), dot(t, int(247 * s)), dot(int(8 * s), t), dot(int(247 * s), t)
    for t in range(int(30 * s), int(120 * s)):
        dot(t, int(30 * s)), dot(t, int(120 * s)), dot(int(30 * s), t), dot(int(120 * s), t)
    for a in range(int(700 * s)):
        dot(int(180 * s + 45 * s * math.cos(a * 2 * math.pi / (700 * s))),
            int(170 * s + 45 * s * math.sin(a * 2 * math.pi / (700 * s))))
    for t in range(int(140 * s), int(240 * s)):
        dot(t, int(t - 130 * s))
    return bytes(data)


def disc(data, w, x0, y0, r, bgra):
    """A painted dot on a BGRA buffer (a hint)."""
    data = bytearray(data)
    for y in range(y0 - r, y0 + r + 1):
        for x in range(x0 - r, x0 + r + 1):
            if (x - x0) ** 2 + (y - y0) ** 2 <= r * r:
                data[4 * (y * w + x):4 * (y * w + x) + 4] = bgra
    return bytes(data)


def png_pixels(path, w, h):
    image = QImage(path).convertToFormat(QImage.Format_ARGB32)
    bits = image.constBits()
    bits.setsize(image.byteCount())
    return bytes(bits)[:4 * w * h]


def jobs_sent():
    """Jobs the server has been sent (its /metrics gauge ``impasto_jobs``, over all states)."""
    text = urllib.request.urlopen(PARAMS["url"] + "/metrics", timeout=10).read().decode()
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("impasto_jobs{")))


def stack(doc):
    """The document's layers, bottom to top (not the selection mask a selection leaves behind)."""
    return [n.name() for n in doc.rootNode().childNodes() if n.type() != "selectionmask"]


def mean_difference(a, b, w=None, box=None):
    """Mean absolute difference of the colour bytes (0-255), over ``box`` (x0, y0, x1, y1) if given."""
    if box is None:
        idx = range(0, len(a), 4 * 5)
    else:
        x0, y0, x1, y1 = box
        idx = [4 * (y * w + x) for y in range(y0, y1) for x in range(x0, x1)]
    return sum(abs(a[i + c] - b[i + c]) for i in idx for c in range(3)) / (3 * len(idx))


class Probe(Extension):
    """Steps through the docker as a user would (each ``yield`` waits that many ms), then quits."""

    def setup(self):
        pass

    def createActions(self, window):
        QTimer.singleShot(4000, self.begin)

    def begin(self):
        self.report = {}
        self.step = "start"
        self.steps = self.script()
        self.next()

    def next(self):
        try:
            delay = next(self.steps)
        except StopIteration:
            self.finish()
            return
        except Exception:
            self.report["crash"] = traceback.format_exc()
            self.finish()
            return
        with open(PARAMS["report"] + ".progress", "w") as f:  # where a hung Krita stopped
            f.write(self.step)
        QTimer.singleShot(delay, self.next)

    def wait(self, done, seconds):
        end = time.monotonic() + seconds
        while not done() and time.monotonic() < end:
            yield 50

    def layer(self, doc, name, pixels, above=None):
        node = doc.createNode(name, "paintlayer")
        doc.rootNode().addChildNode(node, above)
        node.setPixelData(pixels, 0, 0, doc.width(), doc.height())
        return node

    def run(self, docker, form, doc, source, key=None):
        """Run as the Run button does (on ``source`` of ``doc``); record the message, time and new layers."""
        before = {n.uniqueId().toString() for n in doc.rootNode().childNodes()}
        docker.run(form, doc, source)
        yield from self.wait(lambda: docker.thread is None, 60)
        new = [n for n in doc.rootNode().childNodes() if n.uniqueId().toString() not in before]
        self.last = {"message": docker.message.text(), "seconds": round(docker.last_seconds, 3),
                     "new": [n.name() for n in new], "stack": stack(doc)}
        self.new = new
        if key:
            self.report[key] = self.last

    def script(self):
        k = Krita.instance()
        window = k.activeWindow()
        w = h = 256
        doc = k.createDocument(w, h, "lines", "RGBA", "U8", "", 72.0)
        window.addView(doc)
        yield 500  # let the new view's canvas make its OpenGL context before its layers change (a Krita 5.1 crash)
        reference = self.layer(doc, "reference", png_pixels(PARAMS["reference"], w, h))
        reference.setVisible(False)
        drawn = line_art(w, h)
        lineart = self.layer(doc, "lineart", drawn)
        dotted = disc(bytes(4 * w * h), w, 75, 75, 6, b"\x20\x20\xf0\xff")  # a red dot inside the box
        hints = self.layer(doc, "hints", dotted)
        doc.refreshProjection()
        doc.setActiveNode(lineart)
        yield 300
        docker = next(d for d in k.dockers() if d.objectName() == "impasto_docker")
        docker.show()
        docker.url.setText(PARAMS["url"])
        docker.connect_server()
        yield from self.wait(lambda: docker.status.text().startswith("connected"), 30)
        form = docker.choose_op("colorize")
        self.report["form"] = form.describe()

        self.step = "1"
        # 1. line art + a hints layer: the colour comes under the line art
        form.set("hints", hints)
        request = form.request(doc, lineart)
        self.report["sent"] = {"images": sorted(request.images), "outputs": request.outputs,
                               "lineart_as_drawn": request.images["lineart"].data == drawn,
                               "hints_as_painted": request.images["hints"].data == dotted}
        yield from self.run(docker, form, doc, lineart, "hinted")
        colour = self.new[0]
        hinted = bytes(colour.pixelData(0, 0, w, h))
        ink = [i for i in range(0, len(drawn), 4) if drawn[i + 3] == 255]
        self.report["hinted"].update(
            bounds=[colour.bounds().x(), colour.bounds().y(), colour.bounds().width(), colour.bounds().height()],
            opaque=sum(hinted[i] == 255 for i in range(3, len(hinted), 4)),
            distinct=len({hinted[i:i + 3] for i in range(0, len(hinted), 4 * 7)}),
            black_under_lines=sum(hinted[i:i + 3] == b"\x00\x00\x00" for i in ink), ink=len(ink),
            lineart_untouched=bytes(lineart.pixelData(0, 0, w, h)) == drawn,
            hints_untouched=bytes(hints.pixelData(0, 0, w, h)) == dotted,
            blending=lineart.blendingMode())
        colour.remove()

        self.step = "2"
        # 2. without the hints layer: the dot's region takes another colour
        form.set("hints", None)
        yield from self.run(docker, form, doc, lineart, "plain")
        plain = bytes(self.new[0].pixelData(0, 0, w, h))
        self.new[0].remove()
        self.report["hint_effect"] = [round(mean_difference(hinted, plain, w, (60, 60, 90, 90)), 2),
                                      round(mean_difference(hinted, plain), 2)]

        self.step = "3"
        # 3. a style reference: a file and a layer with the same picture give the same colour
        styled = {}
        for key, value in (("file", PARAMS["reference_file"]), ("layer", reference)):
            form.set("style", value)
            yield from self.run(docker, form, doc, lineart, f"style_{key}")
            styled[key] = bytes(self.new[0].pixelData(0, 0, w, h))
            self.new[0].remove()
        form.set("style", None)
        self.report["style_effect"] = [round(mean_difference(styled["file"], plain), 2),
                                       round(mean_difference(styled["file"], styled["layer"]), 3)]

        self.step = "4"
        # 4. the active layer chosen as the hints layer: refused before anything is sent
        form.set("hints", hints)
        try:
            form.request(doc, hints)
            self.report["hints_as_source"] = "sent"
        except Exception as e:
            self.report["hints_as_source"] = str(e)

        self.step = "5"
        # 5. a selection: line art and hints go out over its bounds; the colour lands there
        selection = Selection()
        selection.select(40, 48, 128, 96, 255)
        doc.setSelection(selection)
        request = form.request(doc, lineart)
        self.report["selection_sent"] = [request.images[n].fields["width"] for n in ("lineart", "hints")] + \
                                        [request.images[n].fields["height"] for n in ("lineart", "hints")]
        yield from self.run(docker, form, doc, lineart, "selection")
        b = self.new[0].bounds()
        self.report["selection"]["bounds"] = [b.x(), b.y(), b.width(), b.height()]
        self.new[0].remove()
        doc.setSelection(Selection())

        self.step = "6"
        # 6. the colour output unticked: the coloured line art comes back above the line art instead
        form.set("output:color", False)
        yield from self.run(docker, form, doc, lineart, "composite")
        self.new[0].remove()
        form.set("output:color", True)

        self.step = "7"
        # 7. live mode: it watches the line art (active) and the hints layer, where the user paints
        doc.setActiveNode(lineart)
        yield 200
        before = jobs_sent()
        form.live.setChecked(True)
        self.report["live_watching"] = docker.message.text()
        yield from self.wait(lambda: docker.live.runs == 1 and docker.thread is None, 30)
        live_layer = doc.nodeByName("impasto colorize (live)")
        first = bytes(live_layer.pixelData(0, 0, w, h)) if live_layer else b""
        doc.setActiveNode(hints)  # the user goes painting on the hints layer
        yield 2500  # five idle ticks
        self.report["live_first"] = [docker.live.runs, jobs_sent() - before]
        changed = time.monotonic()
        hints.setPixelData(disc(dotted, w, 180, 170, 8, b"\xf0\x40\x20\xff"), 0, 0, w, h)  # a blue dot in the circle
        doc.refreshProjection()
        yield from self.wait(lambda: docker.live.runs == 2 and docker.thread is None, 30)
        self.report["live_latency"] = [round(time.monotonic() - changed, 3), round(docker.last_seconds, 3)]
        yield 2500
        self.report["live_second"] = [docker.live.runs, jobs_sent() - before]
        self.report["live_message"] = docker.message.text()
        self.report["live_stack"] = stack(doc)
        live_layer = doc.nodeByName("impasto colorize (live)")
        second = bytes(live_layer.pixelData(0, 0, w, h)) if live_layer else b""
        self.report["live_change"] = round(mean_difference(first, second, w, (165, 155, 195, 185)), 2) \
            if first and second else -1
        form.live.setChecked(False)
        self.report["live_off"] = docker.live.active
        form.set("hints", None)

        self.step = "8"
        # 8. a scan: black lines on the opaque white bottom layer; the colour goes below it, the scan multiplies
        scan = k.createDocument(w, h, "scan", "RGBA", "U8", "", 72.0)
        background = scan.rootNode().childNodes()[0]
        background.setPixelData(line_art(w, h, opaque=True), 0, 0, w, h)
        yield from self.run(docker, form, scan, background, "scan")
        self.report["scan"]["blending"] = background.blendingMode()
        scan.setModified(False)
        scan.close()

        self.step = "9"
        # 9. round trips at 256 and 512 px, with a hints layer
        times = {}
        for side in PARAMS["sides"]:
            timed = k.createDocument(side, side, f"timed {side}", "RGBA", "U8", "", 72.0)
            window.addView(timed)  # the active document: the form's layer choices are its layers
            yield 500  # its canvas's OpenGL context first (see above)
            art = self.layer(timed, "lineart", line_art(side, side))
            dots = self.layer(timed, "hints", disc(bytes(4 * side * side), side, side // 4, side // 4, 6, b"\x20\x20\xf0\xff"))
            form.set("hints", dots)
            times[side] = []
            for _ in range(PARAMS["repeats"]):
                yield from self.run(docker, form, timed, art)
                times[side].append(self.last["seconds"])
                for n in self.new:
                    n.remove()
            form.set("hints", None)
            timed.setModified(False)  # else closing asks whether to save it
            timed.close()
        self.report["times"] = times

    def finish(self):
        with open(PARAMS["report"], "w") as f:
            json.dump(self.report, f)
        for d in Krita.instance().documents():
            d.setModified(False)
        Krita.instance().action("file_quit").trigger()


Krita.instance().addExtension(Probe(Krita.instance()))
'''


def run_probe(url: str, folder: Path, display: str, sides=(256, 512), repeats: int = 3) -> dict:  # noqa: F811
    """Install the plugin and the probe in a fresh Krita profile under ``folder``, run Krita once; the report."""
    build_addons(folder / "dist")
    pykrita = folder / "data" / "krita" / "pykrita"
    with zipfile.ZipFile(folder / "dist" / "impasto-krita.zip") as z:
        z.extractall(pykrita)
    (pykrita / "impasto_colorize_probe").mkdir()
    (pykrita / "impasto_colorize_probe" / "__init__.py").write_text(PROBE)
    (pykrita / "impasto_colorize_probe.desktop").write_text(PROBE_DESKTOP.replace("impasto_gui_probe", "impasto_colorize_probe"))
    (folder / "config").mkdir()
    (folder / "config" / "kritarc").write_text("[python]\nenable_impasto_krita=true\nenable_impasto_colorize_probe=true\n")
    g = np.random.default_rng(0)  # a warm palette, document-sized so that it can be a layer too
    reference = np.concatenate([(g.random((256, 256, 3)) * [255, 120, 40]).astype(np.uint8),
                                np.full((256, 256, 1), 255, np.uint8)], 2)
    Image.fromarray(reference, "RGBA").save(folder / "reference.png")
    report = folder / "report.json"
    params = {"url": url, "report": str(report), "reference": str(folder / "reference.png"),
              "reference_file": str(folder / "reference.png"), "sides": list(sides), "repeats": repeats}
    (folder / "params.json").write_text(json.dumps(params))
    env = krita_env(folder, display, IMPASTO_KRITA_TEST=str(folder / "params.json"))
    krita = subprocess.run(["krita", "--nosplash"], capture_output=True, text=True, env=env, timeout=300, cwd=folder)
    assert report.is_file(), f"Krita wrote no report:\n{krita.stdout[-3000:]}\n{krita.stderr[-3000:]}"
    seen = json.loads(report.read_text())
    assert "crash" not in seen, seen["crash"] + krita.stderr[-3000:]
    return seen


@pytest.fixture(scope="module")
def server():
    s = RunningServer("--repo", str(shared_colorize_repo()))
    yield s
    s.stop()


def test_line_art_gets_its_colour_under_it_with_hints_a_reference_and_live_mode(server, display, tmp_path):  # noqa: F811
    started = time.monotonic()
    seen = run_probe(server.http, tmp_path, display)
    times = {side: statistics.median(values) for side, values in seen["times"].items()}
    print(f"krita {time.monotonic() - started:.1f} s; round trips (median of 3): "
          + ", ".join(f"{side}²: {t:.2f} s" for side, t in times.items())
          + f"; live: {seen['live_latency'][0]:.2f} s from the dot to the layer ({seen['live_latency'][1]:.2f} s of it the job)")

    # the form: line art is the active layer; hints and a reference a layer or a file; the colour asked for
    form = seen["form"]
    assert form["source"] == "lineart" and form["live"] is True and form["live_slot"] == "hints"
    assert {name: (f["role"], f["required"], f["items"]) for name, f in form["images"].items()} == {
        "style": ("style", False, ["none", "image file..."]), "hints": ("hints", False, ["none", "image file..."])}
    assert form["outputs"] == {"color": {"label": "color (layer under the source)", "checked": True,
                                         "help": "the colour alone, for a layer under the line art"}}
    assert form["options"]["model"]["default"] == MODEL

    # the layers go out as painted, with their alpha; the colour output is asked for
    assert seen["sent"] == {"images": ["hints", "lineart"], "outputs": ["color"], "lineart_as_drawn": True,
                            "hints_as_painted": True}

    # one layer, right below the line art, the document's size, opaque, colour under the lines too
    name = f"impasto colorize (no flat, {MODEL})"
    hinted = seen["hinted"]
    assert hinted["message"].startswith(f"done: layer '{name}' ("), hinted["message"]
    assert hinted["new"] == [name] and hinted["stack"] == ["Background", "reference", name, "lineart", "hints"]
    assert hinted["bounds"] == [0, 0, 256, 256] and hinted["opaque"] == 256 * 256
    assert hinted["distinct"] > 20, hinted  # colour, not one fill
    assert hinted["black_under_lines"] < hinted["ink"] * 0.1, hinted  # the colour alone: the lines are their own layer
    assert hinted["lineart_untouched"] and hinted["hints_untouched"] and hinted["blending"] == "normal"

    # the hint's dot changes the colour where it is; a reference changes it, the same from a file or a layer
    near, everywhere = seen["hint_effect"]
    assert near > 2.0 and near > everywhere, seen["hint_effect"]
    styled, file_vs_layer = seen["style_effect"]
    assert styled > 1.0 and file_vs_layer < 0.05, seen["style_effect"]
    for key in ("plain", "style_file", "style_layer"):
        assert seen[key]["new"] == [name] and seen[key]["stack"][-2:] == ["lineart", "hints"], seen[key]

    assert seen["hints_as_source"] == ("the active layer 'hints' is the hints image: select the line-art layer to "
                                       "send, or choose another layer for hints")

    # a selection: both layers go out over its bounds (the server checks that they match), the colour lands there
    assert seen["selection_sent"] == [128, 128, 96, 96]
    assert seen["selection"]["new"] == [name] and seen["selection"]["bounds"] == [40, 48, 128, 96], seen["selection"]

    # without the colour output: the coloured line art, above the line art
    assert seen["composite"]["new"] == [name] and seen["composite"]["stack"][-3:] == ["lineart", name, "hints"]

    # live: watching the line art and the hints layer; once as they are, not while idle, once after a dot
    assert seen["live_watching"] == "live: watching 'lineart' and 'hints'", seen["live_watching"]
    assert seen["live_first"] == [1, 1] and seen["live_second"] == [2, 2], seen
    assert seen["live_message"].startswith("live: updated layer 'impasto colorize (live)'"), seen["live_message"]
    assert seen["live_stack"] == ["Background", "reference", "impasto colorize (live)", "lineart", "hints"]
    assert seen["live_change"] > 2.0, seen["live_change"]  # the new dot's colour came through
    assert seen["live_off"] is False

    # a scan (lines on opaque white, the bottom layer): the colour goes below it and the scan multiplies
    scan = seen["scan"]
    assert scan["new"] == [name] and scan["stack"] == [name, "Background"], scan
    assert scan["blending"] == "multiply" and "'Background' set to Multiply" in scan["message"], scan
