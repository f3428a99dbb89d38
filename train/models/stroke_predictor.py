"""The stroke predictor (Paint Transformer, Liu et al. ICCV 2021): a patch of the target and of the canvas -> strokes.

A feed-forward network looks at a P x P patch of the target picture and the same patch of the
canvas painted so far, and predicts a set of ``strokes`` strokes for it, each with a confidence
that it is worth painting. The painter (runtime/ops/paint_predict.py) runs it coarse to fine:
level k cuts the picture into 2^k x 2^k patches, keeps the confident strokes, places them on the
canvas with :meth:`impasto.train.brushes.Brush.place` and goes on with the next level. It is
self-trained on random strokes rendered by the exact engine (``impasto train strokes``), with no
dataset.

Conventions (shared with the losses, the trainer, the export and the painter):

- Inputs are RGB in [0, 1], (B, 3, P, P), P = :attr:`PredictorConfig.patch`.
- ``params`` (B, S, n) are in [0, 1], patch-local, in the brush's own parameter space (what
  ``brush.render(params, P)`` takes); strokes are in painting order: index 0 is laid first, the
  last is on top. ``confidence`` (B, S) is in [0, 1]; a stroke is painted when it is > 0.5.

Architecture (small on purpose: a 512 px painting runs it over 1 + 4 + 16 + 64 + 256 patches
and must take well under a second on two CPU cores):

- **encoder**: one conv net over (target, canvas, target - canvas), nine channels, two stride-2
  steps down to a (P/4) x (P/4) grid of ``width``-channel tokens, plus a learned position
  embedding. One encoder over the three rather than Paint Transformer's two: the difference
  is what matters (where the canvas still misses the target), and one pass costs half.
- **decoder**: ``strokes`` learned queries, ``layers`` transformer-decoder layers (self-attention
  among the queries, so that they share out the strokes; cross-attention to the tokens; an MLP),
  pre-norm, with hand-written attention (MatMul, Softmax: exports to any ONNX opset >= 17 and
  TensorRT's parser without the fused attention ops).
- **heads**: a linear layer per query -> ``n`` parameters and one confidence logit, both
  through a sigmoid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from impasto.train.models.config import StoredConfig
from torch import nn

__all__ = [
    "PredictorConfig",
    "PredictorWeightsMissing",
    "StrokePredictor",
    "build_stroke_predictor",
    "check_patches",
]


class PredictorWeightsMissing(FileNotFoundError):
    """No trained stroke predictor for a brush (the message names the brush, the file and how to make one)."""


@dataclass(frozen=True)
class PredictorConfig(StoredConfig):
    """Everything needed to rebuild a stroke predictor: stored beside its weights."""

    brush: str = "oil"  # the brush whose parameters it predicts (impasto.train.brushes)
    patch: int = 32  # side of a patch in pixels (a multiple of 4)
    strokes: int = 8  # strokes predicted per patch (S)
    width: int = 96  # channels of the tokens and the decoder
    layers: int = 2  # transformer-decoder layers
    heads: int = 4  # attention heads (divides width)
    stem: int = 16  # channels of the first conv (full resolution)

    def __post_init__(self) -> None:
        from impasto.train.brushes import get_brush

        get_brush(self.brush)  # UnknownBrushError naming the choices
        if self.patch < 8 or self.patch % 4 or self.patch > 256:
            raise ValueError(f"patch must be a multiple of 4 in 8..256, got {self.patch}")
        if not 1 <= self.strokes <= 64:
            raise ValueError(f"strokes must be 1..64, got {self.strokes}")
        for name in ("width", "stem", "layers", "heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} must be a multiple of heads {self.heads}")
        if self.layers > 8:
            raise ValueError(f"layers must be 1..8, got {self.layers}")

    @property
    def n_params(self) -> int:
        """Parameters per stroke of :attr:`brush`."""
        from impasto.train.brushes import get_brush

        return get_brush(self.brush).n_params

    @property
    def grid(self) -> int:
        """Side of the token grid: the patch after two stride-2 convolutions."""
        return self.patch // 4


def check_patches(target: torch.Tensor, canvas: torch.Tensor, patch: int) -> None:
    """ValueError naming the input unless both are (B, 3, patch, patch) with the same batch."""
    for name, t in (("target", target), ("canvas", canvas)):
        if t.dim() != 4 or t.shape[1] != 3 or t.shape[2] != patch or t.shape[3] != patch:
            raise ValueError(f"{name} must be shaped (B, 3, {patch}, {patch}), got {tuple(t.shape)}")
    if target.shape[0] != canvas.shape[0]:
        raise ValueError(f"target and canvas batches differ: {target.shape[0]} and {canvas.shape[0]}")


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head scaled dot-product attention of (B, Lq, D) over (B, Lk, D), written out (MatMul, Softmax)."""
    b, lq, d = q.shape
    lk, dh = k.shape[1], d // heads
    q = q.reshape(b, lq, heads, dh).transpose(1, 2)
    k = k.reshape(b, lk, heads, dh).transpose(1, 2)
    v = v.reshape(b, lk, heads, dh).transpose(1, 2)
    weights = torch.softmax(torch.matmul(q, k.transpose(2, 3)) * (1.0 / math.sqrt(dh)), dim=-1)
    return torch.matmul(weights, v).transpose(1, 2).reshape(b, lq, d)


