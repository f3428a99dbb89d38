"""The Blender extension in real Blender (PyPI's ``bpy`` in its own venv) against a real impasto server.

The extension zip is built by ``addons/build.py``, installed and enabled through Blender's
own extension operator, and connected to ``impasto serve``. Its operation list and forms are
generated from the server's Capabilities: the driver records them and runs every op
through the one ``impasto.run`` operator (the worker thread and the timer callback, as the
UI does), setting options by name. The driver runs in the bpy venv's Python and writes what
it saw to a JSON file; the test compares it with the server's Capabilities.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import urllib.request
import zipfile
from pathlib import Path

import pytest

from serving import RunningServer, build_addons

ROOT = Path(__file__).resolve().parents[1]
BPY_PYTHON = Path(os.environ.get("IMPASTO_BPY_PYTHON", ROOT / ".venv-bpy" / "bin" / "python"))
INT_MIN, INT_MAX = -(2**31), 2**31 - 1

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

    def prop(self, data, name, text=None, **kw):
        if name not in data.bl_rna.properties:
            raise KeyError(f"panel draws unknown property {name!r}")
        getattr(data, name)  # a dynamic enum's items callback runs here
        self.seen.append(["prop", name, text])

    def prop_enum(self, data, name, value, **kw):
        prop = data.bl_rna.properties[name]
        if prop.type != "ENUM":
            raise KeyError(f"prop_enum on {name!r}, which is no enum")
        self.seen.append(["prop_enum", name, value])

    def operator(self, idname, icon="NONE", **kw):
        group, name = idname.split(".")
        getattr(getattr(bpy.ops, group), name).get_rna_type()  # KeyError for an unknown operator
        if icon not in self.ICONS:
            raise KeyError(f"unknown icon {icon!r}")
        self.seen.append(["operator", idname])


def draw(ext, texture_only=False):
    seen = []
    ext.draw_panel(Layout(seen), bpy.context, texture_only=texture_only)
    return seen


def set_options(s, **values):
    for name, value in values.items():
        ext.forms.option(s, name).set_value(value)
        if ext.forms.option(s, name).value() != value:
            raise AssertionError(f"option {name}: set {value!r}, reads {ext.forms.option(s, name).value()!r}")


def run(ext, **kw):
    """The Run button, through the worker thread and the timer callback."""
    started = list(bpy.ops.impasto.run(**kw))
    pump(ext)
    return started


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
    report["panels"] = [hasattr(bpy.types, cls) for cls in ("IMPASTO_PT_image", "IMPASTO_PT_shader")]
    report["unconnected_panel"] = draw(ext)

    bpy.ops.impasto.connect(wait=True)
    report["status"] = s.status
    report["ops"] = [item[0] for item in ext._op_items(s, bpy.context)]
    report["first_op"] = [s.op, s.form_op]

    # every op's generated form: what the panel offers, what it draws, what clamping does
    report["forms"] = {}
    for op in report["ops"]:
        s.op = op
        form = {"form_op": s.form_op, "options": [], "images": [], "outputs": [], "panel": draw(ext),
                "shader_panel": draw(ext, texture_only=True)}
        for o in s.options:
            entry = {"name": o.name, "type": o.type, "prop": o.value_prop(), "value": o.value(), "help": o.help,
                     "choices": [c[0] for c in ext.forms._choice_items(o, None)] if o.value_prop() == "choice" else []}
            if o.type in ("int", "float"):
                prop = "int_value" if o.type == "int" else "float_value"
                low, high = (INT_MIN, INT_MAX) if o.type == "int" else (-1e30, 1e30)
                setattr(o, prop, low)
                entry["low"] = getattr(o, prop)
                setattr(o, prop, high)
                entry["high"] = getattr(o, prop)
                o.set_value(entry["value"])
                entry["restored"] = o.value()
            form["options"].append(entry)
        form["images"] = [{"name": i.name, "role": i.role, "required": i.required} for i in s.images]
        form["outputs"] = [{"name": o.name, "kind": o.kind, "place": o.place, "on_request": o.on_request} for o in s.outputs]
        report["forms"][op] = form
    s.running = True
    report["running_panel"] = draw(ext)
    s.running = False

    # an sRGB byte image, as loaded from a PNG
    photo = bpy.data.images.new("photo", 96, 64)
    y, x = np.mgrid[0:64, 0:96]
    px = np.stack([x / 95, y / 63, np.full_like(x, 0.5, dtype=float), np.ones_like(x, dtype=float)], -1).astype(np.float32)
    photo.pixels.foreach_set(px.ravel())
    before = ext.images.pixels(photo).copy()

    # paint as a new image, with an on-request output (SVG -> a Text datablock)
    s.op = "paint"
    set_options(s, strokes=14, levels=2, size=96)
    s.outputs["svg"].wanted = True
    started = run(ext, image_name="photo")
    new = bpy.data.images.get("photo (impasto paint)")
    svg = bpy.data.texts.get("photo strokes.svg")
    report["paint_new"] = {"started": started, "exists": new is not None, "size": list(new.size) if new else None,
                           "changed": changed(ext.images.pixels(new), before) if new else 0, "message": s.message,
                           "running": s.running, "source_untouched": changed(ext.images.pixels(photo), before) == 0.0,
                           "svg": svg.as_string()[:200] if svg else None,
                           "strokes_text": bpy.data.texts.get("photo strokes.json") is not None}
    s.outputs["svg"].wanted = False

    # a reconnect keeps what the user set for the same op
    bpy.ops.impasto.connect(wait=True)
    report["kept"] = [s.form_op, ext.forms.option(s, "strokes").value(), ext.forms.option(s, "size").value()]

    # paint in place, the scripted path (wait=True)
    s.in_place = True
    bpy.ops.impasto.run(wait=True, image_name="photo")
    report["paint_in_place"] = {"changed": changed(ext.images.pixels(photo), before), "message": s.message,
                                "running": s.running}

    # colour: a linear float image goes out as linear and its result comes back linear
    linear = bpy.data.images.new("linear", 96, 64, float_buffer=True)
    report["linear_space"] = [linear.colorspace_settings.name, ext.images.raw_image(linear).fields["transfer"]]
    flat = np.full((64, 96, 4), 0.21586, dtype=np.float32)  # linear for sRGB 128/255
    flat[..., 3] = 1.0
    linear.pixels.foreach_set(flat.ravel())
    set_options(s, canvas="#808080")  # the same grey: uncovered canvas tells nothing apart
    run(ext, image_name="linear")
    values = ext.images.pixels(linear)[..., :3]
    report["linear_paint"] = {"mean": float(values.mean()), "std": float(values.std()), "message": s.message}
    s.in_place = False
    ext.images.replace_pixels(linear, grey_png(8, 8, 128))  # an sRGB PNG, as the server sends (scaled to fit)
    report["linear_value"] = float(ext.images.pixels(linear)[0, 0, 0])

    # texture: the exemplar slot, size by option name, a material on the active object
    cube = bpy.data.objects.get("Cube")
    bpy.context.view_layer.objects.active = cube
    s.op = "texture"
    s.images["exemplar"].image = photo
    set_options(s, width=128, height=96, tileable=True, features="random", iterations=2)
    s.make_material = True
    report["texture_shader_panel"] = draw(ext, texture_only=True)
    run(ext)
    tex = bpy.data.images.get("photo (impasto texture)")
    material = cube.active_material
    node = next((n for n in material.node_tree.nodes if n.type == "TEX_IMAGE"), None) if material else None
    linked = node is not None and any(l.to_socket.name == "Base Color" for l in node.outputs["Color"].links)
    report["texture"] = {"size": list(tex.size) if tex else None, "std": float(ext.images.pixels(tex)[..., :3].std()) if tex else 0,
                         "material": material.name if material else None, "linked": linked,
                         "node_image": node.image.name if node else None, "message": s.message}

    # stylize: the main slot from image_name, the style slot chosen
    style = bpy.data.images.new("style", 96, 64)
    style.pixels.foreach_set(px[::-1, ::-1].ravel())
    s.op = "stylize"
    set_options(s, features="random", iterations=2)
    try:
        bpy.ops.impasto.run(image_name="photo")  # no style image yet: refused, with a message
        report["missing_style"] = "ran"
    except RuntimeError as e:
        report["missing_style"] = str(e)
    s.images["style"].image = style
    run(ext, image_name="photo")
    styled = bpy.data.images.get("photo (impasto stylize)")
    report["stylize"] = {"size": list(styled.size) if styled else None, "message": s.message}

    # a stopped server: a message in the panel, no exception
    prefs.server = params["dead_url"]
    s.op = "paint"
    run(ext, image_name="photo", )
    report["down"] = {"message": s.message, "running": s.running}
    bpy.ops.impasto.connect(wait=True)
    report["down_status"] = s.status

    if params.get("render"):  # a picture for the docs: a texture from a real exemplar, on the cube
        exemplar = bpy.data.images.load(params["exemplar"])
        prefs.server = params["url"]
        s.op = "texture"
        s.images["exemplar"].image = exemplar
        set_options(s, width=256, height=256, iterations=40, tileable=True)
        s.make_material = True
        cube.data.materials.clear()
        bpy.ops.impasto.run(wait=True)
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
'''.replace("INT_MIN, INT_MAX", f"{INT_MIN}, {INT_MAX}")


@pytest.fixture(scope="module")
def server():
    s = RunningServer()
    yield s
    s.stop()


def _label(name: str) -> str:
    text = name.replace("_", " ")
    return text[:1].upper() + text[1:]


def _expected_default(option: dict):
    text, kind = option.get("default", ""), option.get("type", "string")
    if kind == "bool":
        return text.lower() == "true"
    if kind == "int":
        return min(max(int(text or 0), INT_MIN), INT_MAX)
    if kind == "float":
        return float(text or 0)
    return text


def _check_form(op: dict, form: dict) -> None:
    """One op's generated form against its OpInfo (missing fields are protobuf defaults)."""
    name = op["name"]
    assert form["form_op"] == name
    assert [o["name"] for o in form["options"]] == [o["name"] for o in op.get("options", [])], name
    for want, got in zip(op.get("options", []), form["options"]):
        where = f"{name}.{want['name']}"
        kind = want.get("type", "string")
        assert got["type"] == kind and got["help"] == want.get("help", ""), where
        assert got["choices"] == list(want.get("choices", [])), where
        assert got["prop"] == ("choice" if want.get("choices") else
                               {"int": "int_value", "float": "float_value", "bool": "bool_value"}.get(kind, "string_value")), where
        default = _expected_default(want)
        if kind == "float":
            assert math.isclose(got["value"], default, rel_tol=1e-6, abs_tol=1e-12), where
        else:
            assert got["value"] == default, where
        assert got.get("restored", got["value"]) == got["value"], where
        if kind in ("int", "float"):  # the range: min/max absent means 0; both absent, none
            lo, hi = want.get("min", 0), want.get("max", 0)
            ranged = lo != 0 or hi != 0
            floor, ceiling = (INT_MIN, INT_MAX) if kind == "int" else (-1e30, 1e30)
            want_low = lo if ranged else floor
            want_high = hi if ranged and hi > lo else ceiling
            if kind == "int":
                want_low, want_high = max(math.ceil(want_low), INT_MIN), min(math.floor(want_high), INT_MAX)
            assert math.isclose(got["low"], want_low, rel_tol=1e-6), (where, got["low"], want_low)
            assert math.isclose(got["high"], want_high, rel_tol=1e-6), (where, got["high"], want_high)
    assert form["images"] == [{"name": s["name"], "role": s.get("role") or "image", "required": bool(s.get("required"))}
                              for s in op.get("images", [])]
    assert form["outputs"] == [{"name": o["name"], "kind": o.get("kind") or "image", "place": o.get("place") or "layer",
                                "on_request": bool(o.get("on_request"))} for o in op.get("outputs", [])]
    # the panel draws the op chooser, every slot and option under its name, a box per on-request output, one Run
    panel = form["panel"]
    assert ["prop", "op", None] in panel
    texts = [text for kind, _, text in (e for e in panel if e[0] == "prop")]
    for slot in op.get("images", []):
        assert any(t and t.startswith(_label(slot["name"])) for t in texts), (name, slot["name"])
    for option in op.get("options", []):
        assert _label(option["name"]) in texts, (name, option["name"])
    for out in op.get("outputs", []):
        assert (f"Also {_label(out['name'])}" in texts) == bool(out.get("on_request")), (name, out["name"])
    assert [e[1] for e in panel if e[0] == "operator"] == ["impasto.connect", "impasto.run"]
    texture = any(o.get("place") == "texture" for o in op.get("outputs", []))
    assert (["prop", "make_material", None] in panel) == texture, name
    # the Shader Editor: texture ops as buttons, and the form only for a texture op
    shader = form["shader_panel"]
    assert [e[1] for e in shader if e[0] == "operator"] == (["impasto.connect", "impasto.run"] if texture else ["impasto.connect"])


