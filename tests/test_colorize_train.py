"""`impasto train colorize` on a tiny generated folder set: steps, the ablation's switches, weights, resume, scores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from impasto.train.data.colorize import build_colorize_dataset
from impasto.train.eval.colorize import ColorizeEvaluator, psnr, ssim
from impasto.train.loops.colorize import ColorizeTask, ColorizeTrainConfig
from impasto.train.loops.gan import train_gan
from impasto.train.models.weights_io import load_colorize
from impasto.train.options import OptionError


def _tiny_set(root: Path, n: int = 40) -> Path:
    """Filled circles with a black outline, and the outline alone."""
    rng = np.random.default_rng(0)
    for folder in ("lineart", "color"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        colour, line = Image.new("RGB", (48, 48), (255, 255, 255)), Image.new("L", (48, 48), 255)
        x0, y0 = (int(v) for v in rng.integers(4, 20, 2))
        box = [x0, y0, x0 + 22, y0 + 22]
        ImageDraw.Draw(colour).ellipse(box, fill=tuple(int(v) for v in rng.integers(0, 255, 3)), outline=(0, 0, 0),
                                       width=2)
        ImageDraw.Draw(line).ellipse(box, outline=0, width=2)
        colour.save(root / "color" / f"p{i}.png")
        line.save(root / "lineart" / f"p{i}.png")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return _tiny_set(tmp_path_factory.mktemp("colorize") / "data")


def _config(data: Path, out: Path, **kw) -> ColorizeTrainConfig:
    base = dict(data=str(data), size=32, width=8, ndf=8, num_down=3, style_side=32, batch=4, steps=4,
                features="random", val_every=2, ckpt_every=2, log_every=2, val_samples=2, out=str(out), device="cpu",
                threads=1)
    return ColorizeTrainConfig(**{**base, **kw})


def test_psnr_and_ssim_score_identity_best():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 24, 24, generator=g)
    noisy = (a + 0.1 * torch.randn(2, 3, 24, 24, generator=g)).clamp(0, 1)
    assert psnr(a, a) == pytest.approx(100.0)
    assert 15 < psnr(a, noisy) < 25  # sigma 0.1: about 20 dB
    assert ssim(a, a) == pytest.approx(1.0) and ssim(a, noisy) < 0.95


def test_training_writes_loadable_weights_scores_and_resumes(data, tmp_path):
    cfg = _config(data, tmp_path / "run", evaluate=True)
    summary = train_gan(ColorizeTask(cfg), cfg, progress=False)
    generator, head_state, config = load_colorize(summary["weights"])
    assert (config.width, config.num_down, config.style_side, config.image_size, config.guides) == (8, 3, 32, 32, True)
    assert head_state["weight"].shape == (config.style_dim, config.descriptor_dim)
    out = generator(torch.zeros(1, 1, 32, 32), torch.zeros(1, 4, 32, 32), torch.zeros(1, config.style_dim))
    assert out.image.shape == (1, 3, 32, 32)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 4]
    for mode in ("lines", "hints", "reference"):
        assert {f"psnr_{mode}", f"ssim_{mode}", f"fd_vgg19_random_{mode}"} <= set(lines[-1])
    assert "g_guide1" in summary and "g_guide2" in summary and "d_ac" in summary and "g_ac" in summary
    # resume: the same folder, more steps, continues from the checkpoint
    more = train_gan(ColorizeTask(_config(data, tmp_path / "run", steps=6)),
                     _config(data, tmp_path / "run", steps=6), progress=False)
    assert more["resumed_from"] == 4 and more["steps"] == 6


@pytest.mark.parametrize("switch", [{"guides": False}, {"disc": "conditional"}, {"hints": False}])
def test_the_ablations_switches_change_what_trains(data, tmp_path, switch):
    cfg = _config(data, tmp_path / "run", steps=2, **switch)
    task = ColorizeTask(cfg)
    summary = train_gan(task, cfg, progress=False)
    if "guides" in switch:
        assert "g_guide1" not in summary and "g_ac" in summary
    if "disc" in switch:
        assert "g_ac" not in summary and "d_ac" not in summary and "g_guide1" in summary
    if "hints" in switch:
        batch = {k: v[None] for k, v in task.train[0].items()}
        assert batch["hints"].abs().sum() > 0  # the data has hints ...
        ink, hints, _, _ = task._inputs(batch)
        assert hints.abs().sum() == 0  # ... and the task withholds them


def test_style_and_hints_reach_the_output_through_the_task(data, tmp_path):
    """The trainable wrapper uses the reference (zero style without one) and the hints."""
    task = ColorizeTask(_config(data, tmp_path / "run"))
    g = task.build_generator().eval()
    torch.nn.init.normal_(g.head.weight, std=1.0)
    item = {k: v[None] for k, v in task.val[0].items()}
    ink, hints, descriptor, _ = task._inputs(item)
    with torch.no_grad():
        with_ref = g(ink, hints, descriptor, torch.ones(1)).image
        without = g(ink, hints, descriptor, torch.zeros(1)).image
        zero_desc = g(ink, hints, torch.zeros_like(descriptor), torch.zeros(1)).image
        no_hints = g(ink, torch.zeros_like(hints), descriptor, torch.ones(1)).image
    assert not torch.allclose(with_ref, without)
    assert torch.allclose(without, zero_desc)  # has_reference 0: the descriptor does not matter
    if hints.abs().sum() > 0:
        assert not torch.allclose(with_ref, no_hints)


def test_the_evaluator_is_repeatable_and_ranks_a_perfect_colouriser_first(data):
    val = build_colorize_dataset(data, "train", 32, style_side=32, augment=False)
    evaluator = ColorizeEvaluator(val, style_side=32, features="random", limit=8, batch=4)
    answers = torch.stack([val[i]["image"] for i in range(8)]).split(4)
    calls = []

    def perfect(ink, hints, reference):  # the evaluator walks its batches in order, in every mode
        calls.append(1)
        return answers[(len(calls) - 1) % len(answers)]

    grey = lambda ink, hints, reference: torch.zeros(ink.shape[0], 3, *ink.shape[2:])  # noqa: E731
    best, worst = evaluator(perfect), evaluator(grey)
    assert len(calls) == 3 * 2 and best.psnr["lines"] > 90 and best.ssim["lines"] > 0.999 and best.frechet["lines"] < 1e-3
    assert worst.psnr["lines"] < 20 and worst.frechet["lines"] > best.frechet["lines"]
    assert evaluator(grey).as_dict() == worst.as_dict()  # the same items, hints and references each call


def test_bad_options_are_named(data, tmp_path):
    with pytest.raises(OptionError, match="--data is required"):
        ColorizeTask(ColorizeTrainConfig())
    with pytest.raises(OptionError, match="--size"):
        ColorizeTask(_config(data, tmp_path / "run", size=36))
    run = subprocess.run([sys.executable, "-m", "impasto", "train", "colorize", "--data", str(data),
                          "--disc", "both", "--out", str(tmp_path / "x")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "--disc" in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert not (tmp_path / "x").exists()
