"""A model repository with a colorize model pair, for tests that run ``impasto colorize`` on the engine.

A randomly initialised colouriser (a tiny generator with the registered ``colorize_demo``
graph interface, a random dense style head, and the style encoder over a random-weight
VGG-19: ImageNet weights are not needed to test the op) is saved by
:func:`impasto.train.models.weights_io.save_colorize` and goes through the real export
pipeline (ONNX, fp32/fp16 parity, TensorRT report) into a temporary repository as
``colorize_demo`` and ``colorize_demo_style``, the names the op and the server expect.

The registered families are built for the demo's interface (style_dim 2048, style_side 64)
and ImageNet VGG weights; the tiny pair registers its own descriptions under those names, so
the export runs in a child process and the test process's export registry stays as shipped.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MODEL, STYLE_MODEL = "colorize_demo", "colorize_demo_style"
# small enough to export and run in seconds; the stride (num_down 4) is the demo's
TINY = dict(width=4, max_mult=2, num_down=4, enc_blocks=0, res_blocks=1, style_dim=16, style_side=32,
            image_size=64, ndf=4, d_layers=2)


def export_colorize_repo(folder: Path, seed: int = 0) -> Path:
    """Export a random-weight colorize pair into ``folder / "models"`` (in a child process); returns the repository."""
    run = subprocess.run([sys.executable, __file__, str(folder), str(seed)], capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"exporting the tiny colorize models failed:\n{run.stderr[-4000:]}")
    return Path(folder) / "models"


def _export(folder: Path, seed: int) -> None:
    import torch

    from impasto.export.families.colorizer import colorize_model, style_model
    from impasto.export.pipeline import export_model
    from impasto.export.registry import register
    from impasto.train.models.colorizer import ColorizeConfig, build_generator
    from impasto.train.models.weights_io import save_colorize

    torch.manual_seed(seed)
    config = ColorizeConfig(**TINY)
    generator = build_generator(config).eval()
    head = torch.nn.Linear(config.descriptor_dim, config.style_dim)  # the style encoder's dense layer, random
    with torch.no_grad():  # a fresh generator's style projection is small: make the style visible in the output
        for name, p in generator.named_parameters():
            if "style" in name and p.dim() == 2:
                p.mul_(20.0)
    weights = save_colorize(folder / "colorize.safetensors", generator, head, config, data="random (tests)")
    register(MODEL, lambda: colorize_model(MODEL, config, "test", STYLE_MODEL))
    register(STYLE_MODEL, lambda: style_model(STYLE_MODEL, config, "test", MODEL, features="random"))
    for name in (MODEL, STYLE_MODEL):
        export_model(name, folder / "models", checkpoint=weights, seed=0)


@functools.cache
def shared_colorize_repo() -> Path:
    """One exported repository per test process; removed at exit."""
    folder = Path(tempfile.mkdtemp(prefix="impasto-colorize-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return export_colorize_repo(folder)


if __name__ == "__main__":
    _export(Path(sys.argv[1]), int(sys.argv[2]))
