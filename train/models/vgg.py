"""VGG-19 features for style losses (Gatys et al.; Stylized Neural Painting §3.5).

The network is torchvision's ``vgg19().features`` layer for layer, so its ImageNet weights
load unchanged. Where the weights come from, in order:

1. a local file named by the ``vgg_weights`` setting / ``IMPASTO_VGG_WEIGHTS`` (.pth or .safetensors);
2. torchvision's weights API (``VGG19_Weights.IMAGENET1K_V1``), which uses torch hub's cache
   and downloads into it when online;
3. the file torchvision would have cached (``$TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth``),
   read directly when torchvision itself is not installed.

If none is available, :class:`VGGWeightsMissing` says how to provide them. A random-weight
stand-in exists only when asked for (``features="random"``): its style statistics are far
weaker, and a warning says so.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

TORCHVISION_FILE = "vgg19-dcbb9e9d.pth"
# torchvision's vgg19 "E" configuration: numbers are conv widths, "M" is max pooling
_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
# conv layer names (relu outputs) -> index in .features
LAYERS = {
    "relu1_1": 1, "relu1_2": 3, "relu2_1": 6, "relu2_2": 8, "relu3_1": 11, "relu3_2": 13, "relu3_3": 15,
    "relu3_4": 17, "relu4_1": 20, "relu4_2": 22, "relu4_3": 24, "relu4_4": 26, "relu5_1": 29,
}
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGWeightsMissing(RuntimeError):
    """No ImageNet VGG-19 weights could be found; the message lists the ways to provide them."""


def _features() -> nn.Sequential:
    layers: list[nn.Module] = []
    c = 3
    for v in _CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=False)]
            c = v
    return nn.Sequential(*layers)


class VGGFeatures(nn.Module):
    """Activations of chosen VGG-19 layers for images in [0, 1] (ImageNet normalisation inside)."""

    def __init__(self, layers: tuple[str, ...] = STYLE_LAYERS, pretrained: bool = True):
        super().__init__()
        unknown = [name for name in layers if name not in LAYERS]
        if unknown:
            raise ValueError(f"unknown VGG layer(s) {unknown}: choose from {', '.join(LAYERS)}")
        self.layers = layers
        self.pretrained = pretrained
        last = max(LAYERS[name] for name in layers)
        self.features = _features()[: last + 1]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (image - self.mean) / self.std
        wanted = {LAYERS[name]: name for name in self.layers}
        out = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in wanted:
                out[wanted[i]] = x
        return out


def _state_from_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    # accept a whole torchvision vgg19 state dict or just its features
    return {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}


def _torch_home() -> Path:
    return Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))


def find_vgg_weights(setting: str | None = None) -> dict[str, torch.Tensor]:
    """ImageNet VGG-19 feature weights from the first source that has them (see module doc)."""
    tried = []
    explicit = setting or os.environ.get("IMPASTO_VGG_WEIGHTS")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise VGGWeightsMissing(f"VGG-19 weights file '{path}' (vgg_weights / IMPASTO_VGG_WEIGHTS) does not exist")
        return _state_from_file(path)
    try:
        from torchvision.models import VGG19_Weights, vgg19

        try:
            model = vgg19(weights=VGG19_Weights.IMAGENET1K_V1)
            return {k.removeprefix("features."): v for k, v in model.state_dict().items() if k.startswith("features.")}
        except Exception as e:  # offline, or the cache is unwritable
            tried.append(f"torchvision's weights API failed ({e.__class__.__name__}: {e})")
    except ImportError:
        tried.append("torchvision is not installed")
    cached = _torch_home() / "hub" / "checkpoints" / TORCHVISION_FILE
    if cached.is_file():
        return _state_from_file(cached)
    tried.append(f"no cached file at {cached}")
    raise VGGWeightsMissing(
        "ImageNet VGG-19 weights are needed for style losses and were not found ("
        + "; ".join(tried)
        + "). Either set IMPASTO_VGG_WEIGHTS (or vgg_weights in the config file) to a local copy of "
        f"torchvision's {TORCHVISION_FILE}, put that file in {cached.parent}, or install torchvision on a "
        "machine that is online. To run anyway with untrained features (much weaker style), use the random stand-in (--features random)."
    )


def vgg19_features(
    layers: tuple[str, ...] = STYLE_LAYERS, *, features: str = "vgg19", weights: str | None = None,
    device: str | torch.device = "cpu",
) -> VGGFeatures:
    """VGG-19 features: ``features="vgg19"`` (ImageNet weights) or ``"random"`` (a stand-in, seeded)."""
    if features not in ("vgg19", "random"):
        raise ValueError(f"features must be 'vgg19' or 'random', got '{features}'")
    model = VGGFeatures(layers, pretrained=features == "vgg19")
    if features == "vgg19":
        state = find_vgg_weights(weights)
        model.features.load_state_dict({k: v for k, v in state.items() if int(k.split(".")[0]) < len(model.features)})
    else:
        log.warning("using random-weight VGG features: style statistics are much weaker than with ImageNet weights")
        g = torch.Generator().manual_seed(0)
        for m in model.features:
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels * 9
                with torch.no_grad():
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                    m.bias.zero_()
    return model.to(device)


def gram(x: torch.Tensor) -> torch.Tensor:
    """Gram matrix of (B, C, H, W) features, normalised by the number of positions."""
    b, c, h, w = x.shape
    f = x.reshape(b, c, h * w)
    return f @ f.transpose(1, 2) / (h * w)
