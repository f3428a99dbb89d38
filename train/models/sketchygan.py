"""Sketch to image: SketchyGAN's Masked Residual Units, its generator and discriminator, and the ablation's baselines.

Chen & Hays, "SketchyGAN: Towards Diverse and Realistic Sketch to Image Synthesis" (CVPR 2018;
reference code wchen342/SketchyGAN, TensorFlow 1, 64 px). The input is the sketch as a dense
map, :func:`impasto.train.data.edges.distance_input` (N x 1 x H x W in [0, 1], 0 on lines),
plus a noise code ``z`` (N x z_dim) and a class index ``label`` (N,); the output is RGB in [-1, 1].

**Masked Residual Unit** (:class:`MRU`; the paper's MRU equations, as the reference code's
``mru_conv_block`` and ``mru_deconv_block`` with sigmoid gates; the code's default models later
switched to variants the paper does not describe -- min-max normalised LeakyReLU gates in the
decoder, an additive image term in the encoder -- which are not followed here): for features ``x`` (C_in channels) and the image ``I``
resized to their scale (for the generator: the sketch, plus the encoder's skip features and
the noise map in the decoder),

    m = sigmoid(conv3x3([x, I]))            mask over the C_in input channels
    z = f(norm(conv3x3([m * x, I])))        new features, C_out channels (f = ReLU in G, LeakyReLU in D)
    n = sigmoid(conv3x3([x, I]))            blend, C_out channels
    y = (1 - n) * x' + n * z                x' = x, or a 1x1 conv of x when C_in != C_out

``[a, b]`` is channel concatenation. The paper's equation has one conv in ``z``; the released
code stacks a second conv-norm-activation on it: ``depth`` (``SketchConfig.mru_depth``, 2 by
default) says how many. The code's projection also carries norm and activation; here it is
the paper's plain 1x1 conv, so a closed blend (n = 0) passes x through linearly. The two
gate convs are computed as one conv with C_in + C_out outputs (same parameters, one pass).

**Generator** (:class:`SketchGenerator`, ``arch="mru"``; the code's ``generator_skip``): an
encoder of ``num_down`` MRUs, each halving the resolution (2x2 mean pooling of its input
features, as the code's ``mean_pool``, but before the unit rather than after it: four times
cheaper), takes the sketch mean-pooled to every scale; a decoder of ``num_down`` MRUs, each
doubling it (nearest upsampling, as the code's ``upsample``), takes the sketch at its scale
and the encoder's features of that scale (the skip connections enter as part of ``I``).
Noise: the code maps a 256-d normal vector by a fully connected layer to a feature map at the
first decoder scale and concatenates it with that unit's image input; here ``z`` goes through
a linear layer to a ``noise_grid``² map that is resized (bilinear) to that scale, so that any
H and W work. Class: the code conditions G by class-conditional batch norm (a per-class scale
and offset after every norm of encoder and decoder); here the same per-class affine follows
a parameter-free instance norm (``norm="instance"``, default: batch-independent, the same in
training and export) or batch norm (``norm="batch"``, the code's). The code's smooth
"miu-ReLU" and PReLU activations are plain ReLU (G) and LeakyReLU(0.2) (D) here, and its 7x7
stems 3x3 convs.

**Discriminator** (:class:`SketchDiscriminator`; the code's ``critic_multiple_proj``): a stem
conv and ``d_layers`` downsampling MRUs that take the image mean-pooled to each scale, no
norm, LeakyReLU(0.2), spectral norm on every layer (the code's ``Config.sn``); a 1x1 conv
gives a map of real/fake logits and a linear layer on the globally averaged features the
class logits (the AC-GAN head). Like the code's, it sees the image only (``d_sketch=True``
also feeds it the sketch at every scale). It returns ``([features..., logits], class_logits)``:
the first item is what :mod:`impasto.train.losses.adversarial` takes.

**Baselines** for the paper's block ablation, at equal parameter count: ``arch="resnet"`` is
the same encoder-decoder (sketch at every scale, skips, noise, class norm) with each MRU
replaced by a residual unit ``y = x' + z``, ``z`` computed from ``[x, I]`` (what is left of
an MRU without its masks), so that the comparison isolates the masks; ``arch="unet"`` is a
pix2pix U-Net (4x4 stride-2 convs down, resize-conv up, skips by concatenation), the sketch at
its input only. Their width is chosen (:func:`generator_width`) so that
``build_generator(replace(config, arch=...))`` has within a few percent the parameters of the
MRU generator of ``config``: channel counts are ``round(width * 2**k)`` for a real ``width``.

Everything is fully convolutional for H, W multiples of :attr:`SketchConfig.stride`; skips and
noise are resized to the size of the features they join, so ``torch.onnx.export`` traces the
networks with dynamic H and W.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from impasto.train.models.config import StoredConfig
from impasto.train.models.gan_blocks import apply_spectral_norm

__all__ = [
    "ARCHS", "MRU", "NORMS", "ClassNorm", "ResidualUnit", "SketchConfig", "SketchDiscriminator", "SketchGenerator",
    "UNetGenerator", "build_discriminator", "build_generator", "check_inputs", "count_parameters", "generator_width",
]

ARCHS = ("mru", "resnet", "unet")
NORMS = ("instance", "batch")


@dataclass(frozen=True)
class SketchConfig(StoredConfig):
    """Everything needed to rebuild a sketch generator and its discriminator: stored next to the weights.

    The defaults are the demo model: 1.13M generator parameters (2.3 MB as fp16; the
    discriminator has 1.64M), small enough to train on two CPU cores at 64-128 px; raise ``ngf``
    (and ``ndf``) for GPU runs. ``num_classes`` is the training set's: trainers set it from the data.
    """

    num_classes: int = 16
    arch: str = "mru"  # "mru" | "resnet" | "unet" (the ablation's baselines)
    ngf: int = 16  # generator width: channels at full resolution; stage k has ngf * min(2**k, max_mult)
    max_mult: int = 4
    num_down: int = 4  # resolution halvings: the generator's stride is 2**num_down
    z_dim: int = 32  # noise code size
    noise_channels: int = 8  # channels of the noise map joined to the first decoder unit
    noise_grid: int = 4  # the noise map's side before it is resized to that unit's scale
    mru_depth: int = 2  # conv-norm-activation layers on an MRU's new-feature path (paper: 1, code: 2)
    norm: str = "instance"  # the parameter-free norm under the class affine: "instance" | "batch"
    ndf: int = 32  # discriminator width
    d_max_mult: int = 4
    d_layers: int = 4  # the discriminator's downsampling MRUs (its logits map is 2**d_layers smaller)
    d_sketch: bool = False  # feed the discriminator the sketch too (the paper's does not)
    d_spectral: bool = True  # spectral norm on the discriminator's layers
    image_size: int = 128  # training size (the generator takes any multiple of the stride)
    match_parameters: bool = True  # baselines: choose their width to match the MRU generator's parameters

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}, not {self.arch!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, not {self.norm!r}")
        for name in ("num_classes", "ngf", "max_mult", "z_dim", "noise_channels", "noise_grid", "mru_depth", "ndf",
                     "d_max_mult", "d_layers", "image_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 1 <= self.num_down <= 7:
            raise ValueError(f"num_down must be 1..7, got {self.num_down}")
        if self.image_size % self.stride:
            raise ValueError(f"image_size {self.image_size} is not a multiple of the generator's stride {self.stride}")

    @property
    def stride(self) -> int:
        """H and W must be multiples of this."""
        return 2 ** self.num_down


# -- helpers ----------------------------------------------------------------------------------------


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters (spectral norm's ``original`` weight counted once, its u/v buffers not)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def check_inputs(config: SketchConfig, sketch: torch.Tensor, z: torch.Tensor, label: torch.Tensor) -> None:
    """ValueError naming the input and the rule when the generator's inputs do not fit ``config``."""
    if sketch.ndim != 4 or sketch.shape[1] != 1:
        raise ValueError(f"sketch must be (N, 1, H, W), got {tuple(sketch.shape)}")
    n, _, h, w = sketch.shape
    s = config.stride
    if h % s or w % s or h < s or w < s:
        raise ValueError(f"sketch height and width must be positive multiples of the stride {s}, got {h}x{w}")
    if z.shape != (n, config.z_dim):
        raise ValueError(f"z must be (N, z_dim) = ({n}, {config.z_dim}), got {tuple(z.shape)}")
    if label.shape != (n,) or label.is_floating_point():
        raise ValueError(f"label must be (N,) = ({n},) integer class indices, got {tuple(label.shape)} {label.dtype}")


