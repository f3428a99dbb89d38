"""An operation's form, built from its entry in the server's Capabilities (an ``OpInfo``).

Nothing here knows any operation: the images an op takes, its options and its optional
outputs all come from Capabilities, so an op added on the server appears in the docker
with its form and no new add-on release. The rules:

- image slots: the first required slot with role ``image`` (else the first required slot)
  is the **source**, the active layer; a ``mask`` slot is the selection ("Selection only");
  every other slot is a choice of "none" (optional slots only), "image file..." or one of
  the document's paint layers;
- options, by type: ``int`` a spin box, ``float`` a decimal spin box, ``string`` with choices
  a combo box, ``bool`` a check box, other strings a line edit; range, default and choices
  as declared, the help as tooltip. Options named ``size``, ``width`` and ``height`` follow
  the document (its longer side, width, height) until the user sets them;
- outputs made only on request (``on_request``): a check box each.

:meth:`OpForm.set` / :meth:`OpForm.get` reach any of these by name (scripts, tests), and
:meth:`OpForm.describe` reads the widgets back, to check them against Capabilities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from krita import Krita
from PyQt5.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from . import document

INT32 = 2**31 - 1
UNBOUNDED = 1e15  # a float spin box's range when Capabilities gives none (Qt needs numbers)
DOCUMENT_SIZED = ("size", "width", "height")  # int options that follow the document until set by hand
PLACES = {"layer": "new layer", "texture": "new layer", "vector": "vector layer", "file": "file"}  # files go beside the document


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


def parse_value(kind: str, text) -> object:
    """An option's default (Capabilities sends it as text) as a value of its type."""
    text = "" if text is None else str(text)
    try:
        if kind == "int":
            return int(float(text)) if text else 0
        if kind == "float":
            return float(text) if text else 0.0
    except ValueError:
        return 0 if kind == "int" else 0.0
    if kind == "bool":
        return text.strip().lower() in ("true", "1", "yes", "on")
    return text


def option_range(info: dict) -> tuple[float | None, float | None]:
    """(min, max) of a numeric option; None where there is no bound.

    Protobuf's JSON leaves out zeros: a missing ``min`` next to a ``max`` is 0; without
    either, or with a ``max`` not above ``min``, that side is open.
    """
    def number(key):
        value = info.get(key)
        try:
            value = float(value)
        except (TypeError, ValueError):
            return None
        return value if math.isfinite(value) else None

    lo, hi = number("min"), number("max")
    if lo is None and hi is None:
        return None, None
    if lo is None:
        lo = 0.0
    if hi is not None and hi <= lo:
        hi = None
    return lo, hi


def _decimals(x: float) -> int:
    """Decimal places that show ``x`` exactly (at most 10)."""
    for k in range(11):
        if abs(round(x, k) - x) <= 1e-12 * max(1.0, abs(x)):
            return k
    return 10


def float_step(default: float) -> float:
    """One click of a decimal spin box: a tenth of the default's order of magnitude (0.1 for 0)."""
    if default == 0:
        return 0.1
    order = math.floor(math.log10(abs(default)))
    return 10.0 ** (order - 1 if abs(default) >= 1 else order)


# --- fields: one widget (or row) each, with a value --------------------------------------------


