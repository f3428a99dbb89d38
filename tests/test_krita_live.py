"""Live settings in real Krita: an op that declares them gets Live mode, and each live run sends them.

An op may declare live settings (``OpSpec.live``, Capabilities ``live``): its fast settings,
which a live (paint-and-see) run sets over the form's options: paint's predictor-only
painting. A full Krita window under Xvfb (as in ``tests/test_krita_semantic.py``) runs the
docker against a real ``impasto serve`` that loads ``echo`` through ``IMPASTO_OPS``
(``tests/ops_echo.py``): a sidecar op on a plain picture, with ``live=(("fast", True), ("steps",
3))``, whose result shows in its pixels the options it ran with (red: fast, green: steps, blue:
the source's blue). The probe drives the docker as a user would:

- the echo form has a Live box (no label or hints slot, not an engine op: the live settings
  alone give it one); texture, which declares none, has none;
- Run sends the form's options as they are (40 steps, not fast);
- Live on: one run with the live settings over the form's (fast, 3 steps) for the layer as it
  is, none while idle, one after the layer changes, its result in place of the previous live
  layer and following the new pixels; the form keeps the user's values;
- Live off, Run again: the form's options as they are, no live run more.
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
from test_krita import PROBE_DESKTOP, display, krita_env  # noqa: F401  (display is a fixture)

TESTS = Path(__file__).resolve().parent

pytestmark = pytest.mark.skipif(
    shutil.which("krita") is None or shutil.which("Xvfb") is None,
    reason="needs Debian's krita and xvfb packages (.ci/run installs them)",
)

PROBE = r'''
import json, os, time, traceback, urllib.request
from krita import Extension, Krita
from PyQt5.QtCore import QTimer

PARAMS = json.load(open(os.environ["IMPASTO_KRITA_TEST"]))
W, H = 64, 48
SPOTS = [(3, 5), (40, 10), (61, 44)]  # (x, y) where the results are read


def picture(shift):
    """A gradient (BGRA) whose blue channel depends on ``shift``: a change of the layer shows in the echo's blue."""
    data = bytearray()
    for y in range(H):
        for x in range(W):
            data += bytes([(x * 4 + shift) % 256, (y * 5) % 256, 128, 255])
    return bytes(data)


def jobs_sent():
    """Jobs the server has been sent (its /metrics gauge ``impasto_jobs``, over all states)."""
    text = urllib.request.urlopen(PARAMS["url"] + "/metrics", timeout=10).read().decode()
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("impasto_jobs{")))


def stack(doc):
    return [n.name() for n in doc.rootNode().childNodes() if n.type() != "selectionmask"]


def echoed(doc, name):
    """What a result layer says the run got: [fast (red), steps (green), blue] at each spot; None when it is absent."""
    node = doc.nodeByName(name)
    if node is None:
        return None
    pixels = bytes(node.pixelData(0, 0, W, H))
    return [[pixels[4 * (y * W + x) + 2], pixels[4 * (y * W + x) + 1], pixels[4 * (y * W + x)]] for x, y in SPOTS]


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
        doc = k.createDocument(W, H, "live", "RGBA", "U8", "", 72.0)
        window.addView(doc)
        layer = doc.createNode("photo", "paintlayer")
        doc.rootNode().addChildNode(layer, None)
        layer.setPixelData(picture(0), 0, 0, W, H)
        doc.refreshProjection()
        doc.setActiveNode(layer)
        yield 300
        docker = next(d for d in k.dockers() if d.objectName() == "impasto_docker")
        docker.show()
        docker.url.setText(PARAMS["url"])
        docker.connect_server()
        yield from self.wait(lambda: docker.status.text().startswith("connected"), 30)
        self.report["texture_live"] = docker.forms["texture"].describe()["live"]
        form = docker.choose_op("echo")
        self.report["form"] = form.describe()
        self.report["live_box"] = [form.live.text(), form.live.toolTip()]
        form.set("steps", 40)

        # Run: the form's options as they are
        before = jobs_sent()
        docker.run()
        yield from self.wait(lambda: docker.thread is None, 60)
        self.report["run_message"] = docker.message.text()
        self.report["run"] = echoed(doc, stack(doc)[-1])
        self.report["run_jobs"] = jobs_sent() - before

        # live: once for the layer as it is (with the live settings), none while idle, once after a change
        doc.setActiveNode(layer)
        before = jobs_sent()
        form.live.setChecked(True)
        self.report["live_watching"] = docker.message.text()
        yield from self.wait(lambda: docker.live.runs == 1 and docker.thread is None, 60)
        self.report["live_first"] = echoed(doc, "impasto echo (live)")
        yield 2500  # five idle ticks
        self.report["live_first_count"] = [docker.live.runs, jobs_sent() - before]
        layer.setPixelData(picture(100), 0, 0, W, H)
        doc.refreshProjection()
        yield from self.wait(lambda: docker.live.runs == 2 and docker.thread is None, 60)
        yield 2500
        self.report["live_second_count"] = [docker.live.runs, jobs_sent() - before]
        self.report["live_second"] = echoed(doc, "impasto echo (live)")
        self.report["live_message"] = docker.message.text()
        self.report["live_stack"] = stack(doc)
        self.report["form_after_live"] = [form.get("fast"), form.get("steps")]
        form.live.setChecked(False)
        self.report["live_off"] = docker.live.active

        # Run again, live off: the form's options, no live run
        before = jobs_sent()
        docker.run()
        yield from self.wait(lambda: docker.thread is None, 60)
        yield 1200  # more than two ticks: live mode stays off
        self.report["rerun"] = echoed(doc, stack(doc)[-1])
        self.report["rerun_counts"] = [docker.live.runs, jobs_sent() - before]
        self.report["final_stack"] = stack(doc)

    def finish(self):
        with open(PARAMS["report"], "w") as f:
            json.dump(self.report, f)
        for d in Krita.instance().documents():
            d.setModified(False)
        Krita.instance().action("file_quit").trigger()


