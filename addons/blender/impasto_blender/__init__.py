"""impasto for Blender: run the operations an impasto server offers on Blender images.

The add-on knows no operation by name. **Connect** reads the server's Capabilities; the
panel lists the ops that run as jobs and draws the chosen op's form from its schema
(``forms.py``); **Run** (:class:`IMPASTO_OT_run`) sends ``client.run(op, images, options,
outputs)`` and puts each output where its ``place`` says: ``layer`` -> a new image (or the
source image, in place), ``texture`` -> a new image and, on request, a material on the
active object, text outputs asked for -> a Text datablock, file outputs asked for -> a file
beside the .blend; a ``series`` output's items (variations) -> a new image each, numbered.
A slot that takes back a file an output gave (warp's ``apply``: a flow .npz saved by an
earlier run) is a file path, and a slot required ``unless`` another is given may then stay
empty. A new server-side op appears here with no add-on release.

Layers: the panels and operators here (UI), ``forms.py`` (Capabilities -> properties),
``jobs.py`` (requests off the main thread, results back by a timer), ``images.py``
(Blender images to and from the wire), and ``impasto_http.py`` (the standard-library HTTP
client, copied in by addons/build.py).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    PointerProperty,
    StringProperty,
)

from . import forms, images, jobs, labels
from .impasto_http import ImpastoClient, series_items


def prefs():
    return bpy.context.preferences.addons[__package__].preferences


def client() -> ImpastoClient:
    p = prefs()
    return ImpastoClient(p.server.strip(), p.token.strip() or None)


_parsed: list = ["", {}]  # the last Capabilities JSON parsed: [text, dict]


def capabilities(settings) -> dict:
    """The Capabilities of the last Connect (kept in the scene as JSON, so a saved .blend keeps its form)."""
    text = settings.capabilities
    if text != _parsed[0]:
        try:
            caps = json.loads(text) if text else {}
        except ValueError:
            caps = {}
        _parsed[:] = [text, caps if isinstance(caps, dict) else {}]
    return _parsed[1]


_op_items_cache: dict[str, list] = {}  # Blender keeps no reference to an items callback's strings


def _op_items(self, context):
    text = self.capabilities
    items = _op_items_cache.get(text)
    if items is None:
        items = [(o["name"], forms.label(o["name"]), o.get("help") or o.get("description", ""))
                 for o in forms.job_ops(capabilities(self))]
        _op_items_cache.clear()
        _op_items_cache[text] = items
    return items


def _op_changed(self, context):
    if self.op and self.op != self.form_op:
        caps = capabilities(self)
        forms.build(self, forms.op_info(caps, self.op), models=caps.get("models", []))


class ImpastoPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    server: StringProperty(name="Server", default="http://127.0.0.1:8000", description="The impasto server's HTTP address")
    token: StringProperty(name="Token", default="", subtype="PASSWORD", description="Bearer token, if the server needs one")

    def draw(self, context):
        self.layout.prop(self, "server")
        self.layout.prop(self, "token")


class ImpastoSettings(bpy.types.PropertyGroup):
    status: StringProperty(default="not connected")
    message: StringProperty(default="")
    progress: FloatProperty(name="Progress", subtype="PERCENTAGE", min=0, max=100, default=0)
    running: BoolProperty(default=False)
    capabilities: StringProperty(default="", options={"HIDDEN"}, description="the server's Capabilities (JSON)")
    op: EnumProperty(name="Operation", items=_op_items, update=_op_changed, description="what the server should do")
    form_op: StringProperty(default="", description="the op the form below was built for")
    options: CollectionProperty(type=forms.ImpastoOption)
    images: CollectionProperty(type=forms.ImpastoSlot)
    outputs: CollectionProperty(type=forms.ImpastoOutput)
    in_place: BoolProperty(name="In place", default=False,
                           description="Put the result into the source image's pixels instead of a new image")
    make_material: BoolProperty(name="Material on active object", default=False,
                                description="Hook a new texture into a new material on the active object")


class _Launcher(bpy.types.Operator):
    """Common part: one job at a time, ``wait`` for scripts (runs in the calling thread)."""

    wait: BoolProperty(default=False, options={"HIDDEN", "SKIP_SAVE"})

    def busy(self) -> bool:
        if jobs.current() is not None:
            self.report({"WARNING"}, "an impasto job is already running")
            return True
        return False

    def launch(self, context, job: jobs.Job):
        if self.busy():
            return {"CANCELLED"}
        jobs.start(job, wait=self.wait)
        return {"FINISHED"}


class IMPASTO_OT_connect(_Launcher):
    bl_idname = "impasto.connect"
    bl_label = "Connect"
    bl_description = "Ask the server what it offers: its operations and their options"

    def execute(self, context):
        def apply(caps: dict) -> str:
            s = bpy.context.scene.impasto
            s.capabilities = json.dumps(caps)
            names = [o["name"] for o in forms.job_ops(caps)]
            target = s.form_op if s.form_op in names else (names[0] if names else "")
            if target:
                s.op = target
            forms.build(s, forms.op_info(caps, target), keep=True, models=caps.get("models", []))
            s.status = f"connected: impasto {caps.get('version', '?')} on {', '.join(caps.get('devices', [])) or '?'}"
            return f"connected: {', '.join(names) or 'no operations'}"

        def fail(message: str) -> None:
            bpy.context.scene.impasto.status = "not connected"

        if self.busy():
            return {"CANCELLED"}
        context.scene.impasto.status = "connecting..."
        jobs.start(jobs.Job("connect", client(), lambda c: c.capabilities(), apply, fail), wait=self.wait)
        return {"FINISHED"}


@dataclass
class Delivery:
    """What a finished job needs to put its outputs in place (gathered on the main thread at launch)."""

    op: str
    source: str  # the main slot's image name ("" without one): names results, takes in-place results
    outputs: list[tuple[str, str, str, str, bool, bool]]  # (name, kind, place, filename, asked for, series)
    in_place: bool = False
    make_material: bool = False
    obj: str = ""  # the active object at launch (for the material)
    note: str = ""  # what was done to the inputs on the way out (label pixels snapped)
    made: list[str] = field(default_factory=list)


class IMPASTO_OT_run(_Launcher):
    bl_idname = "impasto.run"
    bl_label = "Run"
    bl_description = "Run the chosen operation on the server with the options above"

    image_name: StringProperty(default="", options={"HIDDEN", "SKIP_SAVE"},
                               description="the image for the op's main slot (default: the slot's, else the Image Editor's)")

    @classmethod
    def description(cls, context, properties):
        s = context.scene.impasto
        info = forms.op_info(capabilities(s), s.form_op)
        return (info.get("help") or info.get("description") or cls.bl_description) if info else "Connect first"

    def editor_image(self, context) -> bpy.types.Image | None:
        if self.image_name:
            return bpy.data.images.get(self.image_name)
        space = getattr(context, "space_data", None)
        return getattr(space, "image", None) if space is not None and space.type == "IMAGE_EDITOR" else None

    def execute(self, context):
        s = context.scene.impasto
        info = forms.op_info(capabilities(s), s.form_op)
        if info is None:
            self.report({"ERROR"}, "press Connect first: the server lists its operations")
            return {"CANCELLED"}
        if self.busy():
            return {"CANCELLED"}
        op, primary = info["name"], forms.primary_slot(info)
        sent, chosen = {}, {}
        try:
            for slot in s.images:
                if slot.takes:  # a file an earlier run saved (warp's flow)
                    if slot.path:
                        sent[slot.name] = read_file(slot)
                    continue
                image = slot.image
                if slot.name == primary and (self.image_name or image is None):
                    image = self.editor_image(context)
                if image is not None:
                    sent[slot.name] = images.raw_image(image)
                    chosen[slot.name] = image
        except ValueError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        for slot in s.images:
            if slot.unless and slot.unless in sent:  # given instead of this one (apply instead of geometry)
                sent.pop(slot.name, None)
                chosen.pop(slot.name, None)
            elif slot.required and slot.name not in sent:
                where = " (or open one in the Image Editor)" if slot.name == primary else ""
                instead = f", or a file for '{forms.label(slot.unless)}'" if slot.unless else ""
                self.report({"ERROR"}, f"{op}: choose an image for '{forms.label(slot.name)}'{where}{instead}")
                return {"CANCELLED"}
        snapped = ""
        if labels.has_labels(info) and sent:  # label maps: sides checked, stray (anti-aliased) colours snapped
            palette = op_palette(s, info)
            for slot in s.images:
                if slot.role == "labels" and slot.name in sent and palette is not None:
                    try:
                        sent[slot.name], moved = labels.label_image(chosen[slot.name], palette)
                    except ValueError as e:
                        self.report({"ERROR"}, str(e))
                        return {"CANCELLED"}
                    snapped = f"{moved} label pixels snapped to the palette" if moved else snapped
        source = chosen.get(primary) or next(iter(chosen.values()), None)
        options = forms.values(s)
        wanted = [o.name for o in s.outputs if o.on_request and o.wanted]
        active = context.view_layer.objects.active if context.view_layer else None
        delivery = Delivery(op, source.name if source else "",
                            [(o.name, o.kind, o.place, o.filename, o.on_request and o.wanted, o.series)
                             for o in s.outputs if not o.on_request or o.wanted],
                            in_place=s.in_place and primary in chosen, make_material=s.make_material,
                            obj=active.name if active else "", note=snapped)
        return self.launch(context, jobs.Job(op, client(), lambda c: c.run_events(op, sent, options, wanted),
                                             lambda result: deliver(result, delivery)))


def read_file(slot) -> bytes:
    """The bytes of a file slot's file (a path relative to the .blend as Blender writes them)."""
    path = bpy.path.abspath(slot.path)
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"cannot read the {slot.takes} file for '{forms.label(slot.name)}' ({path}): {e.strerror}") \
            from None


