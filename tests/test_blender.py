"""The Blender extension in real Blender (PyPI's ``bpy`` in its own venv) against a real impasto server.

The extension zip is built by ``addons/build.py``, installed and enabled through Blender's
own extension operator, and each operator runs against ``impasto serve``. The driver runs
in the bpy venv's Python and writes what it saw to a JSON file.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from serving import RunningServer, build_addons

ROOT = Path(__file__).resolve().parents[1]
BPY_PYTHON = Path(os.environ.get("IMPASTO_BPY_PYTHON", ROOT / ".venv-bpy" / "bin" / "python"))

pytestmark = pytest.mark.skipif(
    not BPY_PYTHON.is_file(),
    reason=f"needs PyPI's bpy in its own venv at {BPY_PYTHON} (.ci/run makes it; or set IMPASTO_BPY_PYTHON)",
)

DRIVER = r'''
import json, sys, time, traceback
import bpy
import numpy as np

params = json.load(open(sys.argv[1]))
report = {}


def pump(ext, seconds=300):
    """Call the timer callback as Blender's event loop would, until the job is done."""
    end = time.time() + seconds
    while ext.jobs.current() is not None and time.time() < end:
        ext.jobs.poll()
        time.sleep(0.05)


def grey_png(w, h, value):
    """A uniform 8-bit RGBA PNG, made with the standard library."""
    import struct, zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes([value, value, value, 255]) * w for _ in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def changed(a, b):
    return float(np.abs(a - b).mean())


class Layout:
    """Records what a panel's draw() lays out, checking each name against Blender's real RNA.

    Background bpy draws no UI; this catches what a broken panel would only print to
    Blender's console: an unknown property, operator or icon.
    """

    ICONS = set(bpy.types.UILayout.bl_rna.functions["prop"].parameters["icon"].enum_items.keys())

    def __init__(self, seen):
        self.seen = seen

    def box(self):
        return self

    def row(self, **kw):
        return self

    def column(self, **kw):
        return self

    def label(self, text="", **kw):
        self.seen.append(["label", text])

    def prop(self, data, name, **kw):
        if name not in data.bl_rna.properties:
            raise KeyError(f"panel draws unknown property {name!r}")
        self.seen.append(["prop", name])

    def operator(self, idname, icon="NONE", **kw):
        group, name = idname.split(".")
        getattr(getattr(bpy.ops, group), name).get_rna_type()  # KeyError for an unknown operator
        if icon not in self.ICONS:
            raise KeyError(f"unknown icon {icon!r}")
        self.seen.append(["operator", idname])


try:
    bpy.ops.extensions.package_install_files(filepath=params["zip"], repo="user_default", enable_on_install=True)
    name = "bl_ext.user_default.impasto"
    report["enabled"] = name in bpy.context.preferences.addons
    import importlib
    ext = importlib.import_module(name)
    prefs = bpy.context.preferences.addons[name].preferences
    prefs.server = params["url"]
    scene = bpy.context.scene
    s = scene.impasto

    bpy.ops.impasto.connect(wait=True)
    report["status"] = s.status
    report["panels"] = [hasattr(bpy.types, cls) for cls in ("IMPASTO_PT_image", "IMPASTO_PT_shader")]
    report["panel"], report["shader_panel"] = [], []
    ext.draw_panel(Layout(report["panel"]), bpy.context)
    ext.draw_panel(Layout(report["shader_panel"]), bpy.context, texture_only=True)
    s.running, report["running_panel"] = True, []
    ext.draw_panel(Layout(report["running_panel"]), bpy.context)
    s.running = False

    # an sRGB byte image, as loaded from a PNG
    photo = bpy.data.images.new("photo", 96, 64)
    y, x = np.mgrid[0:64, 0:96]
    px = np.stack([x / 95, y / 63, np.full_like(x, 0.5, dtype=float), np.ones_like(x, dtype=float)], -1).astype(np.float32)
    photo.pixels.foreach_set(px.ravel())
    before = ext.images.pixels(photo).copy()
    s.strokes, s.levels = 14, 2

    # Paint image, as a new image (the wait path)
    bpy.ops.impasto.paint_image(wait=True, image_name="photo")
    new = bpy.data.images.get("photo (impasto oil)")
    report["paint_new"] = {"exists": new is not None, "size": list(new.size) if new else None,
                           "changed": changed(ext.images.pixels(new), before) if new else 0, "message": s.message,
                           "source_untouched": changed(ext.images.pixels(photo), before) == 0.0}

    # Paint in place, through the worker thread and the timer callback (the UI path)
    s.in_place = True
    result = bpy.ops.impasto.paint_image(image_name="photo")
    report["async_started"] = list(result)
    pump(ext)
    report["paint_in_place"] = {"changed": changed(ext.images.pixels(photo), before), "message": s.message,
                                "running": s.running}
    s.in_place = False

    # colour: a linear float image is sent as linear, and results come back converted to linear
    linear = bpy.data.images.new("linear", 8, 8, float_buffer=True)
    report["linear_space"] = [linear.colorspace_settings.name, ext.images.raw_image(linear).fields["transfer"]]
    ext.images.replace_pixels(linear, grey_png(8, 8, 128))  # an sRGB PNG, as the server sends
    report["linear_value"] = float(ext.images.pixels(linear)[0, 0, 0])

    # Synthesize texture, hooked into a material on the active object
    cube = bpy.data.objects.get("Cube")
    bpy.context.view_layer.objects.active = cube
    s.exemplar = photo
    s.width, s.height, s.tileable, s.make_material = 128, 96, True, True
    s.features, s.iterations = "random", 2
    bpy.ops.impasto.synthesize_texture(wait=True)
    tex = bpy.data.images.get("photo texture")
    material = cube.active_material
    node = next((n for n in material.node_tree.nodes if n.type == "TEX_IMAGE"), None) if material else None
    linked = node is not None and any(l.to_socket.name == "Base Color" for l in node.outputs["Color"].links)
    report["texture"] = {"size": list(tex.size) if tex else None, "std": float(ext.images.pixels(tex)[..., :3].std()) if tex else 0,
                         "material": material.name if material else None, "linked": linked,
                         "node_image": node.image.name if node else None, "message": s.message}

    # Stylize image
    style = bpy.data.images.new("style", 96, 64)
    style.pixels.foreach_set(px[::-1, ::-1].ravel())
    s.style = style
    bpy.ops.impasto.stylize_image(wait=True, image_name="photo")
    styled = bpy.data.images.get("photo (impasto style)")
    report["stylize"] = {"size": list(styled.size) if styled else None, "message": s.message}

    # a stopped server: a message in the panel, no exception
    prefs.server = params["dead_url"]
    bpy.ops.impasto.paint_image(image_name="photo")
    pump(ext, 60)
    report["down"] = {"message": s.message, "running": s.running}
    bpy.ops.impasto.connect(wait=True)
    report["down_status"] = s.status

    if params.get("render"):  # a picture for the docs: a texture from a real exemplar, on the cube
        exemplar = bpy.data.images.load(params["exemplar"])
        s.exemplar, s.width, s.height, s.iterations, s.tileable, s.make_material = exemplar, 256, 256, 40, True, True
        prefs.server = params["url"]
        cube.data.materials.clear()
        bpy.ops.impasto.synthesize_texture(wait=True)
        report["render_message"] = s.message
        bpy.data.lights["Light"].energy = 2500
        scene.render.engine = "CYCLES"
        scene.cycles.samples = 16
        scene.cycles.device = "CPU"
        scene.render.resolution_x, scene.render.resolution_y = 480, 360
        scene.render.filepath = params["render"]
        bpy.ops.render.render(write_still=True)
