"""``paint --predict`` on a real server runs the served repository's stroke predictor (the engine model).

The repository holds a ``stroke_oil`` exported (through the real ``impasto export``) from a small
random-weight predictor, not the shipped one: so the server's painting can only equal the local
painting made with that model on ONNX Runtime if the sidecar ran the repository's model, and it
must differ from the shipped torch weights' painting. A server whose repository lacks the model
paints with the shipped weights.
"""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from impasto.runtime.client import StudioClient
from impasto.runtime.ops.registry import RunContext, get_op
from impasto.runtime.ops.request import run_tensors, use_local_models
from impasto.train.models.stroke_predictor import PredictorConfig, build_stroke_predictor
from impasto.train.models.weights_io import save_stroke_predictor
from serving import RunningServer

OPTIONS = {"predict": True, "strokes": 120, "size": 64, "seed": 3}


def _picture() -> np.ndarray:
    y, x = np.mgrid[0:64, 0:64] / 64
    rgb = np.stack([0.5 + 0.4 * np.sin(6 * x), 0.5 + 0.4 * np.cos(5 * y), 0.3 + 0.5 * x * y], -1)
    return (rgb * 255).round().astype(np.uint8)


def _png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def _local(picture: np.ndarray, repo=None) -> np.ndarray:
    """The op run in this process: with ``repo``, its models on ONNX Runtime (as the sidecar runs them)."""
    ctx = RunContext()
    if repo is not None:
        use_local_models(ctx, str(repo), "onnxruntime")
    image = torch.from_numpy(picture).permute(2, 0, 1).float() / 255
    out = run_tensors(get_op("paint"), {"image": image}, OPTIONS, ctx).values["image"]
    return (out.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy().astype(np.int16)


def _decoded(result) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(result.images["image"].encoded)).convert("RGB")).astype(np.int16)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("strokes")
    torch.manual_seed(5)
    model = build_stroke_predictor(PredictorConfig(width=32, stem=8, layers=1))  # the shipped patch and strokes
    with torch.no_grad():
        model.confidence_head.bias.fill_(3.0)  # confident: it paints
    save_stroke_predictor(model, model.config, folder / "random.safetensors", {"data": "random weights (a test)"})
    run = subprocess.run([sys.executable, "-m", "impasto.runtime.cli", "export", "stroke_oil", "--checkpoint",
                          str(folder / "random.safetensors"), "--repo", str(folder / "models")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return folder / "models"


def test_a_server_paints_with_its_repositorys_predictor_and_without_one_with_the_shipped_weights(repo, tmp_path):
    picture = _picture()
    engine, shipped = _local(picture, repo), _local(picture)
    assert np.abs(engine - shipped).mean() > 3  # the two predictors paint differently
    served = RunningServer("--repo", str(repo))
    try:
        with StudioClient(served.grpc) as client:
            got = _decoded(client.run("paint", {"image": _png(picture)}, OPTIONS))
    finally:
        served.stop()
    assert np.abs(got - engine).max() <= 2  # the repository's model, on the sidecar
    empty = tmp_path / "empty"
    empty.mkdir()
    bare = RunningServer("--repo", str(empty))
    try:
        with StudioClient(bare.grpc) as client:
            got = _decoded(client.run("paint", {"image": _png(picture)}, OPTIONS))
    finally:
        bare.stop()
    assert np.abs(got - shipped).max() <= 2  # no stroke_oil served: the shipped torch weights