class OptionField:
    """One option's widget; ``pinned`` once the user (or :meth:`OpForm.set`) changed it."""

    def __init__(self, info: dict):
        self.info = info
        self.name = info["name"]
        self.type = info.get("type") or "string"
        self.default = parse_value(self.type, info.get("default", ""))
        self.pinned = False
        self.widget = self._make()
        self.widget.setMinimumWidth(60)  # long ranges and choices must not widen the docker
        if isinstance(self.widget, QComboBox):
            self.widget.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
            self.widget.setMinimumContentsLength(6)
        self.widget.setToolTip(info.get("help", ""))
        self.widget.setObjectName(f"option_{self.name}")
        self._signal().connect(self._pin)

    def _make(self) -> QWidget:
        lo, hi = self.range = option_range(self.info)  # None: open on that side
        if self.type == "int":
            lo = -INT32 if lo is None else lo
            hi = INT32 if hi is None else hi
            if -INT32 <= lo and hi <= INT32:
                w = QSpinBox()
            else:  # beyond a QSpinBox (a 53-bit seed): whole numbers in a double, exact up to 2**53
                w = QDoubleSpinBox()
                w.setDecimals(0)
            w.setRange(int(lo), int(hi))
            w.setValue(int(self.default))
            return w
        if self.type == "float":
            w = QDoubleSpinBox()
            step = float_step(self.default)
            w.setDecimals(max(2, *(_decimals(x) for x in (self.default, step, lo or 0.0, hi or 0.0))))
            w.setRange(-UNBOUNDED if lo is None else lo, UNBOUNDED if hi is None else hi)
            w.setSingleStep(step)
            w.setValue(self.default)
            return w
        if self.type == "bool":
            w = QCheckBox()
            w.setChecked(bool(self.default))
            return w
        choices = list(self.info.get("choices", []))
        if choices:
            w = QComboBox()
            w.addItems(choices)
            if self.default not in choices:
                w.insertItem(0, str(self.default))
            w.setCurrentText(str(self.default))
            return w
        return QLineEdit(str(self.default))

    def _signal(self):
        w = self.widget
        if isinstance(w, (QSpinBox, QDoubleSpinBox)):
            return w.valueChanged
        if isinstance(w, QCheckBox):
            return w.toggled
        if isinstance(w, QComboBox):
            return w.currentIndexChanged
        return w.textEdited

    def _pin(self, *_):
        self.pinned = True

    def value(self):
        w = self.widget
        if isinstance(w, (QSpinBox, QDoubleSpinBox)):
            return int(round(w.value())) if self.type == "int" else float(w.value())
        if isinstance(w, QCheckBox):
            return w.isChecked()
        if isinstance(w, QComboBox):
            return w.currentText()
        return w.text()

    def set(self, value, pin: bool = True) -> None:
        w = self.widget
        w.blockSignals(True)
        try:
            if isinstance(w, (QSpinBox, QDoubleSpinBox)):
                w.setValue(int(value) if self.type == "int" and isinstance(w, QSpinBox) else float(value))
            elif isinstance(w, QCheckBox):
                w.setChecked(bool(value))
            elif isinstance(w, QComboBox):
                index = w.findText(str(value))
                if index < 0:
                    raise ValueError(f"{self.name} '{value}' is not one of {', '.join(self.choices())}")
                w.setCurrentIndex(index)
            else:
                w.setText(str(value))
        finally:
            w.blockSignals(False)
        self.pinned = self.pinned or pin

    def choices(self) -> list[str]:
        w = self.widget
        return [w.itemText(i) for i in range(w.count())] if isinstance(w, QComboBox) else []

    def describe(self) -> dict:
        """What the widget offers, read back from it."""
        w = self.widget
        lo = hi = None
        if isinstance(w, (QSpinBox, QDoubleSpinBox)):
            kind = int if self.type == "int" else float
            lo = None if self.range[0] is None else kind(w.minimum())
            hi = None if self.range[1] is None else kind(w.maximum())
        return {"type": self.type, "widget": type(w).__name__, "default": self.value(), "min": lo, "max": hi,
                "choices": self.choices(), "help": w.toolTip()}


