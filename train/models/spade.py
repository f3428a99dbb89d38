"""Semantic image synthesis: SPADE generators (GauGAN), their style encoder and a pix2pixHD baseline.

Park et al., "Semantic Image Synthesis with Spatially-Adaptive Normalization" (CVPR 2019;
reference code NVlabs/SPADE). A label map (one-hot, N x classes x H x W) becomes a picture:

- :class:`SPADE` normalises activations without learned affine parameters (instance norm or
  batch norm) and then modulates them per pixel with ``gamma`` and ``beta`` predicted by a
  small conv net from the label map resized (nearest) to the feature's size, so that the
  label layout is not washed away by normalisation;
- :class:`SPADEResBlock` is a residual block of two SPADE-norm-ReLU-conv units, with a learned
  1x1 shortcut when the channel count changes and spectral norm on its convolutions;
- :class:`SPADEGenerator` starts from the label map downsampled to a grid 2**num_up times
  smaller (SPADE's "downsampled segmap" start), with an optional style code ``z`` broadcast
  over that grid, and doubles the resolution ``num_up`` times through SPADE blocks;
- :class:`StyleEncoder` is the optional VAE image encoder (image -> mu, logvar) that makes
  the output multimodal and style-guided; :func:`reparameterize` and :func:`kl_divergence`
  go with it;
- :class:`Pix2PixHDGenerator` is the ablation's baseline: the label map is the *input* of an
  encoder-resblocks-decoder network with plain instance norm; :func:`matched_pix2pixhd_config`
  picks its width so that it has about as many parameters as a SPADE generator.

Everything is fully convolutional (any H, W that are multiples of :attr:`SemanticConfig.stride`),
resizes label maps with ``nearest`` and has no data-dependent Python control flow, so that
``torch.onnx.export`` traces it with dynamic H and W. Spectral norm is a parametrization while
training; :func:`fold_spectral_norm` (from :mod:`.gan_blocks`, shared by every GAN family)
bakes it into plain weights for export and storage.
Builders follow torchvision: :func:`spade_generator`, :func:`pix2pixhd_generator`,
:func:`style_encoder`, :func:`build_generator`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from impasto.train.models.config import StoredConfig
from impasto.train.models.gan_blocks import fold_spectral_norm, has_spectral_norm, spectral

__all__ = [
    "ARCHS", "NORMS", "Pix2PixHDGenerator", "SPADE", "SPADEGenerator", "SPADEResBlock", "SemanticConfig",
    "StyleEncoder", "build_generator", "count_parameters", "fold_spectral_norm", "has_spectral_norm", "kl_divergence",
    "matched_pix2pixhd_config", "one_hot", "pix2pixhd_generator", "reparameterize", "spade_generator",
    "style_encoder",
]

ARCHS = ("spade", "pix2pixhd")
NORMS = ("instance", "batch")


@dataclass(frozen=True)
class SemanticConfig(StoredConfig):
    """Everything needed to rebuild a semantic generator (and its encoder): stored next to its weights.

    The defaults are the demo model: 9 landscape classes at 256², about 3.2M generator
    parameters (6.4 MB as fp16 safetensors), small enough to train on a CPU.
    """

    num_classes: int = 9
    arch: str = "spade"  # "spade" | "pix2pixhd" (the ablation's baseline)
    ngf: int = 32  # width: channels at the finest stage; coarser stages have ngf * 2**k, at most ngf * max_mult
    max_mult: int = 4
    num_up: int = 5  # upsampling stages: the generator's stride is 2**num_up (spade)
    z_dim: int = 64  # style/noise code size; 0 = none
    norm: str = "instance"  # the parameter-free normalisation inside SPADE: "instance" | "batch"
    spade_hidden: int = 64  # channels of SPADE's shared conv on the label map
    image_size: int = 256  # training size (the networks take any multiple of the stride)
    use_encoder: bool = False  # a VAE style encoder (needs z_dim > 0)
    nef: int = 16  # the encoder's width
    encoder_layers: int = 5  # stride-2 convs of the encoder
    spectral: bool = True  # spectral norm on the convolutions (False once folded, e.g. when loaded)
    p2p_downsample: int = 3  # pix2pixHD baseline: stride-2 encoder stages (its stride is 2**p2p_downsample)
    p2p_blocks: int = 6  # pix2pixHD baseline: residual blocks at the bottleneck

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}, not {self.arch!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, not {self.norm!r}")
        for name in ("num_classes", "ngf", "max_mult", "spade_hidden", "image_size", "nef", "encoder_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 1 <= self.num_up <= 8 or not 1 <= self.p2p_downsample <= 6:
            raise ValueError("num_up must be 1..8 and p2p_downsample 1..6")
        if self.z_dim < 0 or self.p2p_blocks < 0:
            raise ValueError("z_dim and p2p_blocks must not be negative")
        if self.use_encoder and self.z_dim == 0:
            raise ValueError("use_encoder needs a style code: set z_dim > 0")
        if self.image_size % self.stride:
            raise ValueError(f"image_size {self.image_size} is not a multiple of the generator's stride {self.stride}")

    @property
    def stride(self) -> int:
        """H and W must be multiples of this."""
        return 2 ** (self.num_up if self.arch == "spade" else self.p2p_downsample)



# -- helpers ----------------------------------------------------------------------------------------


def one_hot(labels: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An (N, 1, H, W) integer index map as an (N, num_classes, H, W) one-hot map.

    A comparison with an arange (ONNX Equal + Cast) rather than ``F.one_hot``: it exports to
    operators every runtime has, keeps the class axis second, and indices outside the table
    give an all-zero pixel instead of an error inside the graph.
    """
    classes = torch.arange(num_classes, dtype=labels.dtype, device=labels.device).view(1, num_classes, 1, 1)
    return (labels == classes).to(dtype)


