"""Geometric warps in real Krita: warp the active layer toward an exemplar, then "Apply the same warp".

A full Krita window under Xvfb (as in ``tests/test_krita_colorize.py``) runs the docker against a
real ``impasto serve`` whose repository holds the tiny random-weight warper (``warp_repo.py``).
Nothing in the plugin names the op: the ``apply`` slot is a file choice because its role is the
name of the op's ``flow`` file output, that output is asked for at every run (and placed beside
the document only when its box is ticked) so that its bytes can be kept, and **Apply the same
warp** sends them with each other selected layer.

One Krita start drives the docker as a user would:

- the form: the active layer is the content; geometry and texture exemplars are a file or a layer;
  the apply slot a flow file; warped and flow are extra outputs; the button is there;
- a photo layer warped toward a geometry layer: one new layer right above it, not the photo, the
  flow kept (an .npz); the same exemplar as a file gives the same layer;
- three layers selected in the Layers docker (the photo, a copy of it and line art on
  transparency) and Apply the same warp: two jobs (the photo made the field), a layer above each
  of the other two; the copy's is the photo's warp pixel for pixel (the drawing moves together),
  the line art's is the line art moved by the kept field (checked here with the op's own
  ``apply_flow``) and stays transparent around the lines;
- only the photo selected: nothing is sent, the message says to select the other layers;
- the kept flow saved as a file and chosen for the apply slot, with no geometry: Run on the line
  art gives the same layer as Apply the same warp; a file that is not a flow gets the server's
  message naming the field; no geometry and no flow gets a message naming both;
- the flow output ticked on a saved document: the .npz lands beside the document;
- round trips (read, run on the server, layer placed) at 256² and 512² are timed and printed,
  as is Apply the same warp on two layers at 512².
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
import torch
from impasto.runtime.formats.flow import read_flow
from impasto.runtime.ops.warp import apply_flow
from PIL import Image
from serving import RunningServer, build_addons
from test_krita import PROBE_DESKTOP, display, krita_env  # noqa: F401  (display is a fixture)
from warp_repo import shared_warp_repo

pytestmark = pytest.mark.skipif(
    shutil.which("krita") is None or shutil.which("Xvfb") is None,
    reason="needs Debian's krita and xvfb packages (.ci/run installs them)",
)
W, H = 160, 120  # not square, not a multiple of the warper's side

PROBE = r'''
import json, os, time, traceback, urllib.request
from krita import Extension, Krita
from PyQt5.QtCore import QItemSelection, QItemSelectionModel, QModelIndex, QTimer
from PyQt5.QtGui import QImage
from PyQt5.QtWidgets import QDockWidget, QTreeView

PARAMS = json.load(open(os.environ["IMPASTO_KRITA_TEST"]))
FOLDER = PARAMS["folder"]


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


def dump(node, name, w, h):
    """A layer's BGRA bytes into FOLDER/NAME.bgra, for the test to check with numpy."""
    with open(os.path.join(FOLDER, name + ".bgra"), "wb") as f:
        f.write(bytes(node.pixelData(0, 0, w, h)))