def op_palette(s, info: dict) -> labels.Palette | None:
    """The label palette of the model the form will run (its ``model`` option, else the op's first model)."""
    model = s.options.get("model")
    return labels.palette_of(capabilities(s), info, str(model.value()) if model is not None else "")


class IMPASTO_OT_label_palette(bpy.types.Operator):
    bl_idname = "impasto.label_palette"
    bl_label = "Label palette"
    bl_description = "Make the model's labels a palette for texture painting (paint label maps with these colours)"

    def execute(self, context):
        s = context.scene.impasto
        info = forms.op_info(capabilities(s), s.form_op)
        palette = op_palette(s, info) if info else None
        if palette is None:
            self.report({"ERROR"}, "the server publishes no label table for this op's model")
            return {"CANCELLED"}
        made = labels.make_palette(palette)
        paint = getattr(context.tool_settings, "image_paint", None)
        if paint is not None:
            paint.palette = made
        s.message = f"palette '{made.name}': {', '.join(palette.names)} (texture paint uses it)"
        return {"FINISHED"}


class IMPASTO_OT_cancel(bpy.types.Operator):
    bl_idname = "impasto.cancel"
    bl_label = "Cancel"
    bl_description = "Cancel the running impasto job"

    def execute(self, context):
        job = jobs.current()
        if job is not None:
            job.cancel()
            context.scene.impasto.message = f"{job.label}: cancelling..."
        return {"FINISHED"}


