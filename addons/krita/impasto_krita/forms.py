"""An operation's form, built from its entry in the server's Capabilities (an ``OpInfo``).

Nothing here knows any operation: the images an op takes, its options and its optional
outputs all come from Capabilities, so an op added on the server appears in the docker
with its form and no new add-on release. The rules:

- image slots: the first required slot with role ``image`` (else the first required slot)
  is the **source**, the active layer; a ``mask`` slot is the selection ("Selection only");
  every other slot is a choice of "none" (optional slots only), "image file..." or one of
  the document's paint layers (a style reference as a file or a layer, colour hints as the
  layer the user paints dots on). Layers go out as 8-bit BGRA with their alpha, which the
  server keeps for roles drawn on transparency (``sketch``, ``hints``, ``lineart``); a source
  of such a role, in an op without a mask slot, is cropped to the selection when there is one
  (transparent outside it) and its results land over the selection; a layer chosen for a slot
  that must match the source's size (``same_size_as``) goes out over the same rectangle. The
  active layer cannot also be another slot's layer (painting on the hints layer and pressing
  Run would send the hints as line art);
- options, by type: ``int`` a spin box, ``float`` a decimal spin box, ``string`` with choices
  a combo box, ``bool`` a check box, other strings a line edit; range, default and choices
  as declared, the help as tooltip. Options named ``size``, ``width`` and ``height`` follow
  the document (its longer side, width, height) until the user sets them; a string option
  whose values the model lists in its parameters (``class_name``: ``impasto.classes``) is an
  editable drop-down of the chosen model's list;
- outputs made only on request (``on_request``): a check box each, ticked from the start for
  an output placed ``under`` the source (colour under line art: the op's point in Krita; with
  it the op's ``layer`` images are left out, unticked they come back above the source); a
  ``series`` output's items (variations) become a layer each, numbered (``document.place_results``);
- live mode (an op that declares live settings, whatever it runs in; an engine op with a ``labels``
  slot or a ``hints`` slot): a Live check box; the docker re-runs when the source or the layer
  chosen for the hints slot changes (``live.py``). A live run sends the form's options with the
  op's live settings over them (Capabilities ``live``: option -> JSON value, the op's fast
  settings: paint's predictor-only painting); Run sends the form's options as they are;
- a slot whose role is the name of one of the op's ``file`` outputs takes that file back
  (:func:`reuse_links`: warp's ``apply`` slot, role ``flow``, takes the ``flow`` output's .npz):
  it is a file choice, not a layer; the output is asked for at every run (placed only when its
  box is ticked) and its bytes are kept, and **Apply the same OP** sends them with each of the
  other selected layers as the source, one job a layer, so a drawing's layers move together;
  a required slot that names such a slot in ``unless`` (warp's geometry) may be left empty
  when that slot is given.

:meth:`OpForm.set` / :meth:`OpForm.get` reach any of these by name (scripts, tests), and
:meth:`OpForm.describe` reads the widgets back, to check them against Capabilities. The
widgets of single options and slots are in ``fields.py``; an op with a ``labels`` slot also
gets its model's palette (``swatches.py``) and snapping of stray colours.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from krita import Krita
from PyQt5.QtWidgets import QCheckBox, QFormLayout, QLabel, QPushButton, QWidget

from . import document, labels
from .fields import FileSlotField, OptionField, SelectionField, SlotField
from .live import live_box, live_settings
from .swatches import PaletteField

DOCUMENT_SIZED = ("size", "width", "height")  # int options that follow the document until set by hand
PLACES = {"layer": "new layer", "under": "layer under the source", "texture": "new layer", "vector": "vector layer",
          "file": "file"}  # files go beside the document
ALPHA_ROLES = ("sketch", "hints", "lineart")  # slots drawn on transparency: the server reads their alpha; a selection crops them
LIVE_ROLES = ("hints",)  # a slot whose layer live mode watches beside the source (the user paints on it)
MODEL_LISTS = {"class_name": "impasto.classes"}  # string options whose values a model lists in its parameters


def snake_keys(value):
    """Capabilities with proto field names (``on_request``), also where a server sent lowerCamelCase."""
    if isinstance(value, dict):
        return {"".join("_" + c.lower() if c.isupper() else c for c in k): snake_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [snake_keys(v) for v in value]
    return value


def job_ops(capabilities: dict) -> list[dict]:
    """The operations a user can run as jobs (``job`` true), in the server's order."""
    return [op for op in capabilities.get("ops", []) if op.get("job")]


