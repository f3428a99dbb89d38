"""The Krita add-on inside real Krita: ``kritarunner`` under Xvfb, against a real impasto server.

The plugin is built with ``addons/build.py`` and unpacked into a fresh pykrita folder; a
driver script runs the plugin's document-side code (and the job thread the docker uses) in
Krita, and writes what it saw to a JSON file, since kritarunner always exits 0.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from serving import RunningServer, build_addons

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    shutil.which("kritarunner") is None or shutil.which("Xvfb") is None,
    reason="needs Debian's krita and xvfb packages (.ci/run installs them)",
)

DRIVER = r'''
import json, os, traceback

def __main__(args=None):
    params = json.load(open(os.environ["IMPASTO_KRITA_TEST"]))
    report = {}
    try:
        run(params, report)
    except Exception:
        report["crash"] = traceback.format_exc()
    with open(params["report"], "w") as f:
        json.dump(report, f)


def pattern(w, h):
    data = bytearray()
    for y in range(h):
        for x in range(w):
            data += bytes([(x * 255) // w, (y * 255) // h, 128, 255])  # B, G, R, A
    return bytes(data)


def run(params, report):
    from krita import Krita, Selection
    from impasto_krita import document
    from impasto_krita.impasto_http import ImpastoClient, ImpastoError
    from impasto_krita.jobs import JobThread

    w, h = 96, 64
    k = Krita.instance()
    doc = k.createDocument(w, h, "impasto test", "RGBA", "U8", "", 72.0)
    source = doc.createNode("photo", "paintlayer")
    doc.rootNode().addChildNode(source, None)
    original = pattern(w, h)
    source.setPixelData(original, 0, 0, w, h)
    doc.refreshProjection()
    client = ImpastoClient(params["url"])
    options = {"strokes": 14, "levels": 2, "size": max(w, h), "seed": 1}

    # 1. the whole layer goes out, a new layer comes back above it
    inputs = document.read_layer(doc, source, selection_only=False)
    result = client.paint(inputs.image(), options)
    name = document.layer_name("paint", options)
    layer = document.add_result_layer(doc, source, inputs, result["image"], name)
    pixels = bytes(layer.pixelData(0, 0, w, h))
    names = [n.name() for n in doc.rootNode().childNodes()]
    report["layer"] = {"names": names, "bytes": len(pixels), "changed": sum(pixels[i] != original[i] for i in range(0, len(pixels), 4)),
                       "bounds": [layer.bounds().width(), layer.bounds().height()]}

    # 2. a selection: the mask goes out, nothing outside it changes
    selection = Selection()
    selection.select(20, 10, 40, 30, 255)
    doc.setSelection(selection)
    inputs = document.read_layer(doc, source, selection_only=True)
    result = client.paint(inputs.image(), dict(options, strokes=100), mask=inputs.mask_image())
    layer = document.add_result_layer(doc, source, inputs, result["image"], "selection result")
    pixels = bytes(layer.pixelData(0, 0, w, h))
    outside_same, inside_changed = True, 0
    for y in range(h):
        for x in range(w):
            i = 4 * (y * w + x)
            inside = 20 <= x < 60 and 10 <= y < 40
            if inside:
                inside_changed += pixels[i:i + 4] != original[i:i + 4]
            elif pixels[i:i + 4] != original[i:i + 4]:
                outside_same = False
    report["selection"] = {"outside_identical": outside_same, "inside_changed": inside_changed, "mask_bytes": len(inputs.mask)}
    doc.setSelection(Selection())

    # 3. the server is down: the docker's job thread reports a message, no exception escapes
    messages = []
    thread = JobThread(ImpastoClient(params["dead_url"], timeout=5), lambda c: c.paint_events(inputs.image(), options))
    thread.failed.connect(messages.append)
    thread.run()  # in this thread: signals are delivered directly
    report["down"] = messages

    # 4. stylize with another layer of the document as the style image
    style_layer = doc.createNode("style", "paintlayer")
    doc.rootNode().addChildNode(style_layer, None)
    style_layer.setPixelData(bytes(reversed(original)), 0, 0, w, h)
    assert [n.name() for n in document.paint_layers(doc)][0] == "style"
    inputs = document.read_layer(doc, source, selection_only=False)
    styled = client.stylize(inputs.image(), document.layer_image(doc, style_layer),
                            options={"features": "random", "iterations": 1, "scales": 1})
    layer = document.add_result_layer(doc, source, inputs, styled["image"], document.layer_name("stylize", {}))
    report["stylize"] = {"name": layer.name(), "size": [styled["width"], styled["height"]]}

    # 5. a document impasto cannot work on says so
    doc16 = k.createDocument(8, 8, "sixteen", "RGBA", "U16", "", 72.0)
    try:
        document.check_document(doc16)
        report["u16"] = "accepted"
    except document.UnsupportedDocument as e:
        report["u16"] = str(e)
'''


@pytest.fixture(scope="module")
def server():
    s = RunningServer()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def display():
    """One Xvfb for the module; it names its display itself (``-displayfd``).

    ``xvfb-run -a`` guesses a free number from lock files and races a server still
    shutting down ("could not connect to display :99"), so it is not used.
    """
    read, write = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x860x24", "-nolisten", "tcp"],
                            pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(write)
    with os.fdopen(read) as f:
        number = f.readline().strip()
    if not number:
        xvfb.kill()
        pytest.fail(f"Xvfb did not start: {xvfb.stderr.read().decode()[-2000:]}")
    yield f":{number}"
    xvfb.terminate()
    xvfb.wait(timeout=30)


def krita_env(tmp_path: Path, display: str, **extra: str) -> dict[str, str]:
    """The environment Krita runs in: the module's X display, settings and data under ``tmp_path``.

    Krita embeds the system's Python and finds its home through PATH: a pyenv or venv python
    first on PATH would hide Debian's PyQt5 from it, so PATH is the system's.
    """
    env = {**os.environ, "DISPLAY": display, "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "HOME": str(tmp_path), "PATH": "/usr/local/bin:/usr/bin:/bin", **extra}
    env.pop("VIRTUAL_ENV", None)
    return env


def test_krita_plugin_paints_layers_keeps_outside_the_selection_and_reports_a_dead_server(server, display, tmp_path):
    build_addons(tmp_path / "dist")
    pykrita = tmp_path / "pykrita"
    with zipfile.ZipFile(tmp_path / "dist" / "impasto-krita.zip") as z:
        z.extractall(pykrita)
    (pykrita / "impasto_krita_test.py").write_text(DRIVER)
    report = tmp_path / "report.json"
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"url": server.http, "dead_url": "http://127.0.0.1:9", "report": str(report)}))
    env = krita_env(tmp_path, display, PYTHONPATH=str(pykrita), IMPASTO_KRITA_TEST=str(params))
    krita = subprocess.run(["kritarunner", "-s", "impasto_krita_test"], capture_output=True, text=True,
                           env=env, timeout=600, cwd=tmp_path)
    assert report.is_file(), f"kritarunner wrote no report:\n{krita.stdout[-3000:]}\n{krita.stderr[-3000:]}"
    seen = json.loads(report.read_text())
    assert "crash" not in seen, seen["crash"]
    layer = seen["layer"]
    assert layer["names"][-2:] == ["photo", "impasto paint (oil, 14 strokes)"]  # the result sits above its source
    assert layer["bytes"] == 96 * 64 * 4 and layer["bounds"] == [96, 64]
    assert layer["changed"] > 96 * 64 // 2  # painted, not copied
    selection = seen["selection"]
    assert selection["mask_bytes"] == 96 * 64
    assert selection["outside_identical"] is True
    assert selection["inside_changed"] > 40 * 30 // 4  # strokes landed inside
    assert len(seen["down"]) == 1 and "cannot reach the impasto server" in seen["down"][0]
    assert "8-bit RGBA" in seen["u16"] and "U16" in seen["u16"]
    assert seen["stylize"] == {"name": "impasto stylize (histogram)", "size": [96, 64]}


GUI_PROBE = r'''
import json, os, traceback
from krita import Extension, Krita
from PyQt5.QtCore import QTimer

PARAMS = json.load(open(os.environ["IMPASTO_KRITA_TEST"]))


def count(shapes):
    """Leaf shapes, looking inside groups (an imported SVG arrives as a group)."""
    total = 0
    for shape in shapes:
        children = shape.children() if hasattr(shape, "children") else []
        total += count(children) if children else 1
    return total


class Probe(Extension):
    """Drives the impasto docker in a full Krita window, as a user would, then quits."""

    def setup(self):
        pass

    def createActions(self, window):
        QTimer.singleShot(5000, self.start)

    def start(self):
        self.report = {}
        try:
            k = Krita.instance()
            self.window = k.activeWindow()
            self.doc = k.openDocument(PARAMS["image"])
            self.window.addView(self.doc)
            self.docker = next((d for d in k.dockers() if d.objectName() == "impasto_docker"), None)
            self.report["docker"] = self.docker is not None
            self.docker.show()
            self.docker.url.setText(PARAMS["url"])
            self.docker.connect_server()
            self.ticks = 0
            QTimer.singleShot(500, self.wait_connected)
        except Exception:
            self.fail()

    def wait_connected(self):
        self.ticks += 1
        if not self.docker.status.text().startswith("connected") and self.ticks < 60:
            QTimer.singleShot(500, self.wait_connected)
            return
        try:
            self.report["status"] = self.docker.status.text()
            self.report["ops"] = [self.docker.op.itemText(i) for i in range(self.docker.op.count())]
            self.doc.setActiveNode(self.doc.rootNode().childNodes()[0])
            self.docker.strokes.setValue(PARAMS["strokes"])
            self.docker.levels.setValue(PARAMS["levels"])
            self.docker.vector.setChecked(True)
            self.docker.run()
            self.ticks = 0
            QTimer.singleShot(500, self.wait_done)
        except Exception:
            self.fail()

    def wait_done(self):
        self.ticks += 1
        if self.docker.thread is not None and self.ticks < 600:
            QTimer.singleShot(500, self.wait_done)
            return
        try:
            self.report["message"] = self.docker.message.text()
            nodes = self.doc.rootNode().childNodes()
            self.report["layers"] = [(n.name(), n.type()) for n in nodes]
            vector = [n for n in nodes if n.type() == "vectorlayer"]
            self.report["vector_shapes"] = count(vector[0].shapes()) if vector else 0
            if PARAMS.get("shot"):
                QTimer.singleShot(1500, self.shoot)
                return
        except Exception:
            self.fail()
            return
        self.finish()

    def shoot(self):
        self.window.qwindow().grab().save(PARAMS["shot"])
        self.finish()

    def fail(self):
        self.report["crash"] = traceback.format_exc()
        self.finish()

    def finish(self):
        with open(PARAMS["report"], "w") as f:
            json.dump(self.report, f)
        for d in Krita.instance().documents():
            d.setModified(False)
        Krita.instance().action("file_quit").trigger()


Krita.instance().addExtension(Probe(Krita.instance()))
'''

PROBE_DESKTOP = """[Desktop Entry]
Type=Service
ServiceTypes=Krita/PythonPlugin
X-KDE-Library=impasto_gui_probe
X-Python-2-Compatible=false
Name=impasto GUI probe
"""


def test_docker_in_a_krita_window_paints_the_active_layer_with_a_vector_layer(server, display, tmp_path):
    """The full GUI: the docker connects, Run paints through its job thread, results land as layers.

    Also the path kritarunner cannot take (``addShapesFromSvg`` crashes there). Set
    IMPASTO_KRITA_SHOT=path.png to keep a screenshot of the window (docs/img/krita.png).
    """
    from impasto.runtime.images import load_image, resize, save_image

    build_addons(tmp_path / "dist")
    pykrita = tmp_path / "data" / "krita" / "pykrita"
    with zipfile.ZipFile(tmp_path / "dist" / "impasto-krita.zip") as z:
        z.extractall(pykrita)
    (pykrita / "impasto_gui_probe").mkdir()
    (pykrita / "impasto_gui_probe" / "__init__.py").write_text(GUI_PROBE)
    (pykrita / "impasto_gui_probe.desktop").write_text(PROBE_DESKTOP)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "kritarc").write_text("[python]\nenable_impasto_krita=true\nenable_impasto_gui_probe=true\n")
    image = tmp_path / "astronaut.png"
    save_image(resize(load_image("example:astronaut"), 320, 320), image)
    report = tmp_path / "report.json"
    strokes, levels = int(os.environ.get("IMPASTO_KRITA_STROKES", 60)), 3
    painted = strokes // 14 * 14  # rounded down to the 1 + 4 + 9 patches of three levels
    params = {"url": server.http, "image": str(image), "report": str(report), "strokes": strokes, "levels": levels,
              "shot": os.environ.get("IMPASTO_KRITA_SHOT", "")}
    (tmp_path / "params.json").write_text(json.dumps(params))
    env = krita_env(tmp_path, display, IMPASTO_KRITA_TEST=str(tmp_path / "params.json"))
    krita = subprocess.run(["krita", "--nosplash"], capture_output=True,
                           text=True, env=env, timeout=600, cwd=tmp_path)
    assert report.is_file(), f"Krita wrote no report:\n{krita.stdout[-3000:]}\n{krita.stderr[-3000:]}"
    seen = json.loads(report.read_text())
    assert "crash" not in seen, seen["crash"]
    assert seen["docker"] and seen["status"].startswith("connected: impasto")
    assert seen["ops"][:2] == ["paint", "stylize"]
    name = f"impasto paint (oil, {strokes} strokes)"
    assert seen["message"].startswith(f"done: layer '{name}'"), f"{seen['message']}\n{krita.stderr[-4000:]}"
    names = [n for n, kind in seen["layers"]]
    assert name in names and "impasto preview" not in names
    assert (f"{name} strokes", "vectorlayer") in [tuple(x) for x in seen["layers"]]
    assert seen["vector_shapes"] >= painted  # every stroke is a shape (plus the background)