def select_layers(window, names):
    """Select the layers called ``names`` in the Layers docker, as Ctrl+click does; the view's selection after."""
    box = window.qwindow().findChild(QDockWidget, "KisLayerBox")
    tree = box.findChild(QTreeView)
    model = tree.model()
    chosen = QItemSelection()

    def walk(parent):
        for row in range(model.rowCount(parent)):
            index = model.index(row, 0, parent)
            if index.data() in names:
                chosen.select(index, index)
            walk(index)

    walk(QModelIndex())
    tree.selectionModel().select(chosen, QItemSelectionModel.ClearAndSelect | QItemSelectionModel.Rows)
    return sorted(n.name() for n in window.activeView().selectedNodes())


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

    def idle(self, docker):
        return docker.thread is None and not docker.pending

    def run(self, docker, form, doc, source, key=None):
        """Run as the Run button does (on ``source`` of ``doc``); record the message, time and new layers."""
        before = {n.uniqueId().toString() for n in doc.rootNode().childNodes()}
        docker.run(form, doc, source)
        yield from self.wait(lambda: self.idle(docker), 60)
        self.collect(docker, doc, before, key)

    def collect(self, docker, doc, before, key):
        new = [n for n in doc.rootNode().childNodes() if n.uniqueId().toString() not in before]
        self.last = {"message": docker.message.text(), "seconds": round(docker.last_seconds, 3),
                     "new": [n.name() for n in new], "stack": stack(doc)}
        self.new = new
        if key:
            self.report[key] = self.last

    def script(self):
        k = Krita.instance()
        window = k.activeWindow()
        w, h = PARAMS["size"]
        doc = k.createDocument(w, h, "drawing", "RGBA", "U8", "", 72.0)
        window.addView(doc)
        yield 500  # let the new view's canvas make its OpenGL context before its layers change
        geometry = self.layer(doc, "geometry", png_pixels(PARAMS["geometry"], w, h))
        geometry.setVisible(False)
        photo_pixels = png_pixels(PARAMS["photo"], w, h)
        photo = self.layer(doc, "photo", photo_pixels)
        copy = self.layer(doc, "photo copy", photo_pixels)
        copy.setVisible(False)
        lines_pixels = png_pixels(PARAMS["lines"], w, h)
        lines = self.layer(doc, "lines", lines_pixels)
        doc.refreshProjection()
        doc.setActiveNode(photo)
        yield 300
        docker = next(d for d in k.dockers() if d.objectName() == "impasto_docker")
        docker.show()
        docker.url.setText(PARAMS["url"])
        docker.connect_server()
        yield from self.wait(lambda: docker.status.text().startswith("connected"), 30)
        form = docker.choose_op("warp")
        self.report["form"] = form.describe()

        self.step = "1"
        # 1. the photo warped toward the geometry layer: a new layer above it; the flow kept
        form.set("geometry", geometry)
        request = form.request(doc, photo)
        self.report["sent"] = {"images": sorted(request.images), "outputs": request.outputs,
                               "kept_only": request.kept_only, "options": request.options,
                               "photo_as_painted": request.images["content"].data == photo_pixels}
        yield from self.run(docker, form, doc, photo, "warp")
        dump(self.new[0], "warped", w, h)
        self.report["warp"]["photo_untouched"] = bytes(photo.pixelData(0, 0, w, h)) == photo_pixels
        self.report["kept"] = sorted(form.kept)
        with open(os.path.join(FOLDER, "kept.npz"), "wb") as f:
            f.write(form.kept.get("apply", b""))
        warped_layer = self.new[0]

        self.step = "2"
        # 2. the same exemplar as a file: the same layer
        form.set("geometry", PARAMS["geometry"])
        yield from self.run(docker, form, doc, photo, "warp_file")
        dump(self.new[0], "warped_file", w, h)
        self.new[0].remove()
        form.set("geometry", geometry)

        self.step = "3"
        # 3. the photo, its copy and the line art selected: Apply the same warp runs on the other two
        self.report["selected"] = select_layers(window, {"photo", "photo copy", "lines"})
        before_jobs = jobs_sent()
        before = {n.uniqueId().toString() for n in doc.rootNode().childNodes()}
        if self.report["selected"] == ["lines", "photo", "photo copy"]:
            form.apply_button.click()  # what the user presses: the view's selected layers
        else:  # the Layers docker could not be driven: the same call with the layers named
            docker.apply_same(form, doc, [photo, copy, lines])
        yield from self.wait(lambda: self.idle(docker), 60)
        self.collect(docker, doc, before, "applied")
        self.report["applied"]["jobs"] = jobs_sent() - before_jobs
        self.report["applied"]["lines_untouched"] = bytes(lines.pixelData(0, 0, w, h)) == lines_pixels
        applied = {n.name(): n for n in self.new}
        for name, node in applied.items():
            dump(node, "applied " + name.split("(")[1].split(",")[0], w, h)
        for node in self.new:
            node.remove()

        self.step = "4"
        # 4. only the layer the field was made from: nothing to do, nothing sent
        before_jobs = jobs_sent()
        docker.apply_same(form, doc, [photo])
        self.report["only_source"] = [docker.message.text(), jobs_sent() - before_jobs, docker.thread is None]

        self.step = "5"
        # 5. the kept flow as a file in the apply slot, no geometry: Run on the line art = Apply the same warp
        form.set("geometry", None)
        form.set("apply", os.path.join(FOLDER, "kept.npz"))
        request = form.request(doc, lines)
        self.report["apply_sent"] = {"images": sorted(request.images), "outputs": request.outputs}
        yield from self.run(docker, form, doc, lines, "apply_file")
        dump(self.new[0], "apply_file", w, h)
        self.new[0].remove()
        with open(os.path.join(FOLDER, "bad.npz"), "wb") as f:
            f.write(b"not a flow at all")
        form.set("apply", os.path.join(FOLDER, "bad.npz"))
        yield from self.run(docker, form, doc, lines, "bad_flow")
        form.set("apply", None)
        yield from self.run(docker, form, doc, lines, "nothing")

        self.step = "6"
        # 6. the flow output ticked on a saved document: the .npz goes beside it
        doc.setBatchmode(True)
        doc.saveAs(os.path.join(FOLDER, "drawing.kra"))
        doc.setBatchmode(False)
        form.set("geometry", geometry)
        form.set("output:flow", True)
        yield from self.run(docker, form, doc, photo, "saved_flow")
        form.set("output:flow", False)
        for n in self.new:
            n.remove()
        warped_layer.remove()

        self.step = "7"
        # 7. round trips at 256 and 512 px; Apply the same warp on two layers at 512
        times = {}
        for side in PARAMS["sides"]:
            timed = k.createDocument(side, side, f"timed {side}", "RGBA", "U8", "", 72.0)
            window.addView(timed)  # the active document: the form's layer choices are its layers
            yield 500  # let the new view's canvas make its OpenGL context before its layers change
            big = png_pixels(PARAMS[f"photo_{side}"], side, side)
            shape = self.layer(timed, "geometry", png_pixels(PARAMS[f"geometry_{side}"], side, side))
            layers = [self.layer(timed, f"layer {i}", big) for i in range(3)]
            self.step = f"7 {side} runs"
            form.set("geometry", shape)
            times[side] = []
            for _ in range(PARAMS["repeats"]):
                yield from self.run(docker, form, timed, layers[0])
                times[side].append(self.last["seconds"])
                for n in self.new:
                    n.remove()
            started = time.monotonic()
            self.step = f"7 {side} apply"
            docker.apply_same(form, timed, layers)
            yield from self.wait(lambda: self.idle(docker), 120)
            times[f"apply {side}"] = [round(time.monotonic() - started, 3)]
            form.set("geometry", None)
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


