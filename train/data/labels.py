"""Label tables: the classes of a semantic model, each with a name and a colour.

A label map is stored either as an *index image* (one 8-bit channel, the value is the class
index) or *colour-coded* (RGB, each class painted in its table colour, as GauGAN's palette
and Krita palettes do). A table travels with a model (in its weights' metadata and its
model-repository config) so that every interface reads label maps the same way.

The JSON form, also the ``labels.json`` of the generic dataset folder layout::

    {"labels": [{"name": "sky", "color": "#87ceeb"}, {"name": "grass", "color": "#3c8c28"}]}

The position in the list is the class index.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["LANDSCAPE", "Label", "LabelError", "LabelTable"]

_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")
MAX_LABELS = 256  # an index image holds one byte per pixel


class LabelError(ValueError):
    """A label table or a label map that does not fit the rules (the message names what and why)."""


@dataclass(frozen=True)
class Label:
    """One class: its name and the colour it is painted in (``#rrggbb``)."""

    name: str
    color: str

    @property
    def rgb(self) -> tuple[int, int, int]:
        return int(self.color[1:3], 16), int(self.color[3:5], 16), int(self.color[5:7], 16)


@dataclass(frozen=True)
class LabelTable:
    """An ordered list of labels: the index of a label is its class index."""

    labels: tuple[Label, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.labels) <= MAX_LABELS:
            raise LabelError(f"a label table holds 1 to {MAX_LABELS} labels, got {len(self.labels)}")
        names, colors = set(), set()
        for i, label in enumerate(self.labels):
            if not label.name or not label.name.strip():
                raise LabelError(f"label {i} has no name")
            if not _HEX.match(label.color):
                raise LabelError(f"label '{label.name}' has colour '{label.color}'; colours are written #rrggbb")
            if label.name in names:
                raise LabelError(f"label name '{label.name}' appears twice")
            if label.color.lower() in colors:
                raise LabelError(f"colour {label.color} is used by two labels (one is '{label.name}')")
            names.add(label.name)
            colors.add(label.color.lower())

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def names(self) -> list[str]:
        return [label.name for label in self.labels]

    def index(self, name: str) -> int:
        """The class index of ``name``; LabelError listing the names if there is none."""
        for i, label in enumerate(self.labels):
            if label.name == name:
                return i
        raise LabelError(f"unknown label '{name}': the table has {', '.join(self.names)}")

    def palette(self) -> np.ndarray:
        """(N, 3) uint8 colours, row i for class i."""
        return np.array([label.rgb for label in self.labels], np.uint8)

    # -- label maps -------------------------------------------------------------------------------

    def colorize(self, index: np.ndarray) -> np.ndarray:
        """An (H, W) index map as an (H, W, 3) uint8 colour-coded picture."""
        self.check_index(index)
        return self.palette()[index]

    def check_index(self, index: np.ndarray, field: str = "labels") -> None:
        """LabelError if an index map holds a class the table does not have."""
        top = int(index.max()) if index.size else 0
        if top >= len(self.labels):
            raise LabelError(f"{field} uses class index {top}, but the table has {len(self.labels)} labels "
                             f"(0 to {len(self.labels) - 1})")

    def index_of_colors(self, rgb: np.ndarray, field: str = "labels") -> np.ndarray:
        """An (H, W, 3) colour-coded map as an (H, W) uint8 index map.

        Every pixel must be exactly one of the table's colours (label maps are painted with
        hard edges, no anti-aliasing); otherwise LabelError names the first stray colour,
        where it is and how many pixels have a colour outside the table.
        """
        if rgb.ndim != 3 or rgb.shape[2] < 3:
            raise LabelError(f"{field} must be an RGB picture, got shape {tuple(rgb.shape)}")
        rgb = np.ascontiguousarray(rgb[..., :3], np.uint8)
        key = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
        table = self.palette().astype(np.uint32)
        table_keys = (table[:, 0] << 16) | (table[:, 1] << 8) | table[:, 2]
        order = np.argsort(table_keys)
        sorted_keys = table_keys[order]
        pos = np.clip(np.searchsorted(sorted_keys, key), 0, len(sorted_keys) - 1)
        found = sorted_keys[pos] == key
        if not found.all():
            y, x = np.argwhere(~found)[0]
            r, g, b = (int(v) for v in rgb[y, x])
            raise LabelError(f"{field} has colour #{r:02x}{g:02x}{b:02x} at x={x}, y={y} that is not in the label "
                             f"table ({int((~found).sum())} pixels have colours outside it); "
                             f"`impasto labels MODEL` prints the table")
        return order[pos].astype(np.uint8)

    def to_index(self, picture: np.ndarray, field: str = "labels") -> np.ndarray:
        """An index map from either form: (H, W) or single-channel is an index image, RGB is colour-coded."""
        if picture.ndim == 2 or (picture.ndim == 3 and picture.shape[2] == 1):
            index = picture.reshape(picture.shape[:2])
            if not np.issubdtype(index.dtype, np.integer) or index.min() < 0:
                raise LabelError(f"{field} as an index image must hold non-negative integers")
            self.check_index(index, field)
            return index.astype(np.uint8)
        return self.index_of_colors(picture, field)

    # -- JSON ---------------------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps({"labels": [{"name": lb.name, "color": lb.color} for lb in self.labels]})

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "label table") -> LabelTable:
        try:
            data = json.loads(text)
            items = data["labels"] if isinstance(data, dict) else data
            return cls(tuple(Label(str(item["name"]), str(item["color"])) for item in items))
        except LabelError as e:
            raise LabelError(f"{source}: {e}") from None
        except (ValueError, KeyError, TypeError) as e:
            raise LabelError(f"{source} is not a label table ({{\"labels\": [{{\"name\", \"color\"}}, ...]}}): {e}") from None

    @classmethod
    def load(cls, path: str | Path) -> LabelTable:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise LabelError(f"cannot read label table '{path}': {e.strerror or e}") from None
        return cls.from_json(text, str(path))


# The demo landscape classes (procedural layouts of `impasto data build semantic`); colours
# follow GauGAN's demo palette where it has the class.
LANDSCAPE = LabelTable((
    Label("sky", "#75cbf0"),
    Label("cloud", "#dcdcdc"),
    Label("mountain", "#869664"),
    Label("water", "#3c64b4"),
    Label("grass", "#7bc800"),
    Label("sand", "#d2c896"),
    Label("snow", "#f0f0ff"),
    Label("rock", "#8c6e5a"),
    Label("tree", "#287828"),
))
