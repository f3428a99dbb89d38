"""Neural stroke renderers: stroke parameters -> (foreground, alpha) at 128 x 128.

``DualPathwayRenderer`` is Stylized Neural Painting's design (Zou et al., CVPR 2021, §3.2):
a rasterisation branch (positional encoder + pixel decoder, shape parameters only) draws a
sharp silhouette, a shading branch (transposed convolutions, all parameters) draws colour,
and foreground = colour x silhouette, alpha = A x silhouette. The three baselines of the
paper's ablation (DCGAN generator, pixel-shuffle FCN, U-Net) predict foreground and alpha
directly. Each is built by a small function named after it, as in torchvision.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from impasto.train.brushes import get_brush

SIZE = 128


@dataclass(frozen=True)
class RendererConfig:
    """Everything needed to rebuild a renderer: stored next to its weights."""

    brush: str
    arch: str = "dual"
    size: int = SIZE

    def to_dict(self) -> dict:
        return asdict(self)


def coord_channels(batch: int, size: int, like: torch.Tensor) -> torch.Tensor:
    """Two channels holding each pixel's x and y in [-1, 1] (CoordConv): positions made explicit."""
    r = torch.linspace(-1.0, 1.0, size, device=like.device, dtype=like.dtype)
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    return torch.stack([xx, yy]).unsqueeze(0).expand(batch, 2, size, size)