def _tracing() -> bool:
    """Whether torch is tracing for export: sizes are symbolic then, and the runtime checks them instead."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting()


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=(k - 1) // 2 if stride == 1 else 1)


def _param_free_norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    return nn.BatchNorm2d(channels, affine=False)


def _resize(x: torch.Tensor, like: torch.Tensor, mode: str = "nearest") -> torch.Tensor:
    """``x`` resized to ``like``'s H, W (an exact 2x for multiples of the stride; any size traces)."""
    if mode == "nearest":
        return F.interpolate(x, size=like.shape[-2:], mode="nearest")
    return F.interpolate(x, size=like.shape[-2:], mode=mode, align_corners=False)


def _widths(width: float, stages: int, max_mult: int) -> list[int]:
    """Channels at each resolution, finest first: ``round(width * min(2**k, max_mult))``, at least 1."""
    return [max(1, round(width * min(2 ** k, max_mult))) for k in range(stages)]


class ClassNorm(nn.Module):
    """Parameter-free norm, then a per-class scale and offset: ``norm(x) * (1 + gamma[c]) + beta[c]``.

    The reference code's class-conditional batch norm, with instance norm as the default.
    The embedding starts at zero, so an untrained unit is a plain norm.
    """

    def __init__(self, channels: int, num_classes: int, kind: str = "instance"):
        super().__init__()
        self.norm = _param_free_norm(kind, channels)
        self.embed = nn.Embedding(num_classes, 2 * channels)
        nn.init.zeros_(self.embed.weight)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        affine = self.embed(label)[:, :, None, None]  # slices, not chunk: Split's form differs across opsets
        c = affine.shape[1] // 2
        return self.norm(x) * (1 + affine[:, :c]) + affine[:, c:]


