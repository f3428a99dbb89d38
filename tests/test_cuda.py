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


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_gan_loop_trains_with_amp_on_cuda_and_resumes(tmp_path, amp):
    """The shared GAN loop on CUDA: autocast (bf16, or fp16 with gradient scaling), finite losses, EMA saved, resume."""
    from test_gan import TinyTask, tiny_config

    from impasto.train.loops.gan import train_gan

    cfg = tiny_config(tmp_path / amp, steps=6, ckpt_every=3)
    cfg.device, cfg.amp = "cuda", amp
    from safetensors.torch import load_file

    summary = train_gan(TinyTask(), cfg, progress=False)
    weights = load_file(summary["weights"])
    assert summary["steps"] == 6 and weights and all(torch.isfinite(v.float()).all() for v in weights.values())
    cfg.steps = 8
    assert train_gan(TinyTask(), cfg, progress=False)["resumed_from"] == 6


def test_semantic_generator_on_cuda_matches_cpu():
    from impasto.train.models.spade import SemanticConfig, one_hot, spade_generator

    torch.manual_seed(0)
    g = spade_generator(SemanticConfig(ngf=8, spade_hidden=8)).eval()
    labels = torch.randint(0, 9, (2, 1, 64, 96))
    z = torch.randn(2, 64)
    with torch.no_grad():
        cpu = g(one_hot(labels, 9), z)
        gpu = g.cuda()(one_hot(labels.cuda(), 9), z.cuda())
    assert (gpu.cpu() - cpu).abs().max() < 1e-3
