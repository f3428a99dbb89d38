"""The widgets of an op's form, one per option or image slot, each with a value (``forms.py`` lays them out).

Built from Capabilities' ``OptionInfo`` and ``ImageSlot`` entries: an option becomes a spin
box, decimal spin box, check box, drop-down or text field by its type and choices, with its
range, default and help (a string option whose values the chosen model lists, such as a
class name, an editable drop-down of that list); an image slot a choice of none / image
file / a paint layer (a reference picture, colour hints painted on their own layer), or, for a ``mask`` slot,
"Selection only", or, for a slot that takes back a file an output gave (a flow .npz), none / a file. Each reads back what it offers (``describe``), so the
tests can compare the widgets with Capabilities.
"""

from __future__ import annotations

import math

from PyQt5.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from . import document

INT32 = 2**31 - 1
UNBOUNDED = 1e15  # a float spin box's range when Capabilities gives none (Qt needs numbers)

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
    """One option's widget; ``pinned`` once the user (or :meth:`OpForm.set`) changed it.

    ``model_choices``: the option's values come from the model the form runs (a list in the
    model's Capabilities parameters, :meth:`set_choices` when the model changes): an editable
    drop-down, so that the default (e.g. empty) and names the list lacks can still be typed.
    """

    def __init__(self, info: dict, model_choices: list[str] | None = None):
        self.info = info
        self.name = info["name"]
        self.type = info.get("type") or "string"
        self.default = parse_value(self.type, info.get("default", ""))
        self.pinned = False
        self.model_choices = model_choices
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
        if self.model_choices is not None:
            w = QComboBox()
            w.setEditable(True)
            w.setInsertPolicy(QComboBox.NoInsert)
            w.addItems(self.model_choices)
            w.setCurrentIndex(-1)  # no item chosen yet: picking any one (the first too) is a change
            w.setEditText(str(self.default))
            w.lineEdit().setPlaceholderText("default")
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
            return w.currentTextChanged if w.isEditable() else w.currentIndexChanged
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
                if index < 0 and not w.isEditable():
                    raise ValueError(f"{self.name} '{value}' is not one of {', '.join(self.choices())}")
                w.setCurrentIndex(index)
                if w.isEditable():  # a value the list lacks is typed in
                    w.setEditText(str(value))
            else:
                w.setText(str(value))
        finally:
            w.blockSignals(False)
        self.pinned = self.pinned or pin

    def choices(self) -> list[str]:
        w = self.widget
        return [w.itemText(i) for i in range(w.count())] if isinstance(w, QComboBox) else []

    def set_choices(self, choices: list[str]) -> None:
        """New values from the model (the form's model changed): the value stays if the new list
        has it (or it is the default), else it goes back to the default."""
        w = self.widget
        if self.model_choices is None or not isinstance(w, QComboBox):
            return
        self.model_choices = list(choices)
        value = w.currentText()
        w.blockSignals(True)
        try:
            w.clear()
            w.addItems(self.model_choices)
            keep = value in self.model_choices or value == str(self.default)
            w.setCurrentIndex(self.model_choices.index(value) if value in self.model_choices else -1)
            w.setEditText(value if keep else str(self.default))
        finally:
            w.blockSignals(False)

    def describe(self) -> dict:
        """What the widget offers, read back from it."""
        w = self.widget
        lo = hi = None
        if isinstance(w, (QSpinBox, QDoubleSpinBox)):
            kind = int if self.type == "int" else float
            lo = None if self.range[0] is None else kind(w.minimum())
            hi = None if self.range[1] is None else kind(w.maximum())
        return {"type": self.type, "widget": type(w).__name__, "default": self.value(), "min": lo, "max": hi,
                "choices": self.choices(), "help": w.toolTip(), "from_model": self.model_choices is not None}


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

    def image(self, doc, bounds: tuple[int, int, int, int] | None = None):
        """The slot's image as it goes out: file bytes, a layer's pixels (over ``bounds``, the
        source's rectangle, when given; else across the document), or None."""
        if self.combo.is_file():
            if not self.combo.path:
                return None
            try:
                with open(self.combo.path, "rb") as f:
                    return f.read()
            except OSError as e:
                raise document.UnsupportedDocument(f"cannot read {self.name} image {self.combo.path}: {e.strerror}") from None
        layer = self.combo.layer()
        return document.layer_image(doc, layer, bounds) if layer is not None else None

    def describe(self) -> dict:
        items = [self.combo.itemText(i) for i in range(self.combo.fixed)]
        return {"role": self.info.get("role", "image"), "widget": "choice", "required": self.required, "items": items,
                "help": self.combo.toolTip()}


class FileSlotField:
    """A slot that takes back a file one of the op's outputs gave (its role is that output's name:
    warp's ``apply`` slot, role ``flow``, takes the ``flow`` output's .npz): "none" or a file.

    Not an image, so no layers are offered; the file goes out as its bytes, as the server wrote it.
    """

    def __init__(self, info: dict, output: dict):
        self.info = info
        self.name = info["name"]
        self.required = bool(info.get("required"))
        self.output = output
        suffix = (output.get("filename") or "").rpartition(".")[2]
        self.pattern = f"*.{suffix}" if suffix and suffix != output.get("filename") else "*"
        self.combo = QComboBox()
        self.combo.addItem("none")
        self.combo.addItem(f"{output['name']} file...")
        self.combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(6)
        self.combo.setToolTip(info.get("help", ""))
        self.combo.setObjectName(f"image_{self.name}")
        self.path = ""
        pick = QPushButton("...")
        pick.setMaximumWidth(32)
        pick.setToolTip(f"pick a {output['name']} file ({self.pattern}) an earlier run saved")
        pick.clicked.connect(self.pick_file)
        self.widget = QWidget()
        row = QHBoxLayout(self.widget)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.combo, 1)
        row.addWidget(pick)

    def pick_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.widget, self.name, "", f"{self.output['name']} ({self.pattern})")
        if path:
            self.set(path)

    def set(self, value, doc=None) -> None:
        """None (no file) or a file path."""
        if value is None:
            self.combo.setCurrentIndex(0)
            return
        if not isinstance(value, str):
            raise TypeError(f"{self.name} takes a {self.output['name']} file, not a layer")
        self.path = value
        self.combo.setItemText(1, value.replace("\\", "/").rsplit("/", 1)[-1] or f"{self.output['name']} file...")
        self.combo.setCurrentIndex(1)

    def get(self) -> str | None:
        return (self.path or None) if self.combo.currentIndex() == 1 else None

    def image(self, doc=None, bounds=None) -> bytes | None:
        """The file's bytes, or None."""
        path = self.get()
        if path is None:
            return None
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            raise document.UnsupportedDocument(f"cannot read {self.name} file {path}: {e.strerror}") from None

    def describe(self) -> dict:
        return {"role": self.info.get("role", ""), "widget": "file", "required": self.required,
                "items": [self.combo.itemText(i) for i in range(self.combo.count())], "help": self.combo.toolTip(),
                "takes": self.output["name"]}


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