def pictures(w: int, h: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A photo-like picture (gradients, a disc, a bar), a differently shaped exemplar, and black line
    art on transparency: uint8 RGBA, top row first."""
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    g = np.random.default_rng(seed)
    photo = np.stack([0.2 + 0.6 * x, 0.3 + 0.5 * y, 0.8 - 0.5 * x * y], -1)
    photo[np.hypot(x - 0.35, y - 0.4) < 0.18] = (0.9, 0.2, 0.1)
    photo[(np.abs(x - 0.7) < 0.06) & (y > 0.15)] = (0.1, 0.5, 0.2)
    photo += g.normal(0, 0.02, photo.shape)
    geometry = np.stack([0.5 + 0.4 * np.sin(9 * x + 3 * y), 0.5 + 0.4 * np.cos(7 * y), 0.4 + 0.3 * x], -1)
    geometry[np.abs(np.hypot(x - 0.6, y - 0.5) - 0.2) < 0.05] = (0.05, 0.05, 0.3)
    lines = np.zeros((h, w, 4))
    ink = (np.abs(np.hypot(x - 0.35, y - 0.4) - 0.18) < 0.012) | ((np.abs(x - 0.7) < 0.01) & (y > 0.15))
    lines[ink] = (0, 0, 0, 1)
    opaque = np.ones((h, w, 1))
    return {name: (255 * np.clip(a, 0, 1) + 0.5).astype(np.uint8) for name, a in
            (("photo", np.concatenate([photo, opaque], -1)), ("geometry", np.concatenate([geometry, opaque], -1)),
             ("lines", lines))}


def run_probe(url: str, folder: Path, display: str, sides=(256, 512), repeats: int = 3) -> dict:  # noqa: F811
    """Install the plugin and the probe in a fresh Krita profile under ``folder``, run Krita once; the report."""
    build_addons(folder / "dist")
    pykrita = folder / "data" / "krita" / "pykrita"
    with zipfile.ZipFile(folder / "dist" / "impasto-krita.zip") as z:
        z.extractall(pykrita)
    (pykrita / "impasto_warp_probe").mkdir()
    (pykrita / "impasto_warp_probe" / "__init__.py").write_text(PROBE)
    (pykrita / "impasto_warp_probe.desktop").write_text(PROBE_DESKTOP.replace("impasto_gui_probe", "impasto_warp_probe"))
    (folder / "config").mkdir()
    (folder / "config" / "kritarc").write_text("[python]\nenable_impasto_krita=true\nenable_impasto_warp_probe=true\n")
    params = {"url": url, "report": str(folder / "report.json"), "folder": str(folder), "size": [W, H],
              "sides": list(sides), "repeats": repeats}
    for name, picture in pictures(W, H).items():
        Image.fromarray(picture, "RGBA").save(folder / f"{name}.png")
        params[name] = str(folder / f"{name}.png")
    for side in sides:
        for name in ("photo", "geometry"):
            Image.fromarray(pictures(side, side, seed=side)[name], "RGBA").save(folder / f"{name}_{side}.png")
            params[f"{name}_{side}"] = str(folder / f"{name}_{side}.png")
    (folder / "params.json").write_text(json.dumps(params))
    env = krita_env(folder, display, IMPASTO_KRITA_TEST=str(folder / "params.json"))
    krita = subprocess.run(["krita", "--nosplash"], capture_output=True, text=True, env=env, timeout=400, cwd=folder)
    report = folder / "report.json"
    assert report.is_file(), f"Krita wrote no report:\n{krita.stdout[-3000:]}\n{krita.stderr[-3000:]}"
    seen = json.loads(report.read_text())
    assert "crash" not in seen, seen["crash"] + krita.stderr[-3000:]
    return seen


def layer(folder: Path, name: str) -> np.ndarray:
    """A dumped layer as (H, W, 4) RGBA float in [0, 1] (Krita keeps BGRA)."""
    bgra = np.frombuffer((folder / f"{name}.bgra").read_bytes(), np.uint8).reshape(H, W, 4)
    return bgra[..., [2, 1, 0, 3]].astype(np.float32) / 255


def premultiplied(rgba: np.ndarray) -> np.ndarray:
    return np.concatenate([rgba[..., :3] * rgba[..., 3:], rgba[..., 3:]], -1)


@pytest.fixture(scope="module")
def server():
    s = RunningServer("--repo", str(shared_warp_repo()))
    yield s
    s.stop()


def test_a_layer_warps_toward_an_exemplar_and_the_other_layers_follow_with_the_same_warp(server, display, tmp_path):  # noqa: F811
    started = time.monotonic()
    seen = run_probe(server.http, tmp_path, display)
    times = {side: statistics.median(values) for side, values in seen["times"].items()}
    print(f"krita {time.monotonic() - started:.1f} s; round trips (median of 3): "
          + ", ".join(f"{side}²: {t:.2f} s" for side, t in times.items() if not str(side).startswith("apply"))
          + f"; Apply the same warp on two layers at 512²: {times['apply 512']:.2f} s")

    # the form: the active layer is the content; geometry and texture a file or a layer; apply a flow file
    form = seen["form"]
    assert form["source"] == "content" and form["reuse"] == {"apply": "flow"}
    assert form["apply_button"] == "Apply the same warp"
    images = {name: (f["role"], f["widget"], f["items"]) for name, f in form["images"].items()}
    assert images == {"geometry": ("image", "choice", ["none", "image file..."]),
                      "style": ("style", "choice", ["none", "image file..."]),
                      "apply": ("flow", "file", ["none", "flow file..."])}, images
    assert {name: out["checked"] for name, out in form["outputs"].items()} == {"warped": False, "flow": False}
    assert form["outputs"]["flow"]["label"] == "flow (file)"

    # what goes out: the layer as painted, the exemplar; the flow asked for only to be kept
    assert seen["sent"] == {"images": ["content", "geometry"], "outputs": ["flow"], "kept_only": ["flow"],
                            "options": seen["sent"]["options"], "photo_as_painted": True}
    assert seen["sent"]["options"]["strength"] == 1.0

    # one new layer right above the photo, the photo untouched, the flow kept; the same from a file
    warp = seen["warp"]
    name = warp["new"][0]
    assert warp["message"].startswith(f"done: layer '{name}' ("), warp
    assert len(warp["new"]) == 1 and name.startswith("impasto warp (")
    assert warp["stack"][warp["stack"].index("photo") + 1] == name, warp["stack"]
    assert warp["photo_untouched"] and seen["kept"] == ["apply"]
    flow = read_flow((tmp_path / "kept.npz").read_bytes(), "kept")
    assert flow.ndim == 3 and flow.shape[0] == 2 and np.abs(flow).max() > 1e-3, flow.shape
    photo = np.asarray(Image.open(tmp_path / "photo.png"), np.float32) / 255
    warped = layer(tmp_path, "warped")
    assert np.abs(warped[..., :3] - photo[..., :3]).mean() > 2 / 255  # it moved
    assert warped[..., 3].min() == 1.0  # an opaque photo stays opaque
    assert np.abs(layer(tmp_path, "warped_file") - warped).max() <= 1 / 255, "a file and a layer differ"
    # the layer is the photo moved by the kept field (the op's own full-resolution warp)
    expected = apply_flow(torch.from_numpy(photo.transpose(2, 0, 1)), torch.from_numpy(flow)).numpy().transpose(1, 2, 0)
    assert np.abs(warped[..., :3] - expected[..., :3]).mean() < 1.5 / 255

    # Apply the same warp: the photo made the field, so its copy and the line art get a job each
    applied = seen["applied"]
    assert seen["selected"] == ["lines", "photo", "photo copy"], "the Layers docker selection did not take"
    assert applied["jobs"] == 2 and applied["lines_untouched"], applied
    assert sorted(applied["new"]) == ["impasto warp (lines, same flow)", "impasto warp (photo copy, same flow)"], applied
    stack = applied["stack"]
    assert stack[stack.index("photo copy") + 1] == "impasto warp (photo copy, same flow)", stack
    assert stack[stack.index("lines") + 1] == "impasto warp (lines, same flow)", stack
    assert applied["message"].startswith("done: 'impasto warp ("), applied["message"]
    # the copy moves exactly as the photo did: the drawing moves together
    assert np.abs(layer(tmp_path, "applied photo copy") - warped).max() <= 1 / 255
    # the line art moves by the same field and stays line art on transparency
    lines = np.asarray(Image.open(tmp_path / "lines.png"), np.float32) / 255
    moved = apply_flow(torch.from_numpy(lines.transpose(2, 0, 1)), torch.from_numpy(flow)).numpy().transpose(1, 2, 0)
    got = layer(tmp_path, "applied lines")
    assert np.abs(premultiplied(got) - premultiplied(moved)).mean() < 1 / 255
    assert (got[..., 3] == 0).mean() > 0.5 and (got[..., 3] > 0.5).sum() > 0.5 * (lines[..., 3] > 0.5).sum()
    assert np.abs(got[..., 3] - lines[..., 3]).sum() > 20, "the line art did not move"

    # only the layer the field came from: nothing sent, and the message says what to do
    message, jobs, idle = seen["only_source"]
    assert message == "select the other layers to warp (Ctrl+click them in the Layers docker)" and jobs == 0 and idle

    # the kept flow chosen as a file instead of a geometry exemplar: Run gives what Apply the same warp gave
    assert seen["apply_sent"] == {"images": ["apply", "content"], "outputs": ["flow"]}
    assert seen["apply_file"]["new"] == [seen["apply_file"]["new"][0]] and \
        seen["apply_file"]["message"].startswith("done: layer"), seen["apply_file"]
    assert np.abs(layer(tmp_path, "apply_file") - got).max() <= 1 / 255
    assert seen["bad_flow"]["new"] == [] and "apply is not a flow file" in seen["bad_flow"]["message"], seen["bad_flow"]
    nothing = seen["nothing"]
    assert nothing["new"] == [] and "geometry" in nothing["message"] and "apply" in nothing["message"], nothing

    # the flow output ticked on a saved document: the .npz beside the document, and the layer
    saved = seen["saved_flow"]
    beside = tmp_path / "drawing flow.npz"
    assert beside.is_file() and str(beside) in saved["message"], saved
    assert read_flow(beside.read_bytes(), "saved").shape == flow.shape