class _FeaturePath(nn.Module):
    """``depth`` x (3x3 conv -> class norm (G only) -> activation): an MRU's or residual unit's new features."""

    def __init__(self, cin: int, cout: int, depth: int, num_classes: int | None, norm: str, act: Callable):
        super().__init__()
        self.convs = nn.ModuleList(_conv(cin if i == 0 else cout, cout) for i in range(depth))
        self.norms = nn.ModuleList(ClassNorm(cout, num_classes, norm) for _ in range(depth)) if num_classes else None
        self.act = act

    def forward(self, x: torch.Tensor, label: torch.Tensor | None) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if self.norms is not None:
                x = self.norms[i](x, label)
            x = self.act(x)
        return x


class MRU(nn.Module):
    """Masked Residual Unit: ``y = (1 - n) * x' + n * f(conv([m * x, I]))``, gates ``m``, ``n`` from ``[x, I]``.

    ``num_classes`` gives the new-feature path class norms (the generator's); None leaves it
    without norm (the discriminator's). Resolution is unchanged: callers pool or upsample.
    """

    def __init__(self, cin: int, cimg: int, cout: int, *, num_classes: int | None = None, norm: str = "instance",
                 depth: int = 2, act: Callable = F.relu):
        super().__init__()
        self.cin, self.cout = cin, cout
        self.gates = _conv(cin + cimg, cin + cout)  # mask m (cin channels) and blend n (cout) in one conv
        self.features = _FeaturePath(cin + cimg, cout, depth, num_classes, norm, act)
        self.project = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, image: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        gates = torch.sigmoid(self.gates(torch.cat([x, image], 1)))
        mask, blend = gates[:, :self.cin], gates[:, self.cin:]
        z = self.features(torch.cat([mask * x, image], 1), label)
        return (1 - blend) * self.project(x) + blend * z


class ResidualUnit(nn.Module):
    """The ablation's residual unit: ``y = x' + f(conv([x, I]))`` -- an MRU without its masks, same interface."""

    def __init__(self, cin: int, cimg: int, cout: int, *, num_classes: int | None = None, norm: str = "instance",
                 depth: int = 2, act: Callable = F.relu):
        super().__init__()
        self.features = _FeaturePath(cin + cimg, cout, depth, num_classes, norm, act)
        self.project = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, image: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        return self.project(x) + self.features(torch.cat([x, image], 1), label)


