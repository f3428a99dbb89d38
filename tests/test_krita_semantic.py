"""GauGAN-style painting in real Krita: the ``semantic`` op's palette, snapping and live mode.

A full Krita window under Xvfb (as in ``tests/test_krita.py``) runs the docker against a real
``impasto serve`` with a tiny random-weight semantic model (``semantic_repo.py``). The probe
plugin drives the docker as a user would: the label table arrives as swatches built from
Capabilities, a swatch click sets the view's foreground colour, **Save as Krita palette**
writes a .gpl file, an anti-aliased label layer is snapped and sent and the picture lands as
a layer, and live mode runs again after a change and not without one (requests counted by
the server's /metrics). A second Krita start (``kritarunner``) then lists the saved palette
among its palette resources.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile

import pytest
from semantic_repo import MODEL, shared_semantic_repo
from serving import RunningServer, build_addons
from test_krita import PROBE_DESKTOP, display, krita_env  # noqa: F401  (display is a fixture)

pytestmark = pytest.mark.skipif(
    shutil.which("krita") is None or shutil.which("Xvfb") is None,
    reason="needs Debian's krita and xvfb packages (.ci/run installs them)",
)

PROBE = r'''
import json, os, time, traceback, urllib.request
from krita import Extension, Krita
from PyQt5.QtCore import QTimer

PARAMS = json.load(open(os.environ["IMPASTO_KRITA_TEST"]))
SKY, GRASS, TREE, ROCK = (0x75, 0xcb, 0xf0), (0x7b, 0xc8, 0x00), (0x28, 0x78, 0x28), (0x8c, 0x6e, 0x5a)


def label_pixels(w, h, blob):
    """Sky over grass with a tree: every edge blended over 3 px, as a soft brush leaves it (BGRA)."""
    data = bytearray()
    for y in range(h):
        for x in range(w):
            t = min(max((y - (h // 2 - 1)) / 3.0, 0.0), 1.0)  # sky -> grass
            c = [SKY[i] * (1 - t) + GRASS[i] * t for i in range(3)]
            d = ((x - w // 3) ** 2 + (y - h // 2) ** 2) ** 0.5
            u = min(max((blob - d) / 3.0, 0.0), 1.0)  # the tree's soft edge
            c = [round(c[i] * (1 - u) + TREE[i] * u) for i in range(3)]
            data += bytes([c[2], c[1], c[0], 255])
    return bytes(data)


def semantic_requests():
    """Jobs the server has been sent (its /metrics gauge ``impasto_jobs``, over all states)."""
    text = urllib.request.urlopen(PARAMS["url"] + "/metrics", timeout=10).read().decode()
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("impasto_jobs{")))


class Probe(Extension):
    """Steps through the docker as a user would (each ``yield`` waits that many ms), then quits."""

    def setup(self):
        pass

    def createActions(self, window):
        QTimer.singleShot(4000, self.begin)

    def begin(self):
        self.report = {}
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
        QTimer.singleShot(delay, self.next)

    def wait(self, done, seconds):
        end = time.monotonic() + seconds
        while not done() and time.monotonic() < end:
            yield 100

    def script(self):
        k = Krita.instance()
        window = k.activeWindow()
        w = h = PARAMS["side"]
        doc = k.createDocument(w, h, "labels", "RGBA", "U8", "", 72.0)
        window.addView(doc)
        layer = doc.createNode("labels", "paintlayer")
        doc.rootNode().addChildNode(layer, None)
        layer.setPixelData(label_pixels(w, h, w // 6), 0, 0, w, h)
        doc.refreshProjection()
        doc.setActiveNode(layer)
        yield 300
        docker = next(d for d in k.dockers() if d.objectName() == "impasto_docker")
        docker.show()
        docker.url.setText(PARAMS["url"])
        docker.connect_server()
        yield from self.wait(lambda: docker.status.text().startswith("connected"), 30)
        form = docker.choose_op("semantic")
        self.report["form"] = form.describe()

        # a swatch sets the foreground colour; the palette goes to Krita's resource folder
        view = window.activeView()
        by_name = {b.text(): b for b in form.palette_field.buttons}
        by_name["sky"].click()
        by_name["grass"].click()
        self.report["foreground"] = [round(v * 255) for v in view.foregroundColor().componentsOrdered()]
        self.report["swatch_status"] = form.palette_field.status.text()
        form.palette_field.save_button.click()
        self.report["saved"] = form.palette_field.status.text()

        # sizes off the stride and unpainted pixels are refused before sending, saying why
        other = k.createDocument(200, 100, "odd", "RGBA", "U8", "", 72.0)
        odd = other.createNode("odd", "paintlayer")
        other.rootNode().addChildNode(odd, None)
        try:
            form.request(other, odd)
            self.report["odd"] = "sent"
        except Exception as e:
            self.report["odd"] = str(e)
        empty = doc.createNode("empty", "paintlayer")
        doc.rootNode().addChildNode(empty, None)
        try:
            form.request(doc, empty)
            self.report["empty"] = "sent"
        except Exception as e:
            self.report["empty"] = str(e)
        empty.remove()
        other.close()
        doc.setActiveNode(layer)
        yield 200

        # Run: the anti-aliased layer is snapped, sent, and the picture arrives above it
        before = semantic_requests()
        docker.run()
        yield from self.wait(lambda: docker.thread is None, 60)
        self.report["message"] = docker.message.text()
        names = [n.name() for n in doc.rootNode().childNodes()]
        self.report["layers"] = names
        result = doc.nodeByName(names[-1])
        pixels = bytes(result.pixelData(0, 0, w, h))
        self.report["result"] = {"size": [result.bounds().width(), result.bounds().height()],
                                 "values": len(set(pixels[i:i + 4] for i in range(0, len(pixels), 4 * 97)))}
        self.report["run_requests"] = semantic_requests() - before
        if PARAMS.get("shot"):
            yield 1500
            window.qwindow().grab().save(PARAMS["shot"])

        # live mode: one run for the layer as it is, none while nothing changes, one after a change
        doc.setActiveNode(layer)
        before = semantic_requests()
        form.live.setChecked(True)
        yield from self.wait(lambda: docker.live.runs == 1 and docker.thread is None, 30)
        yield 2500  # five idle ticks
        self.report["live_first"] = [docker.live.runs, semantic_requests() - before]
        layer.setPixelData(label_pixels(w, h, w // 4), 0, 0, w, h)  # a bigger tree
        doc.refreshProjection()
        yield from self.wait(lambda: docker.live.runs == 2 and docker.thread is None, 30)
        yield 2500
        self.report["live_second"] = [docker.live.runs, semantic_requests() - before]
        self.report["live_message"] = docker.message.text()
        self.report["live_layers"] = [n.name() for n in doc.rootNode().childNodes()]
        form.live.setChecked(False)
        self.report["live_off"] = docker.live.active

    def finish(self):
        with open(PARAMS["report"], "w") as f:
            json.dump(self.report, f)
        for d in Krita.instance().documents():
            d.setModified(False)
        Krita.instance().action("file_quit").trigger()


Krita.instance().addExtension(Probe(Krita.instance()))
'''

LIST_PALETTES = r'''
import json, os

def __main__(args=None):
    from krita import Krita
    with open(os.environ["IMPASTO_KRITA_PALETTES"], "w") as f:
        json.dump(sorted(Krita.instance().resources("palette")), f)
'''


@pytest.fixture(scope="module")
def server():
    s = RunningServer("--repo", str(shared_semantic_repo()))
    yield s
    s.stop()


def _gpl(text: str) -> list[tuple[str, str]]:
    """(name, #rrggbb) of each colour line of a GIMP palette."""
    lines = text.splitlines()
    assert lines[0] == "GIMP Palette"
    found = []
    for line in lines[1:]:
        if not line.strip() or line.startswith("#") or ":" in line.split("\t")[0]:
            continue
        values, name = line.split("\t")
        r, g, b = (int(v) for v in values.split())
        found.append((name, f"#{r:02x}{g:02x}{b:02x}"))
    return found


def test_semantic_painting_in_krita_palette_snapping_and_live_mode(server, display, tmp_path):  # noqa: F811
    from impasto.train.data.labels import LANDSCAPE

    build_addons(tmp_path / "dist")
    pykrita = tmp_path / "data" / "krita" / "pykrita"
    with zipfile.ZipFile(tmp_path / "dist" / "impasto-krita.zip") as z:
        z.extractall(pykrita)
    (pykrita / "impasto_semantic_probe").mkdir()
    (pykrita / "impasto_semantic_probe" / "__init__.py").write_text(PROBE)
    (pykrita / "impasto_semantic_probe.desktop").write_text(PROBE_DESKTOP.replace("impasto_gui_probe", "impasto_semantic_probe"))
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "kritarc").write_text("[python]\nenable_impasto_krita=true\nenable_impasto_semantic_probe=true\n")
    report = tmp_path / "report.json"
    params = {"url": server.http, "report": str(report), "side": 256, "shot": os.environ.get("IMPASTO_KRITA_SHOT", "")}
    (tmp_path / "params.json").write_text(json.dumps(params))
    env = krita_env(tmp_path, display, IMPASTO_KRITA_TEST=str(tmp_path / "params.json"))
    krita = subprocess.run(["krita", "--nosplash"], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert report.is_file(), f"Krita wrote no report:\n{krita.stdout[-3000:]}\n{krita.stderr[-3000:]}"
    seen = json.loads(report.read_text())
    assert "crash" not in seen, seen["crash"] + krita.stderr[-3000:]

    # the swatches are the model's label table, from Capabilities
    table = [(label.name, label.color) for label in LANDSCAPE.labels]
    palette = seen["form"]["palette"]
    assert palette["model"] == MODEL and seen["form"]["live"] is True
    assert [(s["name"], s["color"]) for s in palette["swatches"]] == table
    assert palette["swatches"][4]["tooltip"] == "grass: #7bc800 (class 4)"
    assert seen["foreground"] == [0x7B, 0xC8, 0x00, 255] and seen["swatch_status"] == "painting with 'grass' (#7bc800)"
    gpl = tmp_path / "data" / "krita" / "palettes" / f"{MODEL}.gpl"
    assert seen["saved"].startswith(f"saved {gpl}")
    assert _gpl(gpl.read_text()) == table and f"Name: {MODEL}" in gpl.read_text()

    assert "is 200x100 px; model 'semantic_landscape' needs sides that are multiples of 32" in seen["odd"]
    assert "nearest: 192x96 or 224x96 or 192x128 or 224x128" in seen["odd"]
    assert seen["empty"].startswith("the label layer 'empty' has 65536 unpainted (transparent) pixels, the first at x=0, y=0")

    # Run: stray edge colours snapped (the server refuses any), the picture lands above the labels
    name = f"impasto semantic (0 seed, {MODEL})"
    assert seen["message"].startswith(f"done: layer '{name}'"), seen["message"]
    assert "stray label pixels snapped to the palette" in seen["message"]
    assert seen["layers"][-2:] == ["labels", name] and seen["run_requests"] == 1
    assert seen["result"]["size"] == [256, 256] and seen["result"]["values"] > 20  # a picture, not a flat fill

    # live: once for the layer as it was, not again while idle, once after the change; one live layer
    assert seen["live_first"] == [1, 1], seen
    assert seen["live_second"] == [2, 2], seen
    assert seen["live_message"].startswith("live: updated layer 'impasto semantic (live)'"), seen["live_message"]
    assert seen["live_layers"].count("impasto semantic (live)") == 1 and seen["live_off"] is False

    # Krita loads the saved palette as a resource at its next start
    pykrita_runner = tmp_path / "runner"
    pykrita_runner.mkdir()
    (pykrita_runner / "list_palettes.py").write_text(LIST_PALETTES)
    palettes = tmp_path / "data" / "kritarunner" / "palettes"
    palettes.mkdir(parents=True)
    shutil.copy(gpl, palettes)
    listing = tmp_path / "palettes.json"
    env = krita_env(tmp_path, display, PYTHONPATH=str(pykrita_runner), IMPASTO_KRITA_PALETTES=str(listing))
    runner = subprocess.run(["kritarunner", "-s", "list_palettes"], capture_output=True, text=True, env=env, timeout=120,
                            cwd=tmp_path)
    assert listing.is_file(), runner.stderr[-3000:]
    assert MODEL in json.loads(listing.read_text())
