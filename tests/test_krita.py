"""The Krita add-on inside real Krita: ``kritarunner`` under Xvfb, against a real impasto server.

The plugin is built with ``addons/build.py`` and unpacked into a fresh pykrita folder; a
driver script runs the plugin's forms (built from the server's Capabilities), its
document-side code and the job thread the docker uses in Krita, and writes what it saw to a
JSON file, since kritarunner always exits 0.

The server also runs ``posterize``, an op this module registers through ``IMPASTO_OPS``:
an op the plugin has never heard of, which must show up in the docker with its form and
run from it. Every form is checked against Capabilities (the op list; each image slot,
option and optional output: widget, default, range, choices, help).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import urllib.request
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
import json, os, time, traceback

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
    from impasto_krita.forms import OpForm, job_ops, snake_keys
    from impasto_krita.impasto_http import ImpastoClient
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

    # the forms, built from the server's Capabilities as the docker builds them
    caps = snake_keys(client.capabilities())
    forms = {info["name"]: OpForm(info, documents=lambda: doc) for info in job_ops(caps)}
    report["forms"] = {name: form.describe() for name, form in forms.items()}

    report["seconds"] = {}

    def run_form(form):
        started = time.monotonic()
        request = form.request(doc, source)
        result = client.finish(request.start(client))  # what the docker's job thread does
        added = request.place(doc, result)  # what the docker does with the result
        report["seconds"][added[0]] = round(time.monotonic() - started, 1)
        return request, added, doc.nodeByName(added[0])

    # 1. the whole layer goes out, a new layer comes back above it
    paint = forms["paint"]
    for name, value in {"strokes": 14, "levels": 2, "seed": 1}.items():
        paint.set(name, value)
    request, added, layer = run_form(paint)
    pixels = bytes(layer.pixelData(0, 0, w, h))
    report["layer"] = {"names": [n.name() for n in doc.rootNode().childNodes()], "added": added,
                       "images": sorted(request.images), "options": request.options, "bytes": len(pixels),
                       "changed": sum(pixels[i] != original[i] for i in range(0, len(pixels), 4)),
                       "bounds": [layer.bounds().width(), layer.bounds().height()]}

    # 2. a selection: the mask goes out, nothing outside it changes
    selection = Selection()
    selection.select(20, 10, 40, 30, 255)
    doc.setSelection(selection)
    paint.set("mask", True)  # "Selection only"
    paint.set("strokes", 40)  # all in the selection's few patches: the search's cost grows with strokes per patch
    request, added, layer = run_form(paint)
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
    report["selection"] = {"outside_identical": outside_same, "inside_changed": inside_changed,
                           "mask_bytes": len(request.inputs.mask), "images": sorted(request.images), "layer": added[0]}
    doc.setSelection(Selection())
    paint.set("mask", False)

    # 3. the server is down: the docker's job thread reports a message, no exception escapes
    messages = []
    request = paint.request(doc, source)
    thread = JobThread(ImpastoClient(params["dead_url"], timeout=5), request.start)
    thread.failed.connect(messages.append)
    thread.run()  # in this thread: signals are delivered directly
    report["down"] = messages

    # 4. stylize with another layer of the document as the style image
    style_layer = doc.createNode("style", "paintlayer")
    doc.rootNode().addChildNode(style_layer, None)
    style_layer.setPixelData(bytes(reversed(original)), 0, 0, w, h)
    assert [n.name() for n in document.paint_layers(doc)][0] == "style"
    stylize = forms["stylize"]
    try:  # a required image slot left empty
        stylize.request(doc, source)
        report["no_style"] = "accepted"
    except document.UnsupportedDocument as e:
        report["no_style"] = str(e)
    stylize.set("style", style_layer)
    for name, value in {"features": "random", "iterations": 1, "scales": 1}.items():
        stylize.set(name, value)
    request, added, layer = run_form(stylize)
    report["stylize"] = {"name": layer.name(), "images": sorted(request.images),
                         "size": [layer.bounds().width(), layer.bounds().height()]}

    # 5. texture: the active layer is the exemplar; width and height follow the document
    texture = forms["texture"]
    for name, value in {"features": "random", "iterations": 1, "scales": 1}.items():
        texture.set(name, value)
    request, added, layer = run_form(texture)
    report["texture"] = {"name": layer.name(), "images": sorted(request.images),
                         "options": [request.options["width"], request.options["height"]],
                         "size": [layer.bounds().width(), layer.bounds().height()]}

    # 6. an op this plugin has never heard of (registered on the server by the test) runs from its form
    poster = forms["posterize"]
    poster.set("tones", 3)
    request, added, layer = run_form(poster)
    pixels = bytes(layer.pixelData(0, 0, w, h))
    report["posterize"] = {"name": layer.name(), "images": sorted(request.images), "options": request.options,
                           "values": sorted({pixels[i] for i in range(len(pixels)) if i % 4 != 3})}

    # 7. a document impasto cannot work on says so
    doc16 = k.createDocument(8, 8, "sixteen", "RGBA", "U16", "", 72.0)
    try:
        paint.request(doc16, doc16.activeNode())
        report["u16"] = "accepted"
    except document.UnsupportedDocument as e:
        report["u16"] = str(e)
'''

TOY_OP = '''
"""posterize: an op the Krita plugin does not know, registered through IMPASTO_OPS by tests/test_krita.py."""
from dataclasses import dataclass

import torch

from impasto.runtime.ops.registry import ImageSlot, OpOutcome, OpSpec, Output, register_op
from impasto.train.options import option


@dataclass
class PosterizeOptions:
    tones: int = option(4, "tones per channel", min=2, max=32)
    invert: bool = option(False, "invert the tones")
    channels: str = option("rgb", "posterize each channel, or the grey level", choices=("rgb", "grey"))
    gamma: float = option(1.0, "gamma before posterizing", min=0.1, max=10.0)
    note: str = option("", "free text, ignored")


def _run(ctx, images, options, wanted):
    x = images["image"].clamp(0, 1) ** options.gamma
    if options.channels == "grey":
        x = x.mean(0, keepdim=True).expand(3, -1, -1)
    y = torch.round(x * (options.tones - 1)) / (options.tones - 1)
    if options.invert:
        y = 1 - y
    ctx.report(1, 1, 1, 1, 0.0, lambda: y)
    return OpOutcome({"image": y}, {"width": y.shape[2], "height": y.shape[1]})


register_op(OpSpec(
    name="posterize", help="a few tones per channel (a test op)", description="Posterize: an op for tests.",
    options=PosterizeOptions,
    images=(ImageSlot("image", "the picture"), ImageSlot("overlay", "a second picture, unused", required=False)),
    outputs=(Output("image", "image", "the posterized picture", "image.png"),),
    run=_run,
))
'''


def _range(info: dict) -> tuple:
    """(min, max) as Capabilities means them: protobuf's JSON leaves zeros out."""
    lo, hi = info.get("min"), info.get("max")
    if lo is None and hi is None:
        return None, None
    lo = float(lo or 0)
    return lo, None if hi is None or float(hi) <= lo else float(hi)