class _NoiseMap(nn.Module):
    """``z`` -> a ``channels`` x ``grid`` x ``grid`` map (linear layer), resized to the features it joins."""

    def __init__(self, z_dim: int, channels: int, grid: int):
        super().__init__()
        self.shape = (channels, grid, grid)
        self.linear = nn.Linear(z_dim, channels * grid * grid)

    def forward(self, z: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return _resize(self.linear(z).reshape(-1, *self.shape), like, mode="bilinear")


# -- generators -------------------------------------------------------------------------------------


class SketchGenerator(nn.Module):
    """MRU (or residual-unit) encoder-decoder: ``forward(sketch, z, label)`` -> RGB in [-1, 1] at the sketch's size.

    ``width`` is the channel count at full resolution (``config.ngf`` for the MRU generator;
    :func:`generator_width` for the residual baseline).
    """

    def __init__(self, config: SketchConfig, width: float | None = None):
        super().__init__()
        if config.arch not in ("mru", "resnet"):
            raise ValueError(f"SketchGenerator builds arch 'mru' or 'resnet', the config says {config.arch!r}")
        self.config = config
        depth = config.num_down
        ch = _widths(config.ngf if width is None else width, depth + 1, config.max_mult)
        unit = functools.partial(MRU if config.arch == "mru" else ResidualUnit, num_classes=config.num_classes,
                                 norm=config.norm, depth=config.mru_depth)
        self.stem = _conv(1, ch[0])
        self.stem_norm = ClassNorm(ch[0], config.num_classes, config.norm)
        self.down = nn.ModuleList(unit(ch[k - 1], 1, ch[k]) for k in range(1, depth + 1))
        self.noise = _NoiseMap(config.z_dim, config.noise_channels, config.noise_grid)
        self.up = nn.ModuleList(
            unit(ch[k + 1], 1 + ch[k] + (config.noise_channels if k == depth - 1 else 0), ch[k])
            for k in range(depth - 1, -1, -1)
        )
        self.to_rgb = _conv(ch[0], 3)

    def forward(self, sketch: torch.Tensor, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if not _tracing():
            check_inputs(self.config, sketch, z, label)
        pyramid = [sketch]
        for _ in self.down:
            pyramid.append(F.avg_pool2d(pyramid[-1], 2))
        x = F.relu(self.stem_norm(self.stem(sketch), label))
        skips = [x]
        for k, unit in enumerate(self.down, start=1):
            x = unit(F.avg_pool2d(x, 2), pyramid[k], label)
            skips.append(x)
        for i, unit in enumerate(self.up):
            k = len(self.up) - 1 - i
            skip = skips[k]
            image = [pyramid[k], skip] + ([self.noise(z, skip)] if i == 0 else [])
            x = unit(_resize(x, skip), torch.cat(image, 1), label)
        return torch.tanh(self.to_rgb(x))


class UNetGenerator(nn.Module):
    """pix2pix's U-Net (Isola et al. 2017): the sketch at its input only; same call and conditioning as the MRU's.

    Down: 4x4 stride-2 convs (LeakyReLU 0.2 before, class norm after, none on the first);
    up: ReLU, nearest upsampling to the skip's size and a 3x3 conv (instead of pix2pix's
    transposed conv: same role, exact sizes for any multiple of the stride), class norm, then
    concatenation with the skip. The noise map joins the bottleneck.
    """

    def __init__(self, config: SketchConfig, width: float | None = None):
        super().__init__()
        if config.arch != "unet":
            raise ValueError(f"UNetGenerator builds arch 'unet', the config says {config.arch!r}")
        self.config = config
        depth, c = config.num_down, config.num_classes
        ch = _widths(config.ngf if width is None else width, depth, config.max_mult)  # after down k (k = 1..depth)
        self.down = nn.ModuleList(_conv(1 if k == 0 else ch[k - 1], ch[k], 4, stride=2) for k in range(depth))
        self.down_norms = nn.ModuleList(ClassNorm(ch[k], c, config.norm) for k in range(1, depth))
        self.noise = _NoiseMap(config.z_dim, config.noise_channels, config.noise_grid)
        ups, cin = [], ch[-1] + config.noise_channels
        for k in range(depth - 1, 0, -1):
            ups.append(_conv(cin, ch[k - 1]))
            cin = 2 * ch[k - 1]
        self.up = nn.ModuleList(ups)
        self.up_norms = nn.ModuleList(ClassNorm(conv.out_channels, c, config.norm) for conv in ups)
        self.to_rgb = _conv(cin, 3)

    def forward(self, sketch: torch.Tensor, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if not _tracing():
            check_inputs(self.config, sketch, z, label)
        x, skips = sketch, []
        for k, conv in enumerate(self.down):
            x = conv(F.leaky_relu(x, 0.2) if k else x)
            if k:
                x = self.down_norms[k - 1](x, label)
            skips.append(x)
        x = torch.cat([x, self.noise(z, x)], 1)
        for conv, norm, skip in zip(self.up, self.up_norms, reversed(skips[:-1]), strict=True):
            x = norm(conv(_resize(F.relu(x), skip)), label)
            x = torch.cat([x, skip], 1)
        return torch.tanh(self.to_rgb(_resize(F.relu(x), sketch)))


# -- the discriminator ------------------------------------------------------------------------------


class SketchDiscriminator(nn.Module):
    """MRU discriminator with the image at every scale: ``forward(image, sketch)`` -> ``([features..., logits], classes)``.

    ``logits`` is an (N, 1, H / 2**d_layers, W / 2**d_layers) map of real/fake logits;
    ``classes`` (N, num_classes) the auxiliary classifier's logits. ``sketch`` is used only
    when ``config.d_sketch`` (it may then not be None).
    """

    def __init__(self, config: SketchConfig):
        super().__init__()
        self.config = config
        ch = _widths(config.ndf, config.d_layers + 1, config.d_max_mult)
        cimg = 3 + int(config.d_sketch)
        act = functools.partial(F.leaky_relu, negative_slope=0.2)
        self.stem = _conv(cimg, ch[0])
        self.units = nn.ModuleList(MRU(ch[k - 1], cimg, ch[k], depth=config.mru_depth, act=act)
                                   for k in range(1, config.d_layers + 1))
        self.logits = nn.Conv2d(ch[-1], 1, 1)
        self.classes = nn.Linear(ch[-1], config.num_classes)
        if config.d_spectral:
            apply_spectral_norm(self)

    def forward(self, image: torch.Tensor, sketch: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be (N, 3, H, W), got {tuple(image.shape)}")
        if self.config.d_sketch:
            if sketch is None or sketch.shape != (image.shape[0], 1, *image.shape[2:]):
                raise ValueError("this discriminator also takes the sketch: pass it as (N, 1, H, W) at the image's size")
            image = torch.cat([image, sketch.to(image.dtype)], 1)
        x = F.leaky_relu(self.stem(image), 0.2)
        features = [x]
        for unit in self.units:
            image = F.avg_pool2d(image, 2)
            x = unit(F.avg_pool2d(x, 2), image)
            features.append(x)
        h = F.leaky_relu(x, 0.2)
        return [*features, self.logits(h)], self.classes(h.mean(dim=(2, 3)))


# -- builders and parameter matching -----------------------------------------------------------------


def _build(config: SketchConfig, width: float) -> nn.Module:
    return UNetGenerator(config, width) if config.arch == "unet" else SketchGenerator(config, width)


def _count(config: SketchConfig, width: float) -> int:
    with torch.device("meta"):
        return count_parameters(_build(config, width))


@functools.lru_cache(maxsize=64)
def generator_width(config: SketchConfig) -> float:
    """The full-resolution width of ``config``'s generator.

    ``config.ngf`` for the MRU generator, and for baselines when ``match_parameters`` is off;
    otherwise the baseline's width whose parameter count is the closest to the MRU generator
    of the same config (bisection on a real width; modules are built on the meta device, so
    nothing is allocated; parameter counts grow monotonically with the width).
    """
    if config.arch == "mru" or not config.match_parameters:
        return float(config.ngf)
    target = _count(replace(config, arch="mru"), config.ngf)
    lo, hi = 0.5, 8.0 * config.ngf
    while hi - lo > 1e-3:  # far below one channel of the widest stage
        mid = (lo + hi) / 2
        if _count(config, mid) < target:
            lo = mid
        else:
            hi = mid
    return min((lo, hi), key=lambda w: abs(_count(config, w) - target))


def build_generator(config: SketchConfig) -> nn.Module:
    """The generator ``config.arch`` names, baselines at the MRU generator's parameter count (see :func:`generator_width`)."""
    return _build(config, generator_width(config))


def build_discriminator(config: SketchConfig) -> SketchDiscriminator:
    """The MRU discriminator with its real/fake and class heads."""
    return SketchDiscriminator(config)