def test_blender_extension_runs_every_op_from_generated_forms(server, tmp_path):
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
    caps = json.loads(urllib.request.urlopen(server.http + "/v1/capabilities", timeout=30).read())
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(tmp_path / "blender")}
    blender = subprocess.run([str(BPY_PYTHON), str(driver), str(tmp_path / "params.json")], capture_output=True, text=True,
                             env=env, timeout=900, cwd=tmp_path)
    assert report.is_file(), f"the driver wrote no report:\n{blender.stdout[-3000:]}\n{blender.stderr[-3000:]}"
    seen = json.loads(report.read_text())
    assert "crash" not in seen, seen["crash"] + blender.stderr[-3000:]
    assert seen["enabled"] and seen["status"].startswith("connected: impasto")
    assert seen["panels"] == [True, True]
    assert ["label", "Connect to list the server's operations"] in seen["unconnected_panel"]

    # the op list and every form come from Capabilities: job ops only, in the server's order
    offered = [o for o in caps["ops"] if o.get("job")]
    assert seen["ops"] == [o["name"] for o in offered] and {"paint", "texture", "stylize"} <= set(seen["ops"])
    assert "render" not in seen["ops"]
    assert seen["first_op"] == [offered[0]["name"]] * 2
    for op in offered:
        _check_form(op, seen["forms"][op["name"]])
    assert ["prop", "progress", None] in seen["running_panel"] and ["operator", "impasto.cancel"] in seen["running_panel"]

    paint = seen["paint_new"]
    assert paint["started"] == ["FINISHED"] and not paint["running"]
    assert paint["exists"] and paint["size"] == [96, 64] and paint["changed"] > 0.05 and paint["source_untouched"]
    assert paint["message"].startswith("paint: 'photo (impasto paint)'; text 'photo strokes.svg'"), paint["message"]
    assert paint["svg"] and "<svg" in paint["svg"] and not paint["strokes_text"]  # only outputs asked for become texts
    assert seen["kept"] == ["paint", 14, 96]
    assert seen["paint_in_place"]["changed"] > 0.05 and not seen["paint_in_place"]["running"]
    assert seen["paint_in_place"]["message"].startswith("paint: 'photo' in place")
    assert seen["linear_space"] == ["Linear Rec.709", "TRANSFER_LINEAR"]
    lin = seen["linear_paint"]  # sRGB 128 painted on sRGB 128, written back as linear light
    assert lin["message"].startswith("paint: 'linear' in place") and abs(lin["mean"] - 0.2159) < 0.02, lin
    assert abs(seen["linear_value"] - 0.2159) < 0.005  # sRGB 128/255 written into a linear image
    shader = seen["texture_shader_panel"]
    assert ["prop_enum", "op", "texture"] in shader and ["prop", "make_material", None] in shader
    texture = seen["texture"]
    assert texture["size"] == [128, 96] and texture["std"] > 0.01, texture
    assert texture["linked"] and texture["node_image"] == "photo (impasto texture)" == texture["material"]
    assert "material 'photo (impasto texture)' on 'Cube'" in texture["message"]
    assert "choose an image for 'Style'" in seen["missing_style"]
    assert seen["stylize"]["size"] == [96, 64], seen["stylize"]
    assert "cannot reach the impasto server" in seen["down"]["message"] and not seen["down"]["running"]
    assert seen["down_status"] == "not connected"


