"""Forms from Capabilities: an op's options, image slots and outputs as Blender properties.

The server declares each operation once (``OpInfo`` in ``GET /v1/capabilities``: options
with type, default, range, choices and help; image slots with role and whether required;
outputs with kind and where they go). Blender properties must be registered before they
are used, so an op's schema does not become new properties: it fills three generic
collections on the scene's settings, rebuilt on Connect and when the chosen op changes:

- ``options``: one :class:`ImpastoOption` per option, its value in the field of its type
  (``int_value``, ``float_value``, ``bool_value``, ``string_value``, or ``choice`` when the
  option lists choices), its range kept by an update callback;
- ``images``: one :class:`ImpastoSlot` per image slot, an Image pointer, or a file path for a
  slot that takes back a file one of the op's outputs gives (its role is that output's name:
  warp's ``apply`` slot, role ``flow``, takes the .npz of its ``flow`` output; :func:`reuse_links`);
  a required slot with ``unless`` (warp's geometry) may be left empty when that slot is given;
- ``outputs``: one :class:`ImpastoOutput` per output, a checkbox for those made on request.

A string option whose values the model lists in its Capabilities parameters
(:data:`MODEL_LISTS`: ``class_name`` from ``impasto.classes``) is a menu of the chosen
model's list, refreshed when the ``model`` option changes. Nothing here knows any op by
name: a new server-side op appears with its form.
Protobuf's JSON mapping omits fields at their default (false, 0, "", []), so every read
below treats a missing field as its default.
"""

from __future__ import annotations

import json
import math

