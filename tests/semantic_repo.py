"""A model repository with a semantic model, for tests that need a server running ``semantic``.

A randomly initialised SPADE generator with the landscape label table goes through the real
export pipeline (ONNX, parity checks) into a temporary repository, as ``impasto export``
would write it; ``RunningServer("--repo", repo)`` then serves it. The tiny width (ngf 8)
takes about 30 s to export on one CPU; ``demo=True`` exports the demo size
(``SemanticConfig()`` defaults, 3.2M parameters), for latency figures.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

MODEL = "semantic_landscape"


def export_semantic_repo(folder: Path, demo: bool = False, seed: int = 0) -> Path:
    """Export a random-weight ``semantic_landscape`` model into ``folder / "models"``; returns the repository."""
    import torch
    from impasto.export.pipeline import export_model
    from impasto.train.data.labels import LANDSCAPE
    from impasto.train.models.spade import SemanticConfig, spade_generator
    from impasto.train.models.weights_io import save_semantic

    torch.manual_seed(seed)
    config = SemanticConfig() if demo else SemanticConfig(ngf=8, spade_hidden=8)
    weights = save_semantic(Path(folder) / "semantic.safetensors", spade_generator(config).eval(), config, LANDSCAPE)
    repo = Path(folder) / "models"
    export_model(MODEL, repo, checkpoint=weights, seed=0)
    return repo


@functools.cache
def shared_semantic_repo(demo: bool = False) -> Path:
    """One exported repository per test process (the Krita and Blender tests share it); removed at exit."""
    folder = Path(tempfile.mkdtemp(prefix="impasto-semantic-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return export_semantic_repo(folder, demo=demo)