def _blender_ext() -> tuple[Path, Path]:
    """Blender's own extension tool (``blender --command extension``'s module) and its list of valid tags."""
    scripts = sorted((BPY_PYTHON.parent.parent / "lib").glob("python3*/site-packages/bpy/*/scripts"))
    assert scripts, f"no bpy scripts folder under {BPY_PYTHON.parent.parent}"
    return (scripts[-1] / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py",
            scripts[-1] / "modules" / "_bpy_internal" / "extensions" / "tags.py")


def _validate(tool: Path, tags: Path, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BPY_PYTHON), str(tool), "validate", f"--valid-tags={tags}", str(path)],
                          capture_output=True, text=True, timeout=120)


def test_blender_extension_passes_blenders_validator(tmp_path):
    tool, tags = _blender_ext()
    build_addons(tmp_path / "dist")
    built = _validate(tool, tags, tmp_path / "dist" / "impasto-blender.zip")
    assert built.returncode == 0 and "Success" in built.stdout, built.stdout + built.stderr
    # the validator does check what broke before: a tag Blender does not know, a permission text over 64 characters
    bad = tmp_path / "bad.zip"
    shutil.copy(tmp_path / "dist" / "impasto-blender.zip", bad)
    with zipfile.ZipFile(tmp_path / "dist" / "impasto-blender.zip") as z, zipfile.ZipFile(bad, "w") as out:
        for item in z.infolist():
            data = z.read(item)
            if item.filename == "blender_manifest.toml":
                data = re.sub(rb"(?m)^tags = .*$", b'tags = ["Paint", "Texturing"]', data)
            out.writestr(item, data)
    refused = _validate(tool, tags, bad)
    assert refused.returncode != 0 and "Texturing" in refused.stdout + refused.stderr