@dataclass
class Request:
    """One job, as it leaves the form: everything read from Krita on the main thread."""

    op: str
    images: dict  # slot -> bytes | RawImage
    options: dict
    outputs: list[str]
    inputs: document.LayerInputs  # the source's pixels (and the selection) that results are placed against
    source: object  # the source layer (a Krita node), or None
    name: str  # the result layer's name
    places: list = field(default_factory=list)  # the op's outputs (OutputInfo): where each result goes
    snapped: int = 0  # label pixels moved to the nearest palette colour before sending
    live: bool = False  # started by live mode: its result replaces the previous live result
    notes: list = field(default_factory=list)  # what placing the results did besides adding layers
    keep: dict = field(default_factory=dict)  # output -> the slot that takes it back: its bytes are kept
    kept_only: list = field(default_factory=list)  # outputs asked for only to be kept, not placed
    reuse: bool = False  # a job of "Apply the same ...": its source is one of the other selected layers

    def start(self, client):
        """Start the job (on a worker thread): yields its events."""
        return client.run_events(self.op, self.images, self.options, self.outputs)

    def place(self, doc, result: dict) -> list[str]:
        """Put the finished job's outputs into ``doc`` (main thread): what was added, in order."""
        placed = [name for name in self.outputs if name not in self.kept_only]
        return document.place_results(doc, self.source, self.inputs, self.places, result, self.name, placed,
                                      self.notes)


def model_lists(models: list[dict], key: str) -> dict[str, list[str]]:
    """Each model's list under parameter ``key`` (a JSON list of names), by model name; models without one are left out."""
    found = {}
    for model in models or []:
        try:
            values = json.loads((model.get("parameters") or {}).get(key, ""))
        except ValueError:
            continue
        if isinstance(values, list) and values and all(isinstance(v, str) for v in values):
            found[str(model.get("name", ""))] = values
    return found


def reuse_links(info: dict) -> dict[str, dict]:
    """Slots that take back a file one of the op's outputs gives: ``{slot name: OutputInfo}``.

    The rule: the slot's role is the name of a ``file`` output (warp: the ``apply`` slot has
    role ``flow``, the ``flow`` output is the field as a .npz)."""
    files = {o["name"]: o for o in info.get("outputs", []) if o.get("kind") == "file"}
    return {s["name"]: files[s["role"]] for s in info.get("images", []) if s.get("role") in files}


def source_slot(slots: list[dict]) -> dict | None:
    """The slot the active layer fills: the first required ``image``, else the first required slot."""
    required = [s for s in slots if s.get("required")]
    return next((s for s in required if s.get("role", "image") == "image"), required[0] if required else None)