def deliver(result: dict, d: Delivery) -> str:
    """Put each output of a finished job where its ``place`` says (main thread); returns the message.

    A series output's items (variations) become new images *SOURCE (impasto OP 1)*, *... 2*,
    ... in order, never in place; with *Material on active object*, the first item's texture
    feeds the material (the others are in the image list, for its Image Texture node).
    """
    stem = d.source or d.op
    first_image = True
    for name, kind, place, filename, asked, series in d.outputs:
        if kind == "image" and name in result.get("images", {}):
            items = series_items(result["images"], name, series)
            title = f"{stem} (impasto {d.op}" + ("" if first_image else f" {name}")
            first_image = False
            target = bpy.data.images.get(d.source) if d.source else None
            if place == "layer" and d.in_place and target is not None and not series:
                images.replace_pixels(target, items[0][1])
                d.made.append(f"'{target.name}' in place")
                continue
            made = []
            for index, png in items:
                made.append(images.load_png(png, title + (f" {index})" if len(items) > 1 else ")")))
                d.made.append(f"'{made[-1].name}'")
            _show(made[0], d.source)
            if place == "texture" and d.make_material:
                obj = bpy.data.objects.get(d.obj) if d.obj else None
                if obj is not None and hasattr(obj.data, "materials"):
                    material = images.material_with(made[0], made[0].name)
                    obj.data.materials.append(material)
                    obj.active_material_index = len(obj.data.materials) - 1
                    d.made.append(f"material '{material.name}' on '{obj.name}'")
        elif kind == "text" and asked and name in result.get("texts", {}):
            text = bpy.data.texts.new(f"{stem} {filename or name}")
            text.write(result["texts"][name])
            d.made.append(f"text '{text.name}'")
        elif kind == "file" and asked and name in result.get("files", {}):
            folder = bpy.path.abspath("//") if bpy.data.filepath else tempfile.gettempdir()
            path = os.path.join(folder, f"{bpy.path.clean_name(stem)}-{filename or name}")
            with open(path, "wb") as f:
                f.write(result["files"][name])
            d.made.append(f"file {path}")
    numbers = ", ".join([f"{k} {v:g}" for k, v in result.get("numbers", {}).items()] + ([d.note] if d.note else []))
    return f"{d.op}: {'; '.join(d.made) or 'done'}" + (f" ({numbers})" if numbers else "")


