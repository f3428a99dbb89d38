"""A model repository with a sketch model, for tests that run ``impasto sketch`` on the engine.

A randomly initialised SketchyGAN generator (the registered ``sketch_demo`` interface: z_dim,
stride and MRU depth of ``SketchConfig()``, at a tiny width) with three made-up classes goes
through the real export pipeline (ONNX, fp32/fp16 parity, TensorRT report) into a temporary
repository, as ``impasto export sketch_demo --checkpoint`` would write it. A random generator
(with random class embeddings: they start at zero) maps different sketches, codes and classes
to different pictures, which is what the op's tests look at.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

MODEL = "sketch_demo"
CLASSES = ("sea", "snow", "city")


def export_sketch_repo(folder: Path, seed: int = 0) -> Path:
    """Export a random-weight ``sketch_demo`` model into ``folder / "models"``; returns the repository."""
    import torch
    from impasto.export.pipeline import export_model
    from impasto.train.models.sketchygan import SketchConfig, build_generator
    from impasto.train.models.weights_io import save_sketch

    torch.manual_seed(seed)
    config = SketchConfig(num_classes=len(CLASSES), ngf=4, max_mult=2, noise_channels=2, ndf=4)
    generator = build_generator(config).eval()
    with torch.no_grad():  # the class embeddings start at zero (no effect): give each class its own
        for module in generator.modules():
            if isinstance(module, torch.nn.Embedding):
                module.weight.normal_(0, 0.5)
    weights = save_sketch(Path(folder) / "sketch.safetensors", generator, config, list(CLASSES))
    repo = Path(folder) / "models"
    export_model(MODEL, repo, checkpoint=weights, seed=0)
    return repo


@functools.cache
def shared_sketch_repo() -> Path:
    """One exported repository per test process; removed at exit."""
    folder = Path(tempfile.mkdtemp(prefix="impasto-sketch-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return export_sketch_repo(folder)