class PositionalEncoder(nn.Module):
    """Fully connected layers turning parameters into a (channels, base, base) feature map."""

    def __init__(self, n_in: int, channels: int = 16, base: int = 16, hidden: int = 512):
        super().__init__()
        self.shape = (channels, base, base)
        self.net = nn.Sequential(
            nn.Linear(n_in, hidden // 2),
            nn.ReLU(inplace=True),
            nn.Linear(hidden // 2, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels * base * base),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(x.shape[0], *self.shape)


class FieldEncoder(nn.Module):
    """Positional encoder: fully connected layers that place ``fields`` conics on the canvas.

    Each field lives in a frame of its own, predicted from the shape parameters: a centre,
    a rotation and two log-scales give local coordinates (u, v), and the field is
    w0 + w1 u + w2 v + w3 u^2 + w4 v^2 + w5 uv. Predicting frames rather than raw conic
    coefficients keeps the map from stroke parameters nearly linear (a thin stroke is a
    large log-scale, not a coefficient of 10^4), which is what lets it train on a CPU.
    Half planes, ellipses and parabolas (quadratic Beziers are parabola arcs) are one field.
    """

    PER_FIELD = 12  # cx, cy, cos, sin, log su, log sv, w0..w5

    def __init__(self, n_in: int, fields: int = 16, hidden: int = 256, frequencies: int = 4):
        super().__init__()
        self.fields = fields
        self.register_buffer(
            "freqs", math.pi * torch.arange(1, frequencies + 1, dtype=torch.float32), persistent=False
        )
        self.net = nn.Sequential(
            nn.Linear(n_in * (1 + 2 * frequencies), hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, fields * self.PER_FIELD),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, n_shape) -> each field as a quadratic polynomial in (x, y): (6, N, fields).

        u and v are affine in the pixel's (x, y), so each field is a quadratic polynomial in
        (x, y), with coefficients of 1, x, y, x^2, y^2, xy (see ``monomials``). Working with
        the six coefficients instead of evaluating u and v at every pixel is the same function
        at a fraction of the memory traffic, and it exports to a single MatMul.
        """
        n = x.shape[0]
        angles = x.unsqueeze(-1) * self.freqs  # Fourier features: rotations become easy to learn
        feats = torch.cat([x, angles.sin().flatten(1), angles.cos().flatten(1)], dim=1)
        f = self.net(feats).view(n * self.fields, self.PER_FIELD)
        direction = nn.functional.normalize(f[:, 2:4] + torch.tensor([1.0, 0.0], device=x.device), dim=1, eps=1e-6)
        scale = torch.exp(f[:, 4:6].clamp(-4.0, 6.0) + 1.0)  # about 3 at initialisation
        c, s = direction[:, 0], direction[:, 1]
        cx, cy = f[:, 0], f[:, 1]
        # u = au x + bu y + cu, v = av x + bv y + cv
        au, bu = c * scale[:, 0], s * scale[:, 0]
        av, bv = -s * scale[:, 1], c * scale[:, 1]
        cu, cv = -(cx * au + cy * bu), -(cx * av + cy * bv)
        w0, w1, w2, w3, w4, w5 = f[:, 6:].unbind(1)  # field = w0 + w1 u + w2 v + w3 u^2 + w4 v^2 + w5 uv
        coefficients = torch.stack(
            [
                w0 + w1 * cu + w2 * cv + w3 * cu * cu + w4 * cv * cv + w5 * cu * cv,  # 1
                w1 * au + w2 * av + 2 * (w3 * au * cu + w4 * av * cv) + w5 * (au * cv + av * cu),  # x
                w1 * bu + w2 * bv + 2 * (w3 * bu * cu + w4 * bv * cv) + w5 * (bu * cv + bv * cu),  # y
                w3 * au * au + w4 * av * av + w5 * au * av,  # x^2
                w3 * bu * bu + w4 * bv * bv + w5 * bu * bv,  # y^2
                2 * (w3 * au * bu + w4 * av * bv) + w5 * (au * bv + av * bu),  # xy
            ]
        )
        return coefficients.view(6, n, self.fields)


def pixel_coords(size: int, like: torch.Tensor) -> torch.Tensor:
    """(S*S, 2) x, y of the pixel centres of an S x S grid, in [-1, 1], row-major."""
    r = (torch.arange(size, device=like.device, dtype=like.dtype) + 0.5) * (2.0 / size) - 1.0
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    return torch.stack([xx, yy], dim=-1).view(-1, 2)


def monomials(size: int, like: torch.Tensor) -> torch.Tensor:
    """(S*S, 6): 1, x, y, x^2, y^2, xy at each pixel centre of an S x S grid, row-major."""
    xy = pixel_coords(size, like)
    x, y = xy[:, 0], xy[:, 1]
    return torch.stack([torch.ones_like(x), x, y, x * x, y * y, x * y], dim=1)


class PointwiseDecoder(nn.Module):
    """Pixel decoder: the same small MLP at every pixel, applied to the encoder's fields.

    Its first layer is linear in the fields, and the fields are polynomials, so that layer is
    folded into the coefficients (W (P C) + b = P (C W^T) + b): one (S*S, 6) x (6, N*width)
    product draws the first hidden layer at every pixel; the rest run as 2-D matrix products.
    """

    def __init__(self, fields: int = 16, widths: tuple[int, ...] = (32, 16), out: int = 1):
        super().__init__()
        layers: list[nn.Module] = []
        c = fields
        for w in widths:
            layers += [nn.Linear(c, w), nn.ReLU()]
            c = w
        layers.append(nn.Linear(c, out))
        self.net = nn.Sequential(*layers)

    def forward(self, coefficients: torch.Tensor, size: int = SIZE) -> torch.Tensor:
        """(6, N, fields) polynomial coefficients -> (N, out, S, S)."""
        n = coefficients.shape[1]
        first = self.net[0]
        hidden = coefficients @ first.weight.t()  # (6, N, width)
        hidden = torch.cat([hidden[:1] + first.bias, hidden[1:]])  # the bias joins the constant term
        hidden = monomials(size, coefficients) @ hidden.view(6, -1)  # (S*S, N*width)
        y = self.net[1:](hidden.view(-1, first.out_features))  # (S*S*N, out)
        return y.view(size * size, n, -1).permute(1, 2, 0).reshape(n, -1, size, size)


class PixelShuffleUp(nn.Module):
    """conv 3x3 (input + x/y coordinate channels) -> ReLU -> pixel shuffle x2."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in + 2, c_out * 4, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x, coord_channels(x.shape[0], x.shape[-1], x)], dim=1)
        return self.shuffle(self.act(self.conv(x)))


class PixelDecoder(nn.Module):
    """Pixel-shuffle decoder from a 16 x 16 feature map to ``out`` channels at 128 x 128."""

    def __init__(self, channels: int = 16, widths: tuple[int, ...] = (16, 16, 8), out: int = 1):
        super().__init__()
        stages, c = [], channels
        for w in widths:
            stages.append(PixelShuffleUp(c, w))
            c = w
        self.stages = nn.Sequential(*stages)
        self.head = nn.Conv2d(c + 2, out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(x)
        return self.head(torch.cat([x, coord_channels(x.shape[0], x.shape[-1], x)], dim=1))


class TransposedConvDecoder(nn.Module):
    """DCGAN-style generator: a linear stem to (c, 8, 8), then x2 transposed convolutions to 128."""

    def __init__(
        self, n_in: int, out: int, widths: tuple[int, ...] = (64, 32, 16, 8), stem: int = 256
    ):
        super().__init__()
        self.c0 = widths[0]
        self.stem = nn.Sequential(
            nn.Linear(n_in, stem), nn.ReLU(inplace=True), nn.Linear(stem, widths[0] * 64)
        )
        layers: list[nn.Module] = [nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.ConvTranspose2d(widths[-1], out, 4, stride=2, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.stem(x).view(x.shape[0], self.c0, 8, 8))


class StrokeRenderer(nn.Module):
    """Common front: every renderer maps (N, n_params) in [0, 1] to (fg (N,3,S,S), alpha (N,1,S,S))."""

    def __init__(self, config: RendererConfig):
        super().__init__()
        self.config = config
        schema = get_brush(config.brush).schema
        self.n_params = schema.n
        self.register_buffer("shape_index", torch.tensor(schema.shape_index), persistent=False)
        self.alpha_index = schema.alpha_index


class DualPathwayRenderer(StrokeRenderer):
    """Rasterisation branch (shape -> silhouette) x shading branch (all params -> colour).

    impasto's rasterisation branch: a field encoder and a pointwise pixel decoder, which
    draw at any resolution (training runs coarse to fine; the product is 128 x 128). The
    shading branch is a DCGAN-style transposed-convolution net drawing colour at 64 x 64,
    resized bilinearly (colour is smooth; the silhouette carries the sharp edges).
    """

    def __init__(self, config: RendererConfig):
        super().__init__(config)
        self.encoder = FieldEncoder(len(self.shape_index))
        self.decoder = PointwiseDecoder()
        self.shading = TransposedConvDecoder(self.n_params, out=3, widths=(64, 32, 16), stem=128)

    def silhouette(self, params: torch.Tensor, size: int = SIZE) -> torch.Tensor:
        return torch.sigmoid(self.decoder(self.encoder(params[:, self.shape_index]), size))

    def forward(self, params: torch.Tensor, size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
        silhouette = self.silhouette(params, size)
        colour = self.shading(params)
        if colour.shape[-1] != size:
            colour = nn.functional.interpolate(colour, size=(size, size), mode="bilinear", align_corners=False)
        colour = torch.sigmoid(colour)
        alpha = params[:, self.alpha_index].view(-1, 1, 1, 1)
        return colour * silhouette, alpha * silhouette


class DualPathwayFeatureMapRenderer(DualPathwayRenderer):
    """The paper's exact rasterisation branch: linear layers to a 16 x 16 map, pixel-shuffle decoder."""

    def __init__(self, config: RendererConfig):
        super().__init__(config)
        self.encoder = PositionalEncoder(len(self.shape_index), channels=12)
        self.decoder = PixelDecoder(channels=12)

    def silhouette(self, params: torch.Tensor, size: int = SIZE) -> torch.Tensor:
        if size != SIZE:
            raise ValueError(f"the feature-map renderer draws at {SIZE} px only")
        return torch.sigmoid(self.decoder(self.encoder(params[:, self.shape_index])))


class _DirectRenderer(StrokeRenderer):
    """Baselines: one network predicts 4 channels, sigmoid -> (foreground RGB, alpha)."""

    body: nn.Module

    def forward(self, params: torch.Tensor, size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
        if size != SIZE:
            raise ValueError(f"the {self.config.arch} renderer draws at {SIZE} px only")
        out = torch.sigmoid(self.body(params))
        return out[:, :3], out[:, 3:]


class DCGANRenderer(_DirectRenderer):
    def __init__(self, config: RendererConfig):
        super().__init__(config)
        self.body = TransposedConvDecoder(self.n_params, out=4, widths=(128, 64, 32, 16), stem=512)


class PixelShuffleRenderer(_DirectRenderer):
    """Huang et al.'s (Learning to Paint) FCN: linear layers to 16 x 16, pixel shuffle to 128."""

    def __init__(self, config: RendererConfig):
        super().__init__(config)
        self.body = nn.Sequential(
            PositionalEncoder(self.n_params), PixelDecoder(widths=(32, 16, 8), out=4)
        )


class _UNet(nn.Module):
    """A small U-Net over a 32 x 32 map made from the parameters, upsampled x4 by pixel shuffle."""

    def __init__(self, n_in: int, c: int = 32):
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(n_in, 256), nn.ReLU(inplace=True), nn.Linear(256, 8 * 32 * 32))

        def block(ci, co):
            return nn.Sequential(nn.Conv2d(ci, co, 3, padding=1), nn.ReLU(inplace=True))

        self.enc1, self.enc2, self.enc3 = block(10, c), block(c, 2 * c), block(2 * c, 4 * c)
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec2, self.dec1 = block(4 * c + 2 * c, 2 * c), block(2 * c + c, c)
        self.out = nn.Sequential(PixelShuffleUp(c, 16), PixelShuffleUp(16, 8), nn.Conv2d(8, 4, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x).view(x.shape[0], 8, 32, 32)
        x = torch.cat([x, coord_channels(x.shape[0], 32, x)], dim=1)
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        e3 = self.enc3(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up(e3), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up(d2), e1], dim=1))
        return self.out(d1)


class UNetRenderer(_DirectRenderer):
    def __init__(self, config: RendererConfig):
        super().__init__(config)
        self.body = _UNet(self.n_params)


ARCHITECTURES: dict[str, type[StrokeRenderer]] = {
    "dual": DualPathwayRenderer,
    "dual-featuremap": DualPathwayFeatureMapRenderer,
    "dcgan": DCGANRenderer,
    "pixelshuffle": PixelShuffleRenderer,
    "unet": UNetRenderer,
}


def build_renderer(config: RendererConfig) -> StrokeRenderer:
    """The renderer described by ``config`` (untrained)."""
    if config.arch not in ARCHITECTURES:
        raise ValueError(f"unknown renderer architecture '{config.arch}': choose one of {', '.join(ARCHITECTURES)}")
    if config.size != SIZE:
        raise ValueError(f"renderers draw at {SIZE} x {SIZE}; size={config.size} is not supported")
    return ARCHITECTURES[config.arch](config)


def dual_pathway(brush: str) -> StrokeRenderer:
    return build_renderer(RendererConfig(brush, "dual"))


def dcgan(brush: str) -> StrokeRenderer:
    return build_renderer(RendererConfig(brush, "dcgan"))


def pixelshuffle(brush: str) -> StrokeRenderer:
    return build_renderer(RendererConfig(brush, "pixelshuffle"))


def unet(brush: str) -> StrokeRenderer:
    return build_renderer(RendererConfig(brush, "unet"))
