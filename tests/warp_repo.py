"""A model repository with a warp model, for tests that run ``impasto warp`` on the engine.

A randomly initialised tiny warper (side 64 through relu4_1: an 8 x 8 grid; the VGG-19 with
random weights: ImageNet weights are not needed to test the op) is saved by
:func:`impasto.train.models.weights_io.save_warp` and goes through the real export pipeline
(ONNX at opset 18, fp32/fp16 parity, TensorRT report) into a temporary repository as
``warp_demo``, the name the op and the server expect. A fresh estimator's last layer starts at
zero (the identity warp), so its weights are drawn here: the field is then uneven and far
from zero, and a test can tell a warp from none. The repository also holds :data:`OTHER_MODEL`,
the ``tint`` test model (tests/ops_tint.py), a model of another kind.

The registered ``warp_demo`` is built for the demo's interface (side 128) and ImageNet VGG
weights; the tiny one registers its own description under that name, so the export runs in
a child process and the test process's export registry stays as shipped.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MODEL, OTHER_MODEL = "warp_demo", "tint"
# small enough to export and run in seconds: 64 px through relu4_1 (stride 8) gives an 8 x 8 grid
TINY = dict(side=64, layer="relu4_1", width=8, iterations=2, max_shift=0.5)


def export_warp_repo(folder: Path, seed: int = 0) -> Path:
    """Export a random-weight warper (and the tint model) into ``folder / "models"`` in a child process; returns
    the repository."""
    run = subprocess.run([sys.executable, __file__, str(folder), str(seed)], capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"exporting the tiny warp model failed:\n{run.stderr[-4000:]}")
    return Path(folder) / "models"


def _export(folder: Path, seed: int) -> None:
    import torch

    import ops_tint  # noqa: F401  (registers the tint model with the exporter; this folder is on sys.path)
    from impasto.export.families.warper import warp_model
    from impasto.export.pipeline import export_model
    from impasto.export.registry import register
    from impasto.train.models.warper import WarpConfig, build_estimator
    from impasto.train.models.weights_io import save_warp

    torch.manual_seed(seed)
    config = WarpConfig(**TINY)
    estimator = build_estimator(config).eval()
    last = estimator.net[-1]
    with torch.no_grad():  # the last layer starts at zero (no warp): draw it, with a drift the field keeps
        torch.nn.init.normal_(last.weight, std=0.05)
        last.bias.copy_(torch.tensor([0.15, -0.1]))
    weights = save_warp(folder / "warp.safetensors", estimator, config, data="random (tests)")
    register(MODEL, lambda: warp_model(MODEL, config, "test", features="random"))
    export_model(MODEL, folder / "models", checkpoint=weights, seed=0)
    export_model(OTHER_MODEL, folder / "models", fp16=False, seed=0)


@functools.cache
def shared_warp_repo() -> Path:
    """One exported repository per test process; removed at exit."""
    folder = Path(tempfile.mkdtemp(prefix="impasto-warp-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return export_warp_repo(folder)


if __name__ == "__main__":
    _export(Path(sys.argv[1]), int(sys.argv[2]))