class DecoderLayer(nn.Module):
    """Pre-norm transformer-decoder layer: self-attention of the queries, cross-attention to the tokens, MLP."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm_self = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out_self = nn.Linear(width, width)
        self.norm_cross = nn.LayerNorm(width)
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out_cross = nn.Linear(width, width)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        # slices, not chunk(): torch exports chunk as a Split whose opset-18 form the opset-17 conversion keeps
        w = x.shape[-1]
        qkv = self.qkv(self.norm_self(x))
        x = x + self.out_self(_attention(qkv[..., :w], qkv[..., w:2 * w], qkv[..., 2 * w:], self.heads))
        kv = self.kv(tokens)
        x = x + self.out_cross(_attention(self.q(self.norm_cross(x)), kv[..., :w], kv[..., w:], self.heads))
        return x + self.mlp(self.norm_mlp(x))


class StrokePredictor(nn.Module):
    """(target, canvas) patches (B, 3, P, P) in [0, 1] -> (params (B, S, n) in [0, 1], confidence (B, S) in [0, 1])."""

    def __init__(self, cfg: PredictorConfig):
        super().__init__()
        self.config = cfg
        w, s = cfg.width, cfg.stem
        mid = max(s, w // 2)
        self.encoder = nn.Sequential(
            nn.Conv2d(9, s, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(s, mid, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(mid, w, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(w, w, 3, padding=1),
        )
        self.position = nn.Parameter(torch.randn(1, cfg.grid * cfg.grid, w) * 0.02)
        self.token_norm = nn.LayerNorm(w)
        self.queries = nn.Parameter(torch.randn(1, cfg.strokes, w) * 0.02)
        self.layers = nn.ModuleList(DecoderLayer(w, cfg.heads) for _ in range(cfg.layers))
        self.out_norm = nn.LayerNorm(w)
        self.params_head = nn.Linear(w, cfg.n_params)
        self.confidence_head = nn.Linear(w, 1)
        nn.init.normal_(self.params_head.weight, std=0.01)
        nn.init.zeros_(self.params_head.bias)
        nn.init.normal_(self.confidence_head.weight, std=0.01)
        nn.init.zeros_(self.confidence_head.bias)

    def forward(self, target: torch.Tensor, canvas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([target, canvas, target - canvas], dim=1)
        feats = self.encoder(x)  # (B, w, G, G)
        tokens = self.token_norm(feats.flatten(2).transpose(1, 2) + self.position)
        q = self.queries.expand(target.shape[0], -1, -1)
        for layer in self.layers:
            q = layer(q, tokens)
        q = self.out_norm(q)
        params = torch.sigmoid(self.params_head(q))
        confidence = torch.sigmoid(self.confidence_head(q)).squeeze(-1)
        return params, confidence


def build_stroke_predictor(cfg: PredictorConfig | None = None) -> StrokePredictor:
    """A new (untrained) stroke predictor for ``cfg`` (default: the oil brush, 32 px patches, 8 strokes)."""
    return StrokePredictor(cfg or PredictorConfig())