class OpForm(QWidget):
    """The widgets of one op, from its ``OpInfo`` (a dict in protobuf's JSON mapping)."""

    def __init__(self, info: dict, documents=None, parent=None, models: list[dict] | None = None):
        super().__init__(parent)
        self.info = info
        self.op = info["name"]
        self.documents = documents or (lambda: Krita.instance().activeDocument())
        layout = QFormLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        about = info.get("help") or info.get("description", "")
        if about:
            label = QLabel(about)
            label.setWordWrap(True)
            label.setToolTip(info.get("description", ""))
            layout.addRow(label)

        slots = list(info.get("images", []))
        source = source_slot(slots)
        self.source = source["name"] if source else None
        self.links = reuse_links(info)  # slot -> the output whose file it takes back
        self.kept: dict = {}  # slot -> the bytes the last run's output gave for it
        self.kept_from = None  # the id of the layer the kept bytes were made from (left out of "Apply the same")
        self.slots: dict[str, SlotField | SelectionField | FileSlotField] = {}
        masks = [s for s in slots if s.get("role") == "mask"]
        for slot in slots:
            if slot is source:
                continue
            if slot["name"] in self.links:
                f = self.slots[slot["name"]] = FileSlotField(slot, self.links[slot["name"]])
                layout.addRow(_label(slot["name"]), f.widget)
            elif slot.get("role") == "mask":
                label = "Selection only" if len(masks) == 1 else f"Selection only: {slot['name']}"
                f = self.slots[slot["name"]] = SelectionField(slot, label)
                layout.addRow(f.widget)
            else:
                f = self.slots[slot["name"]] = SlotField(slot, self.documents)
                layout.addRow(_label(slot["name"]), f.widget)

        # label maps (role "labels"): the model's palette as swatches, snapping (swatches.py, labels.py)
        self.label_slots = labels.label_slots(info)
        self.palettes = labels.op_palettes(info, models or []) if self.label_slots else {}
        self.palette_field = self.live = None
        if self.label_slots:
            self.palette_field = PaletteField(next(iter(self.palettes.values()), None))
            layout.addRow(self.palette_field)
        # live mode (live.py): ops that declare live settings (their fast settings, sent by each live run), engine
        # ops whose source is a label map, or that take a layer the user paints hints on
        self.live_slot = next((n for n, f in self.slots.items()
                               if isinstance(f, SlotField) and f.info.get("role") in LIVE_ROLES), None)
        self.live_options = live_settings(info)
        if self.live_options or ((self.label_slots or self.live_slot) and info.get("runs_in") == "engine"):
            self.live = live_box(self.live_slot, bool(self.label_slots), self.live_options)
            layout.addRow(self.live)

        # options whose values the model lists (class names): an editable drop-down of the chosen model's list
        self.model_lists = {}
        for opt in info.get("options", []):
            lists = model_lists(models or [], MODEL_LISTS.get(opt["name"], ""))
            if lists and (opt.get("type") or "string") == "string" and not opt.get("choices"):
                self.model_lists[opt["name"]] = lists
        first_model = next((o.get("default", "") for o in info.get("options", []) if o["name"] == "model"),
                           next(iter(info.get("models", [])), ""))
        self.options: dict[str, OptionField] = {}
        for opt in info.get("options", []):
            lists = self.model_lists.get(opt["name"])
            f = self.options[opt["name"]] = OptionField(opt, None if lists is None else lists.get(first_model, []))
            layout.addRow(_label(opt["name"]), f.widget)
        if "model" in self.options:  # the palette and the model's lists follow the model option
            self.options["model"]._signal().connect(lambda *_: self.follow_model())
        if self.palette_field is not None:
            self.palette_field.set_palette(self.palette())

        self.outputs: dict[str, QCheckBox] = {}
        for out in info.get("outputs", []):
            if out.get("on_request"):
                box = QCheckBox(f"{out['name']} ({PLACES.get(out.get('place', ''), 'as well')})")
                box.setToolTip(out.get("help", ""))
                box.setObjectName(f"output_{out['name']}")
                box.setChecked(out.get("place") == "under")  # the layer under the source is what the op is for here
                self.outputs[out["name"]] = box
                layout.addRow("Also make" if len(self.outputs) == 1 else "", box)

        self.apply_button = None  # "Apply the same OP": the docker connects it
        if self.links and self.source is not None:
            self.apply_button = QPushButton(f"Apply the same {self.op}")
            self.apply_button.setObjectName("apply_same")
            outs = " and ".join(sorted({o["name"] for o in self.links.values()}))
            self.apply_button.setToolTip(
                f"runs {self.op} on each of the other selected layers (Ctrl+click them in the Layers docker) with "
                f"the {outs} of the last run (or the file chosen above), nothing else: each result goes to a new "
                f"layer above its layer, so the drawing's layers move together")
            layout.addRow(self.apply_button)

    # --- by name ------------------------------------------------------------------------------

    def _find(self, name: str):
        kind, _, bare = name.rpartition(":")  # "image:style", "output:svg" when names collide
        for k, table in (("option", self.options), ("image", self.slots), ("output", self.outputs)):
            if (not kind or kind == k) and bare in table:
                return k, table[bare]
        raise KeyError(f"{self.op} has no option, image or output '{name}'")

    def set(self, name: str, value) -> None:
        """Set an option (a value of its type), an image slot (None, a file path, a layer; a mask
        slot: True to send the selection) or an on-request output (True to ask for it)."""
        kind, f = self._find(name)
        if kind == "output":
            f.setChecked(bool(value))
        elif kind == "image":
            f.set(value, self.documents())
        else:
            f.set(value)
            if name.rpartition(":")[2] == "model":
                self.follow_model()

    def get(self, name: str):
        kind, f = self._find(name)
        return f.isChecked() if kind == "output" else f.value() if kind == "option" else f.get()

    def model_name(self) -> str:
        """The model the form will run: its ``model`` option, else the op's first model."""
        if "model" in self.options:
            return str(self.options["model"].value())
        return next(iter(self.info.get("models", [])), "")

    def follow_model(self) -> None:
        """The palette and the options whose values the model lists follow the chosen model."""
        model = self.model_name()
        for name, lists in self.model_lists.items():
            self.options[name].set_choices(lists.get(model, []))
        if self.palette_field is not None:
            self.palette_field.set_palette(self.palette())

    def palette(self) -> labels.Palette | None:
        """The label palette of the model the form will run (its ``model`` option, else the op's first model)."""
        if "model" in self.options:
            return self.palettes.get(str(self.options["model"].value()))
        return next(iter(self.palettes.values()), None)

    def _snap(self, name: str, image, what: str):
        """A label map as it leaves: sides checked and pixels snapped to the palette (raw layer pixels only)."""
        palette = self.palette()
        if palette is None or name not in self.label_slots or not isinstance(image, document.RawImage):
            return image, 0
        width, height = image.fields["width"], image.fields["height"]
        try:
            labels.check_size(width, height, palette, what)
            pixels, changed = labels.snap(image.data, width, palette, what)
        except labels.LabelMapError as e:
            raise document.UnsupportedDocument(str(e)) from None
        return document.RawImage(pixels, width, height, 4, order="ORDER_BGR"), changed

    def crops(self) -> bool:
        """Whether a selection crops the source: a source drawn on transparency, in an op with no mask slot."""
        slots = self.info.get("images", [])
        role = next((s.get("role", "image") for s in slots if s["name"] == self.source), "")
        return role in ALPHA_ROLES and not any(s.get("role") == "mask" for s in slots)

    @property
    def selection_only(self) -> SelectionField | None:
        return next((f for f in self.slots.values() if isinstance(f, SelectionField)), None)

    def values(self) -> dict:
        return {name: f.value() for name, f in self.options.items()}

    def wanted(self) -> list[str]:
        return [name for name, box in self.outputs.items() if box.isChecked()]

    # --- the job ------------------------------------------------------------------------------

    def fit_document(self, doc) -> None:
        """Options named size/width/height follow the document unless the user set them."""
        sides = {"size": max(doc.width(), doc.height()), "width": doc.width(), "height": doc.height()}
        for name in DOCUMENT_SIZED:
            f = self.options.get(name)
            if f is not None and f.type == "int" and not f.pinned:
                w = f.widget
                f.set(min(max(sides[name], w.minimum()), w.maximum()), pin=False)

    def layer_name(self, options: dict) -> str:
        """'impasto OP (...)' with the first two options, e.g. 'impasto paint (oil, 500 strokes)'."""
        parts = []
        for name in list(self.options)[:2]:
            value = options[name]
            if isinstance(value, bool):
                parts.append(name if value else f"no {name}")
            elif isinstance(value, (int, float)):
                parts.append(f"{value:g} {name}")
            elif value:
                parts.append(str(value))
        return f"impasto {self.op} ({', '.join(parts)})" if parts else f"impasto {self.op}"

    def request(self, doc, source, live: bool = False) -> Request:
        """Read everything the job needs from Krita (main thread); user errors raise
        :class:`document.UnsupportedDocument` with the message to show.

        ``live``: a run of live mode: the op's live settings go over the form's options, and the result is
        named to replace the previous live result (``impasto OP (live)``)."""
        document.check_document(doc)
        selection = [name for name, f in self.slots.items() if isinstance(f, SelectionField) and f.get()]
        if self.source is not None:
            inputs = document.read_layer(doc, source, bool(selection), crop=self.crops())
            images = {self.source: inputs.image()}
        else:
            inputs, images, source = document.document_inputs(doc), {}, None
        for name in selection:
            images[name] = inputs.mask_image()
        bounds = (inputs.x, inputs.y, inputs.width, inputs.height)
        missing = []
        for name, f in self.slots.items():
            if isinstance(f, FileSlotField):
                data = f.image(doc)
                if data is not None:
                    images[name] = data
            elif isinstance(f, SlotField):
                f.combo.refresh(doc)
                paired = bool(self.source) and f.info.get("same_size_as") == self.source  # pixel for pixel
                layer = f.combo.layer()
                if (paired or name == self.live_slot) and source is not None and layer is not None \
                        and layer.uniqueId() == source.uniqueId():
                    raise document.UnsupportedDocument(
                        f"the active layer '{source.name()}' is the {name} image: select the {self._source_role()} "
                        f"layer to send, or choose another layer for {name}")
                image = f.image(doc, bounds if paired else None)
                if paired and inputs.mask is not None and self.crops() and isinstance(image, document.RawImage):
                    image = document.RawImage(document.clear_outside(image.data, inputs.mask), inputs.width,
                                              inputs.height, 4, order="ORDER_BGR")  # as the source: only the selection
                if image is None and f.required:
                    missing.append(name)
                if image is not None:
                    images[name] = image
        for name, f in self.slots.items():  # a slot given instead of another (apply instead of geometry):
            if f.info.get("unless") in images:  # the other stays out (the server takes one of the two)
                images.pop(name, None)
        for name in missing:  # a slot required unless another is given (warp's geometry, unless apply)
            unless = self.slots[name].info.get("unless")
            if unless and unless in images:
                continue
            instead = f", or a {self.links[unless]['name']} file for {unless}" if unless in self.links else \
                f", or give {unless}" if unless else ""
            raise document.UnsupportedDocument(
                f"{self.op} needs {_article(name)} {name} image: pick a file or a layer{instead}")
        snapped = 0
        for name in list(images):
            what = f"the label layer '{source.name()}'" if name == self.source and source is not None else name
            images[name], changed = self._snap(name, images[name], what)
            snapped += changed
        self.fit_document(doc)
        options = self.values()
        layer_name = f"impasto {self.op} (live)" if live else self.layer_name(options)
        if live:
            options.update(self.live_options)
        wanted = self.wanted()
        keep = {o["name"]: slot for slot, o in self.links.items()}
        kept_only = [name for name in keep if name not in wanted]
        return Request(self.op, images, options, wanted + kept_only, inputs, source, layer_name,
                       list(self.info.get("outputs", [])), snapped, live=live, keep=keep, kept_only=kept_only)

    # --- "Apply the same OP" --------------------------------------------------------------------

    def remember(self, request: Request, result: dict) -> bool:
        """Keep the outputs of a finished run that slots take back (the flow); whether any came."""
        found = {slot: result.get("files", {}).get(out) for out, slot in request.keep.items()}
        found = {slot: data for slot, data in found.items() if data}
        if found:
            self.kept = found
            self.kept_from = request.source.uniqueId() if request.source is not None else None
        return bool(found)

    def reused(self) -> dict:
        """What "Apply the same" sends in the linked slots: the file chosen there, else the last run's output."""
        sent = {}
        for name, f in self.slots.items():
            if name in self.links:
                data = f.image() if isinstance(f, FileSlotField) else None
                if data is None:
                    data = self.kept.get(name)
                if data is not None:
                    sent[name] = data
        return sent

    def reuse_targets(self, doc, layers: list) -> list:
        """The layers of ``layers`` (the selected layers) that "Apply the same" runs on: all but the
        one the kept output was made from (and layers with no pixels to send), each once.
        Raises :class:`document.UnsupportedDocument` with the message to show."""
        document.check_document(doc)
        if not self.reused():
            what = " and ".join(sorted({o["name"] for o in self.links.values()}))
            raise document.UnsupportedDocument(
                f"run {self.op} first (its {what} is kept for this), or choose a {what} file")
        chosen = any(isinstance(f, FileSlotField) and f.get() for f in self.slots.values())
        made_from = None if chosen else self.kept_from
        others, skipped = [], []
        for node in layers:
            if made_from is not None and node.uniqueId() == made_from:
                continue  # already warped: that run made the field
            if node.type() not in document.SOURCE_TYPES or node.name().startswith("impasto preview"):
                skipped.append(node.name())
                continue
            if all(node.uniqueId() != n.uniqueId() for n in others):
                others.append(node)
        if not others:
            raise document.UnsupportedDocument(
                f"select the other layers to {self.op} (Ctrl+click them in the Layers docker)"
                + (f"; '{skipped[0]}' is not a paint layer" if skipped else ""))
        return others

    def reuse_request(self, doc, node) -> Request:
        """The job "Apply the same" sends for ``node`` (read now, on the main thread): the layer as
        the source and the kept output (or the chosen file) in its slot; no other image, the
        server's default options (the field is applied as it was saved), no extra outputs."""
        reused = self.reused()
        if not reused:
            raise document.UnsupportedDocument(f"nothing kept to apply again: run {self.op} first")
        inputs = document.read_layer(doc, node, False, crop=self.crops())
        images = {self.source: inputs.image(), **reused}
        same = " and ".join(sorted(self.links[slot]["name"] for slot in reused))
        return Request(self.op, images, {}, [], inputs, node, f"impasto {self.op} ({node.name()}, same {same})",
                       list(self.info.get("outputs", [])), reuse=True)

    def _source_role(self) -> str:
        slot = next((s for s in self.info.get("images", []) if s["name"] == self.source), {})
        role = slot.get("role", "image")
        return {"image": "picture", "labels": "label", "lineart": "line-art"}.get(role, role)

    def live_source(self) -> str:
        """What live mode watches as the source, in the docker's messages: labels, line art, the picture."""
        return "line art" if self.live_slot else "labels" if self.label_slots else self._source_role()

    def live_layers(self) -> list:
        """The layers live mode watches besides the source: the layer chosen for the hints slot, if any.

        Asked for at every tick: the drop-down is not refreshed here (it is when it opens), so a
        user choosing a layer in it is not disturbed."""
        f = self.slots.get(self.live_slot) if self.live_slot else None
        if not isinstance(f, SlotField) or f.combo.is_file():
            return []
        layer = f.combo.layer()
        return [layer] if layer is not None else []

    def describe(self) -> dict:
        """The form as its widgets show it: compare with the op's entry in Capabilities."""
        return {"op": self.op, "source": self.source,
                "images": {name: f.describe() for name, f in self.slots.items()},
                "options": {name: f.describe() for name, f in self.options.items()},
                "outputs": {name: {"label": box.text(), "help": box.toolTip(), "checked": box.isChecked()}
                            for name, box in self.outputs.items()},
                "palette": self.palette_field.describe() if self.palette_field is not None else None,
                "live": self.live is not None, "live_slot": self.live_slot, "live_options": self.live_options,
                "reuse": {slot: out["name"] for slot, out in self.links.items()},
                "apply_button": self.apply_button.text() if self.apply_button is not None else None}


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize()


def _article(name: str) -> str:
    return "an" if name[:1].lower() in "aeiou" else "a"
