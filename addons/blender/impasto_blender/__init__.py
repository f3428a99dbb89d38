"""impasto for Blender: paint, restyle or grow image textures through an impasto server.

Layers: the panels and operators here (UI), ``jobs.py`` (requests off the main thread,
results back by a timer), ``images.py`` (Blender images to and from the wire), and
``impasto_http.py`` (the standard-library HTTP client, copied in by addons/build.py).
"""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

from . import images, jobs
from .impasto_http import ImpastoClient

_capabilities: dict = {}
DEFAULT_BRUSHES = ("oil", "marker", "watercolor", "tape")


def prefs():
    return bpy.context.preferences.addons[__package__].preferences


def client() -> ImpastoClient:
    p = prefs()
    return ImpastoClient(p.server.strip(), p.token.strip() or None)


def offered(op: str) -> bool:
    return not _capabilities or op in {o["name"] for o in _capabilities.get("ops", [])}


def _brush_items(self, context):
    names = [b["name"] for b in _capabilities.get("brushes", [])] or list(DEFAULT_BRUSHES)
    return [(n, n, f"paint with the {n} brush") for n in names]


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
    brush: EnumProperty(name="Brush", items=_brush_items)
    strokes: IntProperty(name="Strokes", default=500, min=1, max=20000)
    levels: IntProperty(name="Detail levels", default=5, min=1, max=16)
    in_place: BoolProperty(name="In place", default=False, description="Replace the image's pixels instead of making a new image")
    exemplar: PointerProperty(name="Exemplar", type=bpy.types.Image, description="The texture sample to grow from")
    style: PointerProperty(name="Style", type=bpy.types.Image, description="The image whose style to take")
    width: IntProperty(name="Width", default=512, min=64, max=16384)
    height: IntProperty(name="Height", default=512, min=64, max=16384)
    tileable: BoolProperty(name="Tileable", default=True)
    make_material: BoolProperty(name="Material on active object", default=False)
    loss: EnumProperty(name="Loss", items=[("histogram", "Histogram", "Gram + histogram losses (stable)"),
                                          ("gram", "Gram", "Gram matrices only"),
                                          ("sliced", "Sliced Wasserstein", "full feature distributions")])
    iterations: IntProperty(name="Iterations", default=100, min=1, max=10000, description="optimisation steps per scale")
    features: EnumProperty(name="Features", items=[("vgg19", "VGG-19", "ImageNet weights (the server needs them)"),
                                                  ("random", "Random", "a weak stand-in that needs no weights")])


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


class _JobOperator(_Launcher):
    """An operator working on an image: the Image Editor's, or ``image_name``."""

    image_name: StringProperty(default="", options={"HIDDEN", "SKIP_SAVE"}, description="the image to use (default: the Image Editor's)")

    def image(self, context) -> bpy.types.Image | None:
        if self.image_name:
            return bpy.data.images.get(self.image_name)
        space = getattr(context, "space_data", None)
        return getattr(space, "image", None) if space is not None and space.type == "IMAGE_EDITOR" else None


class IMPASTO_OT_connect(_Launcher):
    bl_idname = "impasto.connect"
    bl_label = "Connect"
    bl_description = "Ask the server what it offers"

    def execute(self, context):
        def apply(caps: dict) -> str:
            _capabilities.clear()
            _capabilities.update(caps)
            context.scene.impasto.status = f"connected: impasto {caps.get('version', '?')} on {', '.join(caps.get('devices', []))}"
            return "connected"

        if self.busy():
            return {"CANCELLED"}
        context.scene.impasto.status = "connecting..."

        def fail(message: str) -> None:
            context.scene.impasto.status = "not connected"

        jobs.start(jobs.Job("connect", client(), lambda c: c.capabilities(), apply, fail), wait=self.wait)
        return {"FINISHED"}


class IMPASTO_OT_paint_image(_JobOperator):
    bl_idname = "impasto.paint_image"
    bl_label = "Paint image"
    bl_description = "Re-make the image as brush strokes (as a new image, or in place)"

    def execute(self, context):
        image = self.image(context)
        if image is None:
            self.report({"ERROR"}, "open an image in the Image Editor first")
            return {"CANCELLED"}
        s = context.scene.impasto
        try:
            raw = images.raw_image(image)
        except ValueError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        options = {"brush": s.brush, "strokes": s.strokes, "levels": s.levels, "size": max(image.size)}
        style = images.raw_image(s.style) if s.style is not None else None
        name, in_place = image.name, s.in_place

        def apply(result: dict) -> str:
            where = _deliver(context, result["image"], name, in_place, f"{name} (impasto {options['brush']})")
            return f"painted {where} ({result.get('strokes', '?')} strokes)"

        return self.launch(context, jobs.Job("paint", client(), lambda c: c.paint_events(raw, options, style=style), apply))