Krita.instance().addExtension(Probe(Krita.instance()))
'''

SPOTS = [(3, 5), (40, 10), (61, 44)]  # as in the probe


@pytest.fixture(scope="module")
def server():
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    s = RunningServer(env={"IMPASTO_OPS": "ops_echo", "PYTHONPATH": path})
    yield s
    s.stop()


def _echo(fast: bool, steps: int, shift: int) -> list[list[int]]:
    """What the echo op's picture holds at the probe's spots: [red, green, blue] = [fast, steps, the source's blue]."""
    return [[255 if fast else 0, steps, (x * 4 + shift) % 256] for x, _ in SPOTS]


def _close(got, want, tolerance: int = 2) -> bool:
    """Pixel triples equal but for rounding through PNG and Krita's colour conversion."""
    return got is not None and all(abs(g - w) <= tolerance for a, b in zip(got, want, strict=True)
                                   for g, w in zip(a, b, strict=True))


def test_an_op_with_live_settings_gets_live_mode_and_each_live_run_sends_them(server, display, tmp_path):  # noqa: F811
    build_addons(tmp_path / "dist")
    pykrita = tmp_path / "data" / "krita" / "pykrita"
    with zipfile.ZipFile(tmp_path / "dist" / "impasto-krita.zip") as z:
        z.extractall(pykrita)
    (pykrita / "impasto_live_probe").mkdir()
    (pykrita / "impasto_live_probe" / "__init__.py").write_text(PROBE)
    (pykrita / "impasto_live_probe.desktop").write_text(PROBE_DESKTOP.replace("impasto_gui_probe", "impasto_live_probe"))
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "kritarc").write_text("[python]\nenable_impasto_krita=true\nenable_impasto_live_probe=true\n")
    report = tmp_path / "report.json"
    (tmp_path / "params.json").write_text(json.dumps({"url": server.http, "report": str(report)}))
    env = krita_env(tmp_path, display, IMPASTO_KRITA_TEST=str(tmp_path / "params.json"))
    krita = subprocess.run(["krita", "--nosplash"], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
                           check=False)
    assert report.is_file(), f"Krita wrote no report:\n{krita.stdout[-3000:]}\n{krita.stderr[-3000:]}"
    seen = json.loads(report.read_text())
    assert "crash" not in seen, seen["crash"] + krita.stderr[-3000:]

    # the live settings come from Capabilities; they alone give a sidecar op on a plain picture its Live box
    form = seen["form"]
    assert form["live"] is True and form["live_slot"] is None and form["live_options"] == {"fast": True, "steps": 3}
    assert seen["texture_live"] is False
    text, tooltip = seen["live_box"]
    assert text == "Live: run again when the layer changes"
    assert "a live run sets fast=true, steps=3 (the fast settings)" in tooltip, tooltip

    # Run: the form's options as they are
    assert seen["run_message"].startswith("done: layer 'impasto echo (no fast, 40 steps)'"), seen["run_message"]
    assert _close(seen["run"], _echo(False, 40, 0)), seen["run"]
    assert seen["run_jobs"] == 1

    # live: the live settings over the form's, once as the layer is, not while idle, once after a change
    assert seen["live_watching"] == "live: watching 'photo'", seen["live_watching"]
    assert _close(seen["live_first"], _echo(True, 3, 0)), seen["live_first"]
    assert seen["live_first_count"] == [1, 1], seen
    assert seen["live_second_count"] == [2, 2], seen
    assert _close(seen["live_second"], _echo(True, 3, 100)), seen["live_second"]  # the new pixels, in its place
    assert seen["live_message"].startswith("live: updated layer 'impasto echo (live)'"), seen["live_message"]
    assert seen["live_stack"].count("impasto echo (live)") == 1, seen["live_stack"]
    assert seen["live_stack"].index("impasto echo (live)") == seen["live_stack"].index("photo") + 1, seen["live_stack"]
    assert seen["form_after_live"] == [False, 40] and seen["live_off"] is False

    # Run again with Live off: the form's options, and live mode sends nothing more
    assert _close(seen["rerun"], _echo(False, 40, 100)), seen["rerun"]
    assert seen["rerun_counts"] == [2, 1], seen
    assert seen["final_stack"].count("impasto echo (live)") == 1
    assert seen["final_stack"].count("impasto echo (no fast, 40 steps)") == 2, seen["final_stack"]