import bpy
from bpy.props import (
    BoolProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

INT_MIN, INT_MAX = -(2**31), 2**31 - 1  # Blender's IntProperty is 32-bit
VALUE_PROP = {"int": "int_value", "float": "float_value", "bool": "bool_value", "string": "string_value"}
MODEL_LISTS = {"class_name": "impasto.classes"}  # string options whose values a model lists in its parameters


# ---- reading Capabilities -------------------------------------------------------------------

def job_ops(caps: dict) -> list[dict]:
    """The ops the add-on offers: those started as jobs (``job`` true); render & co. are not."""
    return [o for o in caps.get("ops", []) if o.get("job") and o.get("name")]


def op_info(caps: dict, name: str) -> dict | None:
    return next((o for o in job_ops(caps) if o["name"] == name), None)


def place_of(output: dict) -> str:
    return output.get("place") or "layer"


def kind_of(output: dict) -> str:
    return output.get("kind") or "image"


def makes_texture(info: dict) -> bool:
    """Whether an op gives a texture (an image that can feed a material): the Shader Editor's ops."""
    return any(place_of(o) == "texture" for o in info.get("outputs", []))


def texture_ops(caps: dict) -> list[dict]:
    return [o for o in job_ops(caps) if makes_texture(o)]


def model_list(caps_models: list[dict], model: str, key: str) -> list[str]:
    """Model ``model``'s list under parameter ``key`` (a JSON list of names); [] without one."""
    entry = next((m for m in caps_models or [] if m.get("name") == model), {})
    try:
        values = json.loads((entry.get("parameters") or {}).get(key, ""))
    except ValueError:
        return []
    return [str(v) for v in values] if isinstance(values, list) and all(isinstance(v, str) for v in values) else []


def reuse_links(info: dict) -> dict[str, str]:
    """Slots that take back a file one of the op's outputs gives: ``{slot: output}`` (the slot's
    role is the name of a ``file`` output: warp's ``apply`` slot, role ``flow``, takes ``flow``)."""
    files = {o["name"] for o in info.get("outputs", []) if kind_of(o) == "file"}
    return {s["name"]: s["role"] for s in info.get("images", []) if s.get("role") in files}


def primary_slot(info: dict) -> str | None:
    """The slot that takes the Image Editor's image when left empty: the first required image-role slot,
    else the first required slot (e.g. semantic's label map)."""
    required = [s for s in info.get("images", []) if s.get("required")]
    return next((s["name"] for s in required if (s.get("role") or "image") == "image"),
                required[0]["name"] if required else None)


def label(name: str) -> str:
    """``ot_weight`` -> ``Ot weight``."""
    text = name.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def parse_default(kind: str, text: str):
    """An OptionInfo default (always text) as a value of the option's type."""
    text = (text or "").strip()
    try:
        if kind == "bool":
            return text.lower() in ("true", "1", "yes", "on")
        if kind == "int":
            return int(float(text)) if text else 0
        if kind == "float":
            return float(text) if text else 0.0
    except ValueError:
        return 0
    return text


def option_range(option: dict) -> tuple[float | None, float | None]:
    """(min, max) of an OptionInfo, None where there is none.

    ``min``/``max`` are plain doubles on the wire: both absent (0) means no range; a max not
    above the min means only a lower bound.
    """
    lo, hi = float(option.get("min", 0) or 0), float(option.get("max", 0) or 0)
    if lo == 0 and hi == 0:
        return None, None
    return lo, (hi if hi > lo else None)


# ---- the properties -------------------------------------------------------------------------

_choice_items_cache: dict[tuple[str, str], list] = {}  # Blender keeps no reference to an items callback's strings


def _choice_items(self, context):
    key = (self.choices, self.help)
    items = _choice_items_cache.get(key)
    if items is None:
        items = [(c, c, self.help) for c in _loads(self.choices)]
        _choice_items_cache[key] = items
    return items


def _loads(text: str) -> list:
    try:
        return list(json.loads(text)) if text else []
    except ValueError:
        return []


def _int_limits(option) -> tuple[int, int]:
    lo = max(INT_MIN, math.ceil(option.min)) if option.has_min else INT_MIN
    hi = min(INT_MAX, math.floor(option.max)) if option.has_max else INT_MAX
    return lo, hi


def _clamp_int(self, context):
    lo, hi = _int_limits(self)
    value = min(max(self.int_value, lo), hi)
    if value != self.int_value:
        self.int_value = value


def _model_changed(self, context):
    """The ``model`` option changed: options whose values the model lists take its list."""
    if self.name == "model":
        settings = getattr(self.id_data, "impasto", None)  # the scene that holds the form
        if settings is not None:
            follow_model(settings)


def _clamp_float(self, context):
    value = self.float_value
    if self.has_min and value < self.min:
        value = self.min
    if self.has_max and value > self.max:
        value = self.max
    if value != self.float_value:
        self.float_value = value


class ImpastoOption(bpy.types.PropertyGroup):
    """One option of the chosen op (``name`` is the option's name in the request)."""

    type: StringProperty(description="int, float, string or bool")
    default: StringProperty(description="the server's default, as text")
    help: StringProperty()
    choices: StringProperty(description="the allowed values (a JSON list; empty: any)")
    has_min: BoolProperty()
    has_max: BoolProperty()
    min: FloatProperty()
    max: FloatProperty()
    int_value: IntProperty(name="Value", update=_clamp_int)
    float_value: FloatProperty(name="Value", precision=4, update=_clamp_float)
    bool_value: BoolProperty(name="Value")
    string_value: StringProperty(name="Value", update=_model_changed)
    choice: EnumProperty(name="Value", items=_choice_items, update=_model_changed)
    listed_by: StringProperty(description="the model parameter that lists this option's values (empty: none)")

    def value_prop(self) -> str:
        """The property that holds this option's value (what the panel draws)."""
        return "choice" if self.choices and _loads(self.choices) else VALUE_PROP.get(self.type, "string_value")

    def value(self):
        """The value to send: of the option's type (floats without float32 noise)."""
        prop = self.value_prop()
        if prop == "float_value":
            return float(f"{self.float_value:.7g}")
        return getattr(self, prop)

    def set_value(self, value) -> None:
        """Set from a Python value (a default, or a value kept across a rebuild); bad values are ignored."""
        prop = self.value_prop()
        try:
            if prop == "int_value":
                lo, hi = _int_limits(self)
                self.int_value = min(max(int(value), lo), hi)
            elif prop == "float_value":
                self.float_value = float(value)
            elif prop == "bool_value":
                self.bool_value = bool(value)
            else:
                setattr(self, prop, str(value))
        except (TypeError, ValueError, OverflowError):
            pass


class ImpastoSlot(bpy.types.PropertyGroup):
    """One image slot of the chosen op."""

    role: StringProperty(description="image, mask, labels, style, sketch, lineart or hints")
    required: BoolProperty()
    help: StringProperty()
    same_size_as: StringProperty()
    together_with: StringProperty()
    min_side: IntProperty()
    unless: StringProperty(description="a slot that, given, makes this required slot optional")
    takes: StringProperty(description="the output whose file this slot takes back (empty: an image slot)")
    image: PointerProperty(name="Image", type=bpy.types.Image, description="the image for this slot")
    path: StringProperty(name="File", subtype="FILE_PATH", description="the file for this slot (a saved output)")


class ImpastoOutput(bpy.types.PropertyGroup):
    """One output of the chosen op; those made on request get a checkbox (``wanted``)."""

    kind: StringProperty(description="image, text or file")
    place: StringProperty(description="layer, texture, vector or file: where the result goes")
    filename: StringProperty()
    mime: StringProperty()
    help: StringProperty()
    on_request: BoolProperty()
    series: BoolProperty(description="several items may come (variations): a new image each")
    wanted: BoolProperty(name="Make", default=False, description="ask the server for this output too")


CLASSES = (ImpastoOption, ImpastoSlot, ImpastoOutput)


# ---- building a form ------------------------------------------------------------------------

def build(settings, info: dict | None, keep: bool = False, models: list[dict] | None = None) -> None:
    """Fill ``settings.options/images/outputs`` from ``info`` (an OpInfo dict; None clears them).

    ``keep`` carries over what the user set for the same op (after a reconnect): option
    values whose name and type still match, chosen images, ticked outputs. ``models``:
    Capabilities' model entries, whose lists (class names) become options' choices.
    """
    old_values, old_images, old_wanted, old_paths = {}, {}, {}, {}
    if keep and info is not None and settings.form_op == info.get("name"):
        old_values = {o.name: (o.type, o.value()) for o in settings.options}
        old_images = {s.name: s.image for s in settings.images}
        old_paths = {s.name: s.path for s in settings.images}
        old_wanted = {o.name: o.wanted for o in settings.outputs}
    settings.options.clear()
    settings.images.clear()
    settings.outputs.clear()
    settings.form_op = info.get("name", "") if info else ""
    if info is None:
        return
    for spec in info.get("options", []):
        item = settings.options.add()
        item.name = spec["name"]
        item.type = spec.get("type") or "string"
        item.default = spec.get("default", "")
        item.help = spec.get("help", "")
        item.choices = json.dumps(list(spec.get("choices", [])))
        key = MODEL_LISTS.get(item.name, "")
        if key and item.type == "string" and not spec.get("choices") and any(
                model_list(models, m.get("name", ""), key) for m in models or []):
            item.listed_by = key
        lo, hi = option_range(spec)
        item.has_min, item.has_max = lo is not None, hi is not None
        item.min, item.max = lo or 0.0, hi or 0.0
        item.set_value(parse_default(item.type, item.default))
        kept = old_values.get(item.name)
        if kept is not None and kept[0] == item.type:
            item.set_value(kept[1])
    follow_model(settings, models)
    for name, (kind, value) in old_values.items():  # a kept class name, now that its list is there
        item = settings.options.get(name)
        if item is not None and item.listed_by and kind == item.type:
            item.set_value(value)
    for spec in info.get("images", []):
        slot = settings.images.add()
        slot.name = spec["name"]
        slot.role = spec.get("role") or "image"
        slot.required = bool(spec.get("required"))
        slot.help = spec.get("help", "")
        slot.same_size_as = spec.get("same_size_as", "")
        slot.together_with = spec.get("together_with", "")
        slot.min_side = int(spec.get("min_side", 0) or 0)
        slot.unless = spec.get("unless", "")
        slot.takes = reuse_links(info).get(slot.name, "")
        slot.image = old_images.get(slot.name)
        slot.path = old_paths.get(slot.name, "")
    for spec in info.get("outputs", []):
        out = settings.outputs.add()
        out.name = spec["name"]
        out.kind = kind_of(spec)
        out.place = place_of(spec)
        out.filename = spec.get("filename", "")
        out.mime = spec.get("mime", "")
        out.help = spec.get("help", "")
        out.on_request = bool(spec.get("on_request"))
        out.series = bool(spec.get("series"))
        out.wanted = bool(old_wanted.get(out.name, False))


def follow_model(settings, models: list[dict] | None = None) -> None:
    """Options whose values the model lists (``listed_by``) get the chosen model's list as choices
    (the ``model`` option's model, else the op's first); the value stays if the new list has it.

    ``models``: Capabilities' model entries (default: those of the Capabilities kept in ``settings``).
    """
    following = [o for o in settings.options if o.listed_by]
    if not following:
        return
    try:
        caps = json.loads(settings.capabilities) if settings.capabilities else {}
    except ValueError:
        caps = {}
    models = caps.get("models", []) if models is None else models
    chosen = settings.options.get("model")
    op = next((o for o in caps.get("ops", []) if o.get("name") == settings.form_op), {})
    model = str(chosen.value()) if chosen is not None else next(iter(op.get("models", [])), "")
    for item in following:
        old = item.value()
        choices = model_list(models, model, item.listed_by)
        item.choices = json.dumps(choices)  # none: a text field again
        item.set_value(old if not choices or old in choices else choices[0])


def option(settings, name: str) -> ImpastoOption:
    """The form's option ``name`` (scripts: ``forms.option(s, "strokes").set_value(300)``)."""
    item = settings.options.get(name)
    if item is None:
        raise KeyError(f"'{settings.form_op}' has no option '{name}' (it has {', '.join(o.name for o in settings.options)})")
    return item


def values(settings) -> dict:
    """The options to send: ``{name: value}`` for every option of the form."""
    return {o.name: o.value() for o in settings.options}