class SlotCombo(QComboBox):
    """An image slot's source: "none" (optional slots), "image file...", then the document's
    paint layers, refreshed each time it opens."""

    def __init__(self, required: bool, documents, parent=None):
        super().__init__(parent)
        self.fixed = 1 if required else 2  # entries before the layers
        if not required:
            self.addItem("none")
        self.addItem("image file...")
        self.documents = documents
        self.layers = []
        self.path = ""

    def showPopup(self) -> None:
        self.refresh()
        super().showPopup()

    def refresh(self, doc=None) -> None:
        current = self.layer()
        index = self.currentIndex()
        while self.count() > self.fixed:
            self.removeItem(self.fixed)
        self.layers = document.paint_layers(doc if doc is not None else self.documents())
        for layer in self.layers:
            self.addItem(f"layer: {layer.name()}")
        if current is not None:  # the same layer, wherever it is now
            index = next((self.fixed + i for i, n in enumerate(self.layers) if n.uniqueId() == current.uniqueId()),
                         self.fixed - 1)
        self.setCurrentIndex(min(index, self.count() - 1))

    def layer(self):
        i = self.currentIndex() - self.fixed
        return self.layers[i] if 0 <= i < len(self.layers) else None

    def is_file(self) -> bool:
        return self.currentIndex() == self.fixed - 1

    def set_file(self, path: str) -> None:
        self.path = path
        self.setItemText(self.fixed - 1, path.rsplit("/", 1)[-1] or "image file...")
        self.setCurrentIndex(self.fixed - 1)

    def set_layer(self, node, doc=None) -> None:
        self.refresh(doc)
        index = next((i for i, n in enumerate(self.layers) if n.uniqueId() == node.uniqueId()), None)
        if index is None:
            raise ValueError(f"layer '{node.name()}' is not a paint layer of the document")
        self.setCurrentIndex(self.fixed + index)


class SlotField:
    """An image slot other than the source: a :class:`SlotCombo` and a file button."""

    def __init__(self, info: dict, documents):
        self.info = info
        self.name = info["name"]
        self.required = bool(info.get("required"))
        self.combo = SlotCombo(self.required, documents)
        self.combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(6)
        self.combo.setToolTip(info.get("help", ""))
        self.combo.setObjectName(f"image_{self.name}")
        pick = QPushButton("...")
        pick.setMaximumWidth(32)
        pick.setToolTip("pick an image file")
        pick.clicked.connect(self.pick_file)
        self.widget = QWidget()
        row = QHBoxLayout(self.widget)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.combo, 1)
        row.addWidget(pick)

    def pick_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.widget, self.name, "", "Images (*.png *.jpg *.jpeg *.webp)")
        if path:
            self.combo.set_file(path)

    def set(self, value, doc=None) -> None:
        """None (no image), a file path, or a layer (a Krita node)."""
        if value is None:
            if self.required:
                raise ValueError(f"{self.name} is required")
            self.combo.setCurrentIndex(0)
        elif isinstance(value, str):
            self.combo.set_file(value)
        else:
            self.combo.set_layer(value, doc)

    def get(self):
        if self.combo.is_file():
            return self.combo.path or None
        return self.combo.layer()

    def image(self, doc):
        """The slot's image as it goes out: file bytes, a layer's pixels, or None."""
        if self.combo.is_file():
            if not self.combo.path:
                return None
            try:
                with open(self.combo.path, "rb") as f:
                    return f.read()
            except OSError as e:
                raise document.UnsupportedDocument(f"cannot read {self.name} image {self.combo.path}: {e.strerror}") from None
        layer = self.combo.layer()
        return document.layer_image(doc, layer) if layer is not None else None

    def describe(self) -> dict:
        items = [self.combo.itemText(i) for i in range(self.combo.fixed)]
        return {"role": self.info.get("role", "image"), "widget": "choice", "required": self.required, "items": items,
                "help": self.combo.toolTip()}


class SelectionField:
    """A mask slot: the selection, with "Selection only" (pixels outside it stay as they are)."""

    def __init__(self, info: dict, label: str):
        self.info = info
        self.name = info["name"]
        self.required = bool(info.get("required"))
        self.widget = QCheckBox(label)
        self.widget.setToolTip(info.get("help", ""))
        self.widget.setObjectName(f"image_{self.name}")
        if self.required:
            self.widget.setChecked(True)
            self.widget.setEnabled(False)

    def set(self, value, doc=None) -> None:
        self.widget.setChecked(bool(value) or self.required)

    def get(self) -> bool:
        return self.widget.isChecked()

    def describe(self) -> dict:
        return {"role": self.info.get("role", "mask"), "widget": "selection", "required": self.required,
                "help": self.widget.toolTip()}


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

    def start(self, client):
        """Start the job (on a worker thread): yields its events."""
        return client.run_events(self.op, self.images, self.options, self.outputs)

    def place(self, doc, result: dict) -> list[str]:
        """Put the finished job's outputs into ``doc`` (main thread): what was added, in order."""
        return document.place_results(doc, self.source, self.inputs, self.places, result, self.name, self.outputs)


