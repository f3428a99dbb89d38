"""The label palette in an op's form: one swatch a label, a click sets Krita's foreground colour.

Shown for ops with an image slot of role ``labels`` whose model carries a label table
(``labels.py`` reads it from Capabilities). **Save as Krita palette** writes the table as a
GIMP palette into Krita's resource folder (``palettes/MODEL.gpl``), so the Palette docker
offers it too: Krita 5.1's Python API has no call that adds a palette resource while Krita
runs (``Krita.resources("palette")`` only lists them, and ``Palette`` only edits an existing
one), so Krita loads the file at its next start.
"""

from __future__ import annotations

from krita import Krita, ManagedColor
from PyQt5.QtGui import QColor, QIcon, QPixmap
from PyQt5.QtWidgets import QGridLayout, QLabel, QPushButton, QToolButton, QVBoxLayout, QWidget

from .labels import Palette, write_gpl

COLUMNS = 3


def set_foreground(rgb: tuple[int, int, int]) -> str | None:
    """Make ``rgb`` the active view's foreground colour, exactly (8-bit RGBA); a message if there is no view."""
    window = Krita.instance().activeWindow()
    view = window.activeView() if window is not None else None
    if view is None:
        return "open a document in a window first: the swatches set its foreground colour"
    r, g, b = rgb
    color = ManagedColor("RGBA", "U8", "")
    color.setComponents([b / 255.0, g / 255.0, r / 255.0, 1.0])  # Krita's channel order: B, G, R, A
    view.setForeGroundColor(color)
    return None


def _icon(rgb: tuple[int, int, int]) -> QIcon:
    pixmap = QPixmap(16, 16)
    pixmap.fill(QColor(*rgb))
    return QIcon(pixmap)


class PaletteField(QWidget):
    """Swatches of one model's labels, a button that saves them as a Krita palette, and a status line."""

    def __init__(self, palette: Palette | None, parent=None):
        super().__init__(parent)
        self.setObjectName("palette")
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.title = QLabel()
        self.title.setWordWrap(True)
        outer.addWidget(self.title)
        self.grid = QGridLayout()
        self.grid.setSpacing(2)
        outer.addLayout(self.grid)
        self.save_button = QPushButton("Save as Krita palette")
        self.save_button.setToolTip("write the labels as a .gpl palette into Krita's resource folder "
                                    "(the Palette docker lists it after Krita restarts)")
        self.save_button.clicked.connect(self.save)
        outer.addWidget(self.save_button)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        outer.addWidget(self.status)
        self.buttons: list[QToolButton] = []
        self.palette: Palette | None = None
        self.set_palette(palette)

    def set_palette(self, palette: Palette | None) -> None:
        """Show ``palette`` (None: say that the model has no label table here)."""
        if palette == self.palette and self.buttons:
            return
        self.palette = palette
        for button in self.buttons:
            self.grid.removeWidget(button)
            button.deleteLater()
        self.buttons = []
        self.save_button.setEnabled(palette is not None)
        if palette is None:
            self.title.setText("no label table for this model on the server: paint with its colours by hand")
            return
        self.title.setText(f"Labels of {palette.model}: click one to paint with it (sides: multiples of {palette.stride} px)")
        for i, (name, rgb) in enumerate(palette.labels):
            button = QToolButton()
            button.setObjectName(f"swatch_{name}")
            button.setText(name)
            button.setIcon(_icon(rgb))
            button.setToolButtonStyle(2)  # Qt.ToolButtonTextBesideIcon
            button.setToolTip(f"{name}: {palette.hex(i)} (class {i})")
            button.setAutoRaise(True)
            button.clicked.connect(lambda _=False, index=i: self.pick(index))
            self.grid.addWidget(button, i // COLUMNS, i % COLUMNS)
            self.buttons.append(button)

    def pick(self, index: int) -> None:
        """A swatch was clicked: its colour becomes the foreground colour."""
        name, rgb = self.palette.labels[index]
        problem = set_foreground(rgb)
        self.status.setText(problem or f"painting with '{name}' ({self.palette.hex(index)})")

    def save(self) -> str | None:
        """Write the palette as a .gpl file into Krita's resource folder; returns its path."""
        if self.palette is None:
            return None
        try:
            path = write_gpl(self.palette, Krita.instance().getAppDataLocation())
        except OSError as e:
            self.status.setText(f"could not save the palette: {e.strerror or e}")
            return None
        self.status.setText(f"saved {path}; Krita's Palette docker lists '{self.palette.model}' after a restart")
        return path

    def describe(self) -> dict:
        """What the swatches show, read back from the widgets (compare with the label table)."""
        return {"model": self.palette.model if self.palette else None,
                "swatches": [{"name": b.text(), "tooltip": b.toolTip(),
                              "color": b.icon().pixmap(16, 16).toImage().pixelColor(8, 8).name()} for b in self.buttons]}