except Exception:
    report["crash"] = traceback.format_exc()

json.dump(report, open(params["report"], "w"))
'''


@pytest.fixture(scope="module")
def server():
    s = RunningServer()
    yield s
    s.stop()


def test_blender_extension_paints_textures_and_restyles_images(server, tmp_path):
    build_addons(tmp_path / "dist")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    report = tmp_path / "report.json"
    params = {"zip": str(tmp_path / "dist" / "impasto-blender.zip"), "url": server.http, "dead_url": "http://127.0.0.1:9",
              "report": str(report), "tmp": str(tmp_path), "render": os.environ.get("IMPASTO_BLENDER_RENDER", ""),
              "exemplar": str(tmp_path / "exemplar.png")}
    from impasto.runtime.images import load_image, save_image

    save_image(load_image("example:coffee")[:, 60:316, 200:456], tmp_path / "exemplar.png")  # a crop: coffee and cup
    (tmp_path / "params.json").write_text(json.dumps(params))
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(tmp_path / "blender")}
    blender = subprocess.run([str(BPY_PYTHON), str(driver), str(tmp_path / "params.json")], capture_output=True, text=True,
                             env=env, timeout=900, cwd=tmp_path)
    assert report.is_file(), f"the driver wrote no report:\n{blender.stdout[-3000:]}\n{blender.stderr[-3000:]}"
    seen = json.loads(report.read_text())
    assert "crash" not in seen, seen["crash"]
    assert seen["enabled"] and seen["status"].startswith("connected: impasto")
    assert seen["panels"] == [True, True]
    operators = [name for kind, name in seen["panel"] if kind == "operator"]
    assert operators == ["impasto.connect", "impasto.paint_image", "impasto.synthesize_texture", "impasto.stylize_image"]
    assert ["prop", "strokes"] in seen["panel"] and ["label", seen["status"]] in seen["panel"]
    assert ["prop", "progress"] in seen["running_panel"] and ["operator", "impasto.cancel"] in seen["running_panel"]
    shader = [name for kind, name in seen["shader_panel"] if kind == "operator"]
    assert shader == ["impasto.connect", "impasto.synthesize_texture"]  # the node editor's panel: textures only
    paint = seen["paint_new"]
    assert paint["exists"] and paint["size"] == [96, 64] and paint["changed"] > 0.05 and paint["source_untouched"]
    assert seen["async_started"] == ["FINISHED"]
    assert seen["paint_in_place"]["changed"] > 0.05 and not seen["paint_in_place"]["running"]
    assert seen["paint_in_place"]["message"].startswith("painted 'photo' in place")
    assert seen["linear_space"] == ["Linear Rec.709", "TRANSFER_LINEAR"]
    assert abs(seen["linear_value"] - 0.2159) < 0.005  # sRGB 128/255 written into a linear image
    texture = seen["texture"]
    assert texture["size"] == [128, 96] and texture["std"] > 0.01
    assert texture["linked"] and texture["node_image"] == "photo texture" and texture["material"] == "photo texture"
    assert seen["stylize"]["size"] == [96, 64]
    assert "cannot reach the impasto server" in seen["down"]["message"] and not seen["down"]["running"]
    assert seen["down_status"] == "not connected"
