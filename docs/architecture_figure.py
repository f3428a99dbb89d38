"""Draws docs/img/architecture.png: the layers, and the path of one request through them.

    python docs/architecture_figure.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

OUT = Path(__file__).parent / "img" / "architecture.png"

BOXES = {  # name: (x, y, w, h, text, colour)
    "registry": (0.2, 4.1, 3.8, 1.1, "runtime/ops/\nop registry: one OpSpec per op\noptions · image slots · outputs · run", "#f6d58e"),
    "cli": (0.2, 6.3, 2.4, 0.9, "CLI\nimpasto OP / client OP", "#cfe3f7"),
    "addons": (2.9, 6.3, 2.6, 0.9, "Krita · Blender\nforms from Capabilities", "#cfe3f7"),
    "batch": (6.0, 6.3, 2.2, 0.9, "batch\nspecs, Ray, farms", "#cfe3f7"),
    "pipelines": (8.6, 6.3, 2.4, 0.9, "studio pipelines\ngRPC · tritonclient", "#cfe3f7"),
    "server": (3.4, 2.4, 5.3, 0.9, "server (runtime/server): Run · /v1/ops/{op} · Capabilities · jobs\n"
               "typed Paint/Texture/Stylize = aliases of Run", "#d9ecd0"),
    "sidecar": (0.6, 0.4, 3.6, 1.0, "sidecar (torch)\noptimisation ops: paint, texture, stylize", "#e8dcf3"),
    "engine": (6.6, 0.4, 4.2, 1.0, "engine: model pool + batcher\nTensorRT · ONNX Runtime (feed-forward ops)", "#e8dcf3"),
    "export": (9.0, 2.4, 2.6, 0.9, "export/\nfamilies → ONNX → TRT", "#f3dada"),
    "train": (9.0, 4.0, 2.6, 1.1, "train/\nmodels · losses · loops\noption schema", "#f3dada"),
}
ARROWS = [
    ("cli", "registry", "derive flags"), ("addons", "server", "Capabilities, Run"), ("batch", "registry", "keys"),
    ("pipelines", "server", ""), ("server", "registry", "check, describe"), ("server", "sidecar", "sidecar op"),
    ("server", "engine", "engine op"), ("export", "engine", "model repository"), ("train", "export", ""),
    ("registry", "train", "options"),
]


def _centre(name: str) -> tuple[float, float]:
    x, y, w, h, *_ = BOXES[name]
    return x + w / 2, y + h / 2


def main() -> Path:
    fig, ax = plt.subplots(figsize=(11.8, 7.6), dpi=110)
    ax.set_xlim(0, 11.8)
    ax.set_ylim(0, 7.6)
    ax.axis("off")
    patches = {}
    for name, (x, y, w, h, text, colour) in BOXES.items():
        patches[name] = FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=colour, ec="#444", lw=1)
        ax.add_patch(patches[name])
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=8.5, zorder=3)
    for a, b, label in ARROWS:
        (x0, y0), (x1, y1) = _centre(a), _centre(b)
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=12, color="#555",
                                     patchA=patches[a], patchB=patches[b], lw=1, zorder=2))
        if label:
            ax.text((x0 + x1) / 2, (y0 + y1) / 2, label, fontsize=7.5, color="#333", ha="center",
                    bbox=dict(fc="white", ec="none", pad=1))
    ax.text(0.2, 7.35, "impasto: every surface derives from one op definition; dependencies point runtime → export → train",
            fontsize=10, weight="bold")
    OUT.parent.mkdir(exist_ok=True)
    fig.savefig(OUT, bbox_inches="tight")
    return OUT


if __name__ == "__main__":
    print("wrote", main())