def _default(kind: str, text: str):
    text = text or ""
    if kind == "int":
        return int(float(text or 0))
    if kind == "float":
        return float(text or 0)
    if kind == "bool":
        return text.lower() in ("true", "1", "yes")
    return text


def assert_forms_agree(forms: dict, capabilities: dict) -> None:
    """Every job op has a form, and each form's widgets say what its Capabilities entry says."""
    ops = [op for op in capabilities["ops"] if op.get("job")]
    assert list(forms) == [op["name"] for op in ops]
    assert "render" not in forms  # a synchronous RPC, not an operation to run on a layer
    for op in ops:
        form = forms[op["name"]]
        slots = op.get("images", [])
        required = [s for s in slots if s.get("required")]
        source = next((s for s in required if s.get("role", "image") == "image"), required[0] if required else None)
        assert form["source"] == (source["name"] if source else None), op["name"]
        want_images = {}
        files = {o["name"] for o in op.get("outputs", []) if o.get("kind") == "file"}
        for slot in slots:
            if slot is source:
                continue
            role, needed = slot.get("role", "image"), bool(slot.get("required"))
            entry = {"role": role, "required": needed, "help": slot.get("help", "")}
            if role == "mask":
                entry["widget"] = "selection"
            elif role in files:  # takes back a file the op gives (warp's apply: its flow .npz)
                entry.update(widget="file", items=["none", f"{role} file..."], takes=role)
            else:
                entry.update(widget="choice", items=([] if needed else ["none"]) + ["image file..."])
            want_images[slot["name"]] = entry
        assert form["images"] == want_images, op["name"]
        assert list(form["options"]) == [o["name"] for o in op.get("options", [])], op["name"]
        for o in op.get("options", []):
            got, kind = form["options"][o["name"]], o.get("type", "string")
            where = f"{op['name']}.{o['name']}"
            assert got["type"] == kind and got["help"] == o.get("help", ""), where
            widget = {"int": {"QSpinBox", "QDoubleSpinBox"}, "float": {"QDoubleSpinBox"}, "bool": {"QCheckBox"}}.get(
                kind, {"QComboBox"} if o.get("choices") else {"QLineEdit"})
            assert got["widget"] in widget, (where, got)
            default = _default(kind, o.get("default", ""))
            if kind == "float":
                assert math.isclose(got["default"], default, rel_tol=1e-9, abs_tol=1e-12), (where, got, o)
            else:
                assert got["default"] == default and type(got["default"]) is type(default), (where, got, o)
            assert got["choices"] == list(o.get("choices", [])), where
            if kind in ("int", "float"):
                for have, want in zip((got["min"], got["max"]), _range(o)):
                    assert (have is None) == (want is None), (where, got, o)
                    if want is not None:
                        assert math.isclose(have, want, rel_tol=1e-12), (where, got, o)
        optional = [out for out in op.get("outputs", []) if out.get("on_request")]
        assert list(form["outputs"]) == [out["name"] for out in optional], op["name"]
        for out in optional:
            assert form["outputs"][out["name"]]["help"] == out.get("help", "")
            assert form["outputs"][out["name"]]["checked"] is (out.get("place") == "under")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real server with one more op than the plugin has ever seen: ``posterize``, from IMPASTO_OPS."""
    ops = tmp_path_factory.mktemp("ops")
    (ops / "impasto_krita_toy_op.py").write_text(TOY_OP)
    path = os.pathsep.join(p for p in (str(ops), os.environ.get("PYTHONPATH", "")) if p)
    s = RunningServer(env={"IMPASTO_OPS": "impasto_krita_toy_op", "PYTHONPATH": path})
    yield s
    s.stop()


def capabilities(server) -> dict:
    with urllib.request.urlopen(server.http + "/v1/capabilities", timeout=30) as r:
        return json.loads(r.read())


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
    print("seconds per run:", seen["seconds"])
    assert_forms_agree(seen["forms"], capabilities(server))
    assert {"paint", "stylize", "texture", "posterize"} <= set(seen["forms"])

    layer = seen["layer"]
    assert layer["names"][-2:] == ["photo", "impasto paint (oil, 14 strokes)"]  # the result sits above its source
    assert layer["added"] == ["impasto paint (oil, 14 strokes)"]  # strokes (place: file) not asked for: nothing else
    assert layer["images"] == ["image"] and layer["options"]["size"] == 96  # size follows the document
    assert layer["options"]["strokes"] == 14 and layer["options"]["brush"] == "oil"
    assert layer["bytes"] == 96 * 64 * 4 and layer["bounds"] == [96, 64]
    assert layer["changed"] > 96 * 64 // 2  # painted, not copied
    selection = seen["selection"]
    assert selection["images"] == ["image", "mask"] and selection["mask_bytes"] == 96 * 64
    assert selection["outside_identical"] is True
    assert selection["inside_changed"] > 40 * 30 // 4  # strokes landed inside
    assert len(seen["down"]) == 1 and "cannot reach the impasto server" in seen["down"][0]
    assert seen["no_style"] == "stylize needs a style image: pick a file or a layer"
    assert seen["stylize"] == {"name": "impasto stylize (histogram, 1 iterations)", "images": ["content", "style"],
                               "size": [96, 64]}
    assert seen["texture"] == {"name": "impasto texture (histogram, 1 iterations)", "images": ["exemplar"],
                               "options": [96, 64], "size": [96, 64]}
    poster = seen["posterize"]
    assert poster["name"] == "impasto posterize (3 tones, no invert)" and poster["images"] == ["image"]
    assert poster["options"] == {"tones": 3, "invert": False, "channels": "rgb", "gamma": 1.0, "note": ""}
    assert len(poster["values"]) == 3 and {0, 255} < set(poster["values"])  # three tones a channel
    assert "8-bit RGBA" in seen["u16"] and "U16" in seen["u16"]


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
            self.docker.run()  # not connected yet: says so
            self.report["unconnected"] = self.docker.message.text()
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
            self.report["ops"] = self.docker.ops()
            self.report["forms"] = {name: self.docker.choose_op(name).describe() for name in self.docker.ops()}
            self.doc.setActiveNode(self.doc.rootNode().childNodes()[0])
            form = self.docker.choose_op("paint")
            form.set("strokes", PARAMS["strokes"])
            form.set("levels", PARAMS["levels"])
            form.set("svg", True)  # the strokes as a vector layer too
            self.report["shown"] = self.docker.stack.currentWidget() is form
            self.docker.run()
            self.ticks = 0
            QTimer.singleShot(500, self.wait_done)
        except Exception:
            self.fail()

    def wait_done(self):
        self.ticks += 1
        if self.docker.thread is not None and self.ticks < 1200:  # 10 minutes (a 420-stroke screenshot on a busy CPU)
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
    """The full GUI: the docker connects, builds its forms from Capabilities, Run paints through
    its job thread, results land as layers.

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
                           text=True, env=env, timeout=900, cwd=tmp_path)
    assert report.is_file(), f"Krita wrote no report:\n{krita.stdout[-3000:]}\n{krita.stderr[-3000:]}"
    seen = json.loads(report.read_text())
    assert "crash" not in seen, seen["crash"]
    assert seen["docker"] and seen["status"].startswith("connected: impasto")
    assert seen["unconnected"].startswith("press Connect first")
    assert {"paint", "stylize", "texture", "posterize"} <= set(seen["ops"])
    assert_forms_agree(seen["forms"], capabilities(server))  # the docker's forms say what Capabilities says
    assert seen["shown"] is True
    name = f"impasto paint (oil, {strokes} strokes)"
    assert seen["message"].startswith(f"done: layer '{name}'"), f"{seen['message']}\n{krita.stderr[-4000:]}"
    names = [n for n, kind in seen["layers"]]
    assert name in names and "impasto preview" not in names
    assert (f"{name} svg", "vectorlayer") in [tuple(x) for x in seen["layers"]]
    assert seen["vector_shapes"] >= painted  # every stroke is a shape (plus the background)