def _sn(module: nn.Module, on: bool) -> nn.Module:
    """``module`` with spectral norm on its weight when ``on`` (a parametrization: foldable for export)."""
    return spectral(module) if on else module


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters (spectral norm's ``original`` weight counted once, its u/v buffers not)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _param_free_norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    return nn.BatchNorm2d(channels, affine=False)  # in eval mode at export: running statistics, no SyncBatchNorm


def _with_code(x: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
    """``x`` with the style code broadcast over its grid as extra channels (any H, W)."""
    if z is None:
        return x
    n, _, h, w = x.shape
    return torch.cat([x, z.view(n, -1, 1, 1).expand(n, z.shape[1], h, w).to(x.dtype)], dim=1)


# -- SPADE ------------------------------------------------------------------------------------------


class SPADE(nn.Module):
    """Spatially-adaptive normalisation: param-free norm, then per-pixel ``gamma``, ``beta`` from the labels."""

    def __init__(self, channels: int, label_channels: int, hidden: int = 64, norm: str = "instance", kernel: int = 3):
        super().__init__()
        pad = kernel // 2
        self.norm = _param_free_norm(norm, channels)
        self.shared = nn.Sequential(nn.Conv2d(label_channels, hidden, kernel, padding=pad), nn.ReLU())
        self.gamma = nn.Conv2d(hidden, channels, kernel, padding=pad)
        self.beta = nn.Conv2d(hidden, channels, kernel, padding=pad)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = F.interpolate(labels, size=x.shape[-2:], mode="nearest")
        actv = self.shared(labels)
        return self.norm(x) * (1 + self.gamma(actv)) + self.beta(actv)


class SPADEResBlock(nn.Module):
    """SPADE -> LeakyReLU -> conv, twice, plus a shortcut (SPADE -> 1x1 conv when channels change)."""

    def __init__(self, fin: int, fout: int, label_channels: int, *, hidden: int = 64, norm: str = "instance",
                 spectral: bool = True):
        super().__init__()
        mid = min(fin, fout)
        self.learned_shortcut = fin != fout
        self.conv_0 = _sn(nn.Conv2d(fin, mid, 3, padding=1), spectral)
        self.conv_1 = _sn(nn.Conv2d(mid, fout, 3, padding=1), spectral)
        self.norm_0 = SPADE(fin, label_channels, hidden, norm)
        self.norm_1 = SPADE(mid, label_channels, hidden, norm)
        if self.learned_shortcut:
            self.conv_s = _sn(nn.Conv2d(fin, fout, 1, bias=False), spectral)
            self.norm_s = SPADE(fin, label_channels, hidden, norm)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv_s(self.norm_s(x, labels)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, labels), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, labels), 0.2))
        return shortcut + dx