def _show(image: bpy.types.Image, source: str) -> None:
    """Image Editors that show the source image (or none) show the new image."""
    wm = getattr(bpy.context, "window_manager", None)
    for window in getattr(wm, "windows", []):
        for area in window.screen.areas:
            if area.type == "IMAGE_EDITOR":
                space = area.spaces.active
                if space.image is None or space.image.name == source:
                    space.image = image


class IMPASTO_PT_image(bpy.types.Panel):
    bl_label = "impasto"
    bl_space_type = "IMAGE_EDITOR"
    bl_region_type = "UI"
    bl_category = "impasto"

    def draw(self, context):
        draw_panel(self.layout, context)


class IMPASTO_PT_shader(bpy.types.Panel):
    bl_label = "impasto"
    bl_space_type = "NODE_EDITOR"
    bl_region_type = "UI"
    bl_category = "impasto"

    @classmethod
    def poll(cls, context):
        return getattr(context.space_data, "tree_type", "") == "ShaderNodeTree"

    def draw(self, context):
        draw_panel(self.layout, context, texture_only=True)


def draw_panel(layout, context, texture_only: bool = False) -> None:
    """Connect, the op chooser, the chosen op's form, Run; ``texture_only``: ops that make textures."""
    s = context.scene.impasto
    box = layout.box()
    box.prop(prefs(), "server", text="")
    row = box.row()
    row.operator("impasto.connect")
    row.label(text=s.status)
    caps = capabilities(s)
    ops = forms.texture_ops(caps) if texture_only else forms.job_ops(caps)
    if not ops:
        layout.label(text="Connect to list the server's operations" if not caps else "The server offers no operations here")
    elif texture_only:
        row = layout.row(align=True)
        for info in ops:
            row.prop_enum(s, "op", info["name"])
    else:
        layout.prop(s, "op")
    info = forms.op_info(caps, s.form_op)
    if info is not None and info in ops:
        draw_form(layout, s, info)
    if s.running:
        layout.prop(s, "progress", slider=True)
        layout.operator("impasto.cancel", icon="CANCEL")
    if s.message:
        layout.label(text=s.message)


def draw_form(layout, s, info: dict) -> None:
    """The chosen op's form, from the collections ``forms.build`` filled: images, options, outputs."""
    col = layout.column(align=True)
    if info.get("help"):
        col.label(text=info["help"])
    for slot in s.images:
        if slot.takes:
            col.prop(slot, "path", text=f"{forms.label(slot.name)} ({slot.takes} file, optional)")
            continue
        extra = "" if slot.required and not slot.unless else \
            f" (or {forms.label(slot.unless)})" if slot.required else " (optional)"
        col.prop(slot, "image", text=forms.label(slot.name) + extra)
    col = layout.column(align=True)
    for option in s.options:
        col.prop(option, option.value_prop(), text=forms.label(option.name))
    col = layout.column(align=True)
    for out in s.outputs:
        if out.on_request:
            col.prop(out, "wanted", text=f"Also {forms.label(out.name)}")
    places = {o.place for o in s.outputs if o.kind == "image"}
    if any(o.kind == "image" and o.place == "layer" and not o.series for o in s.outputs) and forms.primary_slot(info):
        col.prop(s, "in_place")  # a series (variations) always makes new images
    if "texture" in places:
        col.prop(s, "make_material")
    if labels.has_labels(info) and op_palette(s, info) is not None:
        col.operator("impasto.label_palette", icon="COLOR")
    layout.operator("impasto.run", text=f"Run {forms.label(info['name'])}", icon="PLAY")


CLASSES = (*forms.CLASSES, ImpastoPreferences, ImpastoSettings, IMPASTO_OT_connect, IMPASTO_OT_run, IMPASTO_OT_cancel,
           IMPASTO_OT_label_palette, IMPASTO_PT_image, IMPASTO_PT_shader)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.impasto = PointerProperty(type=ImpastoSettings)


def unregister() -> None:
    if bpy.app.timers.is_registered(jobs.poll):
        bpy.app.timers.unregister(jobs.poll)
    del bpy.types.Scene.impasto
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
    _op_items_cache.clear()
    forms._choice_items_cache.clear()
    _parsed[:] = ["", {}]
