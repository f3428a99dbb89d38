"""GPU paths: run where CUDA exists (e.g. the lent GPU machine), skipped with the reason elsewhere."""

from __future__ import annotations

import pytest
import torch

from impasto.runtime.ops.paint import PaintOptions, paint
from impasto.train.brushes import BRUSHES, get_brush
from impasto.train.models.weights_io import load_shipped_renderer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


@pytest.mark.parametrize("name", list(BRUSHES))
def test_engine_on_cuda_matches_cpu(name):
    brush = get_brush(name)
    p = torch.rand(16, brush.n_params, generator=torch.Generator().manual_seed(0))
    fg_cpu, a_cpu = brush.render(p, 96)
    fg_gpu, a_gpu = brush.render(p.cuda(), 96)
    assert fg_gpu.is_cuda
    assert (fg_gpu.cpu() - fg_cpu).abs().mean() < 1e-4 and (a_gpu.cpu() - a_cpu).abs().mean() < 1e-4


def test_shipped_renderer_on_cuda_matches_cpu():
    p = torch.rand(8, 12)
    with torch.no_grad():
        cpu = load_shipped_renderer("oil")(p)
        gpu = load_shipped_renderer("oil", "cuda")(p.cuda())
    assert all((g.cpu() - c).abs().max() < 1e-3 for g, c in zip(gpu, cpu))


def test_painting_on_cuda_is_deterministic():
    img = torch.rand(3, 64, 64)
    opts = PaintOptions(brush="marker", strokes=10, levels=2, iterations=5, patch=32, device="cuda", seed=2)
    a, b = paint(img, opts), paint(img, opts)
    assert torch.equal(a.strokes, b.strokes) and a.canvas.shape == (3, 64, 64)
