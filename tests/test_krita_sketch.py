"""Sketch to image in real Krita: strokes on a transparent layer become K picture layers above it.

``kritarunner`` under Xvfb (as in ``tests/test_krita.py``) drives the plugin's forms, built as
the docker builds them from a real ``impasto serve`` whose repository holds a tiny
random-weight ``sketch_demo`` model (``sketch_repo.py``: classes sea, snow, city). Nothing in
the plugin names the op: the class drop-down comes from the model's ``impasto.classes``,
the layers from the output's ``series`` flag, the alpha from the slot's role.

- white strokes on a transparent layer go out with their alpha (flattened onto white they
  would be an empty sketch, which the server refuses) and three variations come back as three
  layers above the sketch, numbered in order, each a picture and each different;
- the class option is an editable drop-down of the model's classes, and follows the model option;
- with a selection, only its bounds go out (transparent outside it) and the pictures land
  over it, transparent where it is not selected;
- an empty layer gets the server's message.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import zipfile

import pytest
from serving import RunningServer, build_addons
from sketch_repo import CLASSES, MODEL, shared_sketch_repo
from test_krita import display, krita_env  # noqa: F401  (display is a fixture)

pytestmark = pytest.mark.skipif(
    shutil.which("kritarunner") is None or shutil.which("Xvfb") is None,
    reason="needs Debian's krita and xvfb packages (.ci/run installs them)",
)

DRIVER = r'''
import json, math, os, time, traceback

def __main__(args=None):
    params = json.load(open(os.environ["IMPASTO_KRITA_TEST"]))
    report = {}
    try:
        run(params, report)
    except Exception:
        report["crash"] = traceback.format_exc()
    with open(params["report"], "w") as f:
        json.dump(report, f)


def strokes(w, h):
    """White strokes, 2 px wide, on transparency (BGRA): a house (box and roof) and a sun."""
    data = bytearray(4 * w * h)

    def dot(x, y):
        for dx in (0, 1):
            for dy in (0, 1):
                if 0 <= x + dx < w and 0 <= y + dy < h:
                    i = 4 * ((y + dy) * w + x + dx)
                    data[i:i + 4] = b"\xff\xff\xff\xff"

    for x in range(20, 70):
        dot(x, 50), dot(x, 88)
    for y in range(50, 89):
        dot(20, y), dot(69, y)
    for t in range(26):
        dot(20 + t, 50 - t), dot(69 - t, 50 - t)
    for a in range(200):
        dot(int(100 + 14 * math.cos(a * math.pi / 100)), int(26 + 14 * math.sin(a * math.pi / 100)))
    return bytes(data)


def layer_pixels(node, w, h):
    return bytes(node.pixelData(0, 0, w, h))


def mean_difference(a, b):
    return sum(abs(a[i] - b[i]) for i in range(0, len(a), 7) if i % 4 != 3) / (len(a) / 7 * 0.75)


def run(params, report):
    from krita import Krita, Selection
    from impasto_krita.forms import OpForm, job_ops, snake_keys
    from impasto_krita.impasto_http import ImpastoClient, ImpastoError

    w, h = 128, 96
    k = Krita.instance()
    doc = k.createDocument(w, h, "sketch test", "RGBA", "U8", "", 72.0)
    sketch = doc.createNode("sketch", "paintlayer")
    doc.rootNode().addChildNode(sketch, None)
    drawn = strokes(w, h)
    sketch.setPixelData(drawn, 0, 0, w, h)
    doc.refreshProjection()
    client = ImpastoClient(params["url"])

    caps = snake_keys(client.capabilities())
    forms = {info["name"]: OpForm(info, documents=lambda: doc, models=caps.get("models", []))
             for info in job_ops(caps)}
    form = forms["sketch"]
    report["form"] = form.describe()
    report["ops"] = list(forms)

    # the class list follows the model option
    form.set("model", "no_such_model")
    report["classes_other_model"] = form.options["class_name"].choices()
    form.set("model", params["model"])
    report["classes_back"] = form.options["class_name"].choices()

    def run_form():
        started = time.monotonic()
        request = form.request(doc, sketch)
        result = client.finish(request.start(client))  # what the docker's job thread does
        added = request.place(doc, result)  # what the docker does with the result
        return request, result, added, round(time.monotonic() - started, 2)

    # 1. the whole layer, three variations of class "snow"
    form.set("class_name", "snow")
    form.set("seed", 4)
    form.set("variations", 3)
    request, result, added, seconds = run_form()
    sent = request.images["sketch"]
    pixels = sent.data
    report["sent"] = {"fields": sent.fields, "transparent": sum(pixels[i] == 0 for i in range(3, len(pixels), 4)),
                      "white": sum(pixels[i:i + 4] == b"\xff\xff\xff\xff" for i in range(0, len(pixels), 4)),
                      "same_as_layer": pixels == drawn, "options": request.options}
    layers = [doc.nodeByName(name) for name in added]
    values = [layer_pixels(n, w, h) for n in layers]
    report["whole"] = {
        "added": added, "result_keys": sorted(result["images"]), "seconds": seconds,
        "stack": [n.name() for n in doc.rootNode().childNodes()],
        "bounds": [[n.bounds().x(), n.bounds().y(), n.bounds().width(), n.bounds().height()] for n in layers],
        "opaque": [sum(v[i] == 255 for i in range(3, len(v), 4)) for v in values],
        "distinct": [len({v[i:i + 3] for i in range(0, len(v), 4 * 13)}) for v in values],
        "differences": [round(mean_difference(values[a], values[b]), 2) for a, b in ((0, 1), (0, 2), (1, 2))],
        "sketch_untouched": layer_pixels(sketch, w, h) == drawn,
    }
    for n in layers:
        n.remove()

    # 2. a selection of two rectangles: its bounds go out, transparent outside it; pictures land over it
    selection = Selection()
    selection.select(16, 16, 64, 64, 255)
    more = Selection()
    more.select(80, 16, 32, 32, 255)
    selection.add(more)
    doc.setSelection(selection)
    form.set("variations", 2)
    request, result, added, seconds = run_form()
    inputs = request.inputs
    sent = request.images["sketch"].data
    outside = [(x, y) for y in range(16, 80) for x in range(80, 112) if y >= 48]  # in the bounds, not selected
    report["selection"] = {
        "inputs": [inputs.x, inputs.y, inputs.width, inputs.height], "added": added, "seconds": seconds,
        "sent_outside_clear": all(sent[4 * ((y - 16) * 96 + x - 16) + 3] == 0 for x, y in outside),
        "sent_white": sum(sent[i:i + 4] == b"\xff\xff\xff\xff" for i in range(0, len(sent), 4)),
    }
    results = []
    for name in added:
        node = doc.nodeByName(name)
        v = layer_pixels(node, w, h)
        alpha = lambda x, y: v[4 * (y * w + x) + 3]
        results.append({"bounds": [node.bounds().x(), node.bounds().y(), node.bounds().width(), node.bounds().height()],
                        "inside_opaque": all(alpha(x, y) == 255 for y in range(16, 80, 3) for x in range(16, 80, 3)),
                        "corner_opaque": alpha(100, 20) == 255,
                        "unselected_clear": all(alpha(x, y) == 0 for x, y in outside),
                        "beyond_clear": all(alpha(x, y) == 0 for y in range(h) for x in range(w)
                                            if not (16 <= x < 112 and 16 <= y < 80))})
    report["selection"]["results"] = results
    doc.setSelection(Selection())

    # 3. an empty layer: the server's message
    empty = doc.createNode("empty", "paintlayer")
    doc.rootNode().addChildNode(empty, None)
    try:
        client.finish(form.request(doc, empty).start(client))
        report["empty"] = "accepted"
    except ImpastoError as e:
        report["empty"] = str(e)
'''


@pytest.fixture(scope="module")
def server():
    s = RunningServer("--repo", str(shared_sketch_repo()))
    yield s
    s.stop()


def test_sketch_layer_becomes_numbered_variation_layers_with_a_class_drop_down(server, display, tmp_path):  # noqa: F811
    build_addons(tmp_path / "dist")
    pykrita = tmp_path / "pykrita"
    with zipfile.ZipFile(tmp_path / "dist" / "impasto-krita.zip") as z:
        z.extractall(pykrita)
    (pykrita / "impasto_krita_sketch_test.py").write_text(DRIVER)
    report = tmp_path / "report.json"
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"url": server.http, "report": str(report), "model": MODEL}))
    env = krita_env(tmp_path, display, PYTHONPATH=str(pykrita), IMPASTO_KRITA_TEST=str(params))
    started = time.monotonic()
    krita = subprocess.run(["kritarunner", "-s", "impasto_krita_sketch_test"], capture_output=True, text=True,
                           env=env, timeout=600, cwd=tmp_path)
    assert report.is_file(), f"kritarunner wrote no report:\n{krita.stdout[-3000:]}\n{krita.stderr[-3000:]}"
    seen = json.loads(report.read_text())
    assert "crash" not in seen, seen["crash"]
    print(f"kritarunner {time.monotonic() - started:.1f} s; runs: {seen['whole']['seconds']} s (3 variations), "
          f"{seen['selection']['seconds']} s (2, selection)")

    # the form: the sketch is the active layer; the class an editable drop-down of the model's classes
    form = seen["form"]
    assert {"sketch", "sketchify"} <= set(seen["ops"])
    assert form["source"] == "sketch" and form["images"] == {} and form["outputs"] == {}
    classes = form["options"]["class_name"]
    assert classes["widget"] == "QComboBox" and classes["from_model"] is True
    assert classes["choices"] == list(CLASSES) and classes["default"] == ""
    assert form["options"]["seed"]["widget"] == "QSpinBox" and form["options"]["model"]["default"] == MODEL
    assert seen["classes_other_model"] == [] and seen["classes_back"] == list(CLASSES)

    # the strokes leave with their alpha, as drawn (the server keeps it for role "sketch")
    sent = seen["sent"]
    assert sent["same_as_layer"] and sent["fields"]["channels"] == 4 and sent["fields"]["order"] == "ORDER_BGR"
    assert sent["white"] > 300 and sent["transparent"] > 128 * 96 * 0.9
    assert sent["options"] == {"class_name": "snow", "seed": 4, "variations": 3, "model": MODEL, "work_side": 0}

    # three pictures, one layer each above the sketch: item 1 on top, then 2 and 3, all different
    whole = seen["whole"]
    name = "impasto sketch (snow, 4 seed)"
    assert whole["result_keys"] == ["image", "image.2", "image.3"]
    assert whole["added"] == [f"{name} 1", f"{name} 2", f"{name} 3"]
    assert whole["stack"][-4:] == ["sketch", f"{name} 3", f"{name} 2", f"{name} 1"]  # bottom to top
    assert whole["bounds"] == [[0, 0, 128, 96]] * 3 and whole["opaque"] == [128 * 96] * 3
    assert min(whole["distinct"]) > 50, whole["distinct"]  # pictures, not flat fills
    assert min(whole["differences"]) > 1.0, whole["differences"]  # each variation its own picture
    assert whole["sketch_untouched"]

    # a selection: its bounds go out and the pictures land there, nothing beyond them
    selection = seen["selection"]
    assert selection["inputs"] == [16, 16, 96, 64] and selection["added"] == [f"{name} 1", f"{name} 2"]
    assert selection["sent_outside_clear"] and selection["sent_white"] > 100
    for result in selection["results"]:
        assert result["bounds"] == [16, 16, 96, 64], result
        assert result["inside_opaque"] and result["corner_opaque"], result
        # the output's place is "texture": the picture keeps its whole rectangle over the selection's bounds
        # (a layer-placed output would be clipped to the selection's shape)
        assert result["beyond_clear"] and not result["unselected_clear"], result

    assert seen["empty"].startswith("sketch is empty"), seen["empty"]