def source_slot(slots: list[dict]) -> dict | None:
    """The slot the active layer fills: the first required ``image``, else the first required slot."""
    required = [s for s in slots if s.get("required")]
    return next((s for s in required if s.get("role", "image") == "image"), required[0] if required else None)


class OpForm(QWidget):
    """The widgets of one op, from its ``OpInfo`` (a dict in protobuf's JSON mapping)."""

    def __init__(self, info: dict, documents=None, parent=None):
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
        self.slots: dict[str, SlotField | SelectionField] = {}
        masks = [s for s in slots if s.get("role") == "mask"]
        for slot in slots:
            if slot is source:
                continue
            if slot.get("role") == "mask":
                label = "Selection only" if len(masks) == 1 else f"Selection only: {slot['name']}"
                f = self.slots[slot["name"]] = SelectionField(slot, label)
                layout.addRow(f.widget)
            else:
                f = self.slots[slot["name"]] = SlotField(slot, self.documents)
                layout.addRow(_label(slot["name"]), f.widget)

        self.options: dict[str, OptionField] = {}
        for opt in info.get("options", []):
            f = self.options[opt["name"]] = OptionField(opt)
            layout.addRow(_label(opt["name"]), f.widget)

        self.outputs: dict[str, QCheckBox] = {}
        for out in info.get("outputs", []):
            if out.get("on_request"):
                box = QCheckBox(f"{out['name']} ({PLACES.get(out.get('place', ''), 'as well')})")
                box.setToolTip(out.get("help", ""))
                box.setObjectName(f"output_{out['name']}")
                self.outputs[out["name"]] = box
                layout.addRow("Also make" if len(self.outputs) == 1 else "", box)

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

    def get(self, name: str):
        kind, f = self._find(name)
        return f.isChecked() if kind == "output" else f.value() if kind == "option" else f.get()

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

    def request(self, doc, source) -> Request:
        """Read everything the job needs from Krita (main thread); user errors raise
        :class:`document.UnsupportedDocument` with the message to show."""
        document.check_document(doc)
        selection = [name for name, f in self.slots.items() if isinstance(f, SelectionField) and f.get()]
        if self.source is not None:
            inputs = document.read_layer(doc, source, bool(selection))
            images = {self.source: inputs.image()}
        else:
            inputs, images, source = document.document_inputs(doc), {}, None
        for name in selection:
            images[name] = inputs.mask_image()
        for name, f in self.slots.items():
            if isinstance(f, SlotField):
                f.combo.refresh(doc)
                image = f.image(doc)
                if image is None and f.required:
                    raise document.UnsupportedDocument(f"{self.op} needs {_article(name)} {name} image: pick a file or a layer")
                if image is not None:
                    images[name] = image
        self.fit_document(doc)
        options = self.values()
        wanted = self.wanted()
        return Request(self.op, images, options, wanted, inputs, source, self.layer_name(options),
                       list(self.info.get("outputs", [])))

    def describe(self) -> dict:
        """The form as its widgets show it: compare with the op's entry in Capabilities."""
        return {"op": self.op, "source": self.source,
                "images": {name: f.describe() for name, f in self.slots.items()},
                "options": {name: f.describe() for name, f in self.options.items()},
                "outputs": {name: {"label": box.text(), "help": box.toolTip(), "checked": box.isChecked()}
                            for name, box in self.outputs.items()}}


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize()


def _article(name: str) -> str:
    return "an" if name[:1].lower() in "aeiou" else "a"