class IMPASTO_OT_synthesize_texture(_JobOperator):
    bl_idname = "impasto.synthesize_texture"
    bl_label = "Synthesize texture"
    bl_description = "Grow a (tileable) texture of the chosen size from the exemplar image"

    def execute(self, context):
        s = context.scene.impasto
        exemplar = s.exemplar or self.image(context)
        if exemplar is None:
            self.report({"ERROR"}, "choose an exemplar image")
            return {"CANCELLED"}
        try:
            raw = images.raw_image(exemplar)
        except ValueError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        width, height, tileable, make_material = s.width, s.height, s.tileable, s.make_material
        options = {"loss": s.loss, "iterations": s.iterations, "features": s.features}
        label = f"{exemplar.name} texture"

        def apply(result: dict) -> str:
            new = images.load_png(result["image"], label)
            _show(context, new)
            obj = context.view_layer.objects.active if context.view_layer else None
            if make_material and obj is not None and hasattr(obj.data, "materials"):
                material = images.material_with(new, label)
                obj.data.materials.append(material)
                obj.active_material_index = len(obj.data.materials) - 1
                return f"made '{new.name}' and material '{material.name}' on '{obj.name}'"
            return f"made '{new.name}' ({new.size[0]}x{new.size[1]})"

        return self.launch(context, jobs.Job(
            "texture", client(), lambda c: c.texture_events(raw, width, height, tileable=tileable, options=options), apply))


class IMPASTO_OT_stylize_image(_JobOperator):
    bl_idname = "impasto.stylize_image"
    bl_label = "Stylize image"
    bl_description = "Restyle the image after the style image"

    @classmethod
    def poll(cls, context):
        return offered("stylize")

    def execute(self, context):
        image, s = self.image(context), context.scene.impasto
        if image is None or s.style is None:
            self.report({"ERROR"}, "open an image and choose a style image")
            return {"CANCELLED"}
        content, style = images.raw_image(image), images.raw_image(s.style)
        options = {"loss": s.loss, "iterations": s.iterations, "features": s.features}
        name, in_place = image.name, s.in_place

        def apply(result: dict) -> str:
            return f"restyled {_deliver(context, result['image'], name, in_place, f'{name} (impasto style)')}"

        return self.launch(context, jobs.Job("stylize", client(), lambda c: c.stylize_events(content, style, options=options), apply))


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


def _deliver(context, png: bytes, name: str, in_place: bool, new_name: str) -> str:
    """Put a result into image ``name`` (in place) or a new image; says where, for the message."""
    target = bpy.data.images.get(name)
    if in_place and target is not None:
        images.replace_pixels(target, png)
        return f"'{name}' in place"
    new = images.load_png(png, new_name)
    _show(context, new)
    return f"'{new.name}'"


def _show(context, image: bpy.types.Image) -> None:
    space = getattr(context, "space_data", None)
    if space is not None and space.type == "IMAGE_EDITOR":
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
    s = context.scene.impasto
    p = prefs()
    box = layout.box()
    box.prop(p, "server", text="")
    row = box.row()
    row.operator("impasto.connect")
    row.label(text=s.status)
    if not texture_only:
        col = layout.column(align=True)
        col.label(text="Paint")
        col.prop(s, "brush")
        col.prop(s, "strokes")
        col.prop(s, "levels")
        col.prop(s, "in_place")
        col.operator("impasto.paint_image", icon="BRUSH_DATA")
    col = layout.column(align=True)
    col.label(text="Texture")
    col.prop(s, "exemplar")
    row = col.row(align=True)
    row.prop(s, "width")
    row.prop(s, "height")
    col.prop(s, "tileable")
    col.prop(s, "make_material")
    col.prop(s, "loss")
    col.prop(s, "iterations")
    col.prop(s, "features")
    col.operator("impasto.synthesize_texture", icon="TEXTURE")
    if not texture_only and offered("stylize"):
        col = layout.column(align=True)
        col.label(text="Stylize")
        col.prop(s, "style")
        col.operator("impasto.stylize_image", icon="SHADING_TEXTURE")
    if s.running:
        layout.prop(s, "progress", slider=True)
        layout.operator("impasto.cancel", icon="CANCEL")
    if s.message:
        layout.label(text=s.message)


CLASSES = (ImpastoPreferences, ImpastoSettings, IMPASTO_OT_connect, IMPASTO_OT_paint_image, IMPASTO_OT_synthesize_texture,
           IMPASTO_OT_stylize_image, IMPASTO_OT_cancel, IMPASTO_PT_image, IMPASTO_PT_shader)


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