def stage_channels(config: SemanticConfig) -> list[int]:
    """Channels at each resolution, coarsest (the downsampled label grid) to finest."""
    return [config.ngf * min(2 ** (config.num_up - k), config.max_mult) for k in range(config.num_up + 1)]


class SPADEGenerator(nn.Module):
    """Label map (one-hot) [+ style code] -> RGB in [-1, 1] at the label map's size.

    ``forward(labels, z)``: ``labels`` (N, classes, H, W) with H, W multiples of
    :attr:`SemanticConfig.stride`; ``z`` (N, z_dim) or None (then standard normal noise when
    z_dim > 0, drawn on the labels' device).
    """

    def __init__(self, config: SemanticConfig):
        super().__init__()
        if config.arch != "spade":
            raise ValueError(f"SPADEGenerator needs arch 'spade', the config says {config.arch!r}")
        self.config = config
        ch = stage_channels(config)
        c, kw = config.num_classes, {"hidden": config.spade_hidden, "norm": config.norm, "spectral": config.spectral}
        self.head = nn.Conv2d(c + config.z_dim, ch[0], 3, padding=1)
        self.blocks = nn.ModuleList(
            [SPADEResBlock(ch[0], ch[0], c, **kw)] + [SPADEResBlock(ch[k - 1], ch[k], c, **kw) for k in range(1, len(ch))]
        )
        self.to_rgb = nn.Conv2d(ch[-1], 3, 3, padding=1)

    def forward(self, labels: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        if cfg.z_dim and z is None:
            z = torch.randn(labels.shape[0], cfg.z_dim, device=labels.device, dtype=labels.dtype)
        s = cfg.stride
        grid = F.interpolate(labels, size=(labels.shape[2] // s, labels.shape[3] // s), mode="nearest")
        x = self.head(_with_code(grid, z if cfg.z_dim else None))
        x = self.blocks[0](x, labels)
        for block in self.blocks[1:]:
            x = block(F.interpolate(x, scale_factor=2.0, mode="nearest"), labels)
        return torch.tanh(self.to_rgb(F.leaky_relu(x, 0.2)))


# -- the VAE style encoder --------------------------------------------------------------------------


class StyleEncoder(nn.Module):
    """Image in [-1, 1] (N, 3, H, W) -> (mu, logvar), each (N, z_dim): SPADE's ConvEncoder, size-agnostic.

    Stride-2 conv + instance norm + LeakyReLU layers, then global average pooling (instead of
    the reference's flatten at a fixed 256² input) so that any picture size works and exports
    with dynamic H and W; linear heads give mu and log-variance.
    """

    def __init__(self, config: SemanticConfig):
        super().__init__()
        if config.z_dim < 1:
            raise ValueError("a style encoder needs z_dim > 0")
        layers: list[nn.Module] = []
        cin = 3
        for k in range(config.encoder_layers):
            cout = config.nef * min(2 ** k, 8)
            layers += [_sn(nn.Conv2d(cin, cout, 3, stride=2, padding=1), config.spectral),
                       nn.InstanceNorm2d(cout, affine=False), nn.LeakyReLU(0.2)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.mu = nn.Linear(cin, config.z_dim)
        self.logvar = nn.Linear(cin, config.z_dim)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.pool(self.features(image)).flatten(1)
        return self.mu(h), self.logvar(h)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mu + eps * exp(logvar / 2), eps standard normal: the VAE's differentiable sample."""
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + eps * torch.exp(0.5 * logvar)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma) || N(0, 1)) summed over the code, averaged over the batch.

    The reference sums over the batch too (weight lambda_kld = 0.05 at its batch size); the
    per-sample mean keeps the loss's scale independent of the batch size.
    """
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()


# -- the pix2pixHD baseline -------------------------------------------------------------------------


class _ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels, affine=False), nn.ReLU(),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels, affine=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Pix2PixHDGenerator(nn.Module):
    """pix2pixHD's global generator: the label map [+ broadcast z] is the input of conv encoder ->
    residual blocks -> decoder, all with plain (affine-free) instance norm. Same call as SPADE's.

    The decoder upsamples by nearest + conv rather than transposed convolutions (same parameter
    count, no checkerboard), so that the ablation isolates SPADE's normalisation.
    """

    def __init__(self, config: SemanticConfig):
        super().__init__()
        self.config = config
        ngf, down = config.ngf, config.p2p_downsample

        def width(k: int) -> int:
            return ngf * min(2 ** k, 16)

        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(config.num_classes + config.z_dim, ngf, 7),
                                   nn.InstanceNorm2d(ngf, affine=False), nn.ReLU()]
        for k in range(down):
            layers += [nn.Conv2d(width(k), width(k + 1), 3, stride=2, padding=1),
                       nn.InstanceNorm2d(width(k + 1), affine=False), nn.ReLU()]
        layers += [_ResBlock(width(down)) for _ in range(config.p2p_blocks)]
        for k in range(down, 0, -1):
            layers += [nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(width(k), width(k - 1), 3, padding=1),
                       nn.InstanceNorm2d(width(k - 1), affine=False), nn.ReLU()]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, labels: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if self.config.z_dim and z is None:
            z = torch.randn(labels.shape[0], self.config.z_dim, device=labels.device, dtype=labels.dtype)
        return self.net(_with_code(labels, z if self.config.z_dim else None))


# -- builders ---------------------------------------------------------------------------------------


def spade_generator(config: SemanticConfig | None = None, **overrides) -> SPADEGenerator:
    """A SPADE generator (demo config unless given; keyword overrides replace config fields)."""
    config = replace(config or SemanticConfig(), arch="spade", **overrides)
    return SPADEGenerator(config)


def pix2pixhd_generator(config: SemanticConfig | None = None, **overrides) -> Pix2PixHDGenerator:
    """The pix2pixHD-style baseline with ``config.ngf`` as its width (see :func:`matched_pix2pixhd_config`)."""
    config = replace(config or SemanticConfig(), arch="pix2pixhd", **overrides)
    return Pix2PixHDGenerator(config)


def style_encoder(config: SemanticConfig) -> StyleEncoder:
    """The VAE style encoder for ``config``."""
    return StyleEncoder(config)


BUILDERS: dict[str, Callable[[SemanticConfig], nn.Module]] = {"spade": spade_generator, "pix2pixhd": pix2pixhd_generator}


def build_generator(config: SemanticConfig) -> nn.Module:
    """The generator ``config.arch`` names."""
    return BUILDERS[config.arch](config)


def _count_on_meta(build: Callable[[], nn.Module]) -> int:
    with torch.device("meta"):
        return count_parameters(build())


def matched_pix2pixhd_config(config: SemanticConfig, max_ngf: int = 1024) -> SemanticConfig:
    """A pix2pixHD baseline config whose parameter count is the closest to ``config``'s SPADE generator.

    Label classes, style code, image size and encoder are kept. The width ``ngf`` is searched
    first (parameter counts are monotone in it; modules are built on the meta device, so
    nothing is allocated); at small widths one step of ``ngf`` is too coarse, so the number of
    bottleneck residual blocks (each adds a fixed count at a given width) is then moved from
    ``p2p_blocks`` as little as gets within 2% of the target.
    """
    target = _count_on_meta(lambda: spade_generator(config))

    def count(ngf: int, blocks: int) -> int:
        return _count_on_meta(lambda: pix2pixhd_generator(config, ngf=ngf, p2p_blocks=blocks))

    lo, hi = 1, max_ngf
    while lo < hi:  # smallest width with at least the target's parameters
        mid = (lo + hi) // 2
        if count(mid, config.p2p_blocks) < target:
            lo = mid + 1
        else:
            hi = mid
    candidates = []
    for ngf in {max(lo - 1, 1), lo}:
        base, per_block = count(ngf, 0), count(ngf, 1) - count(ngf, 0)
        for blocks in range(0, 4 * max(config.p2p_blocks, 1) + 1):
            error = abs(base + blocks * per_block - target) / target
            moved = abs(blocks - config.p2p_blocks)
            candidates.append(((0, moved, error) if error <= 0.02 else (1, error, moved), ngf, blocks))
    _, ngf, blocks = min(candidates)
    return replace(config, arch="pix2pixhd", ngf=ngf, p2p_blocks=blocks)
