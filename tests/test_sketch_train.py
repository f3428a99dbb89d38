"""`impasto train sketch` on a tiny generated folder set: steps, curriculum, weights, resume, evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from impasto.train.data.sketch import build_sketch_dataset
from impasto.train.eval.sketch import SketchEvaluator
from impasto.train.loops.gan import train_gan
from impasto.train.loops.sketch import SketchTask, SketchTrainConfig, focal_loss
from impasto.train.models.weights_io import load_sketch
from impasto.train.options import OptionError


def _tiny_set(root: Path, n: int = 12) -> Path:
    """Pairs of a dark shape on a tinted ground and its outline; half photo edges, half drawn; two classes."""
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        stem = f"s{i}"
        x0, y0 = rng.integers(4, 20, 2)
        box = [int(x0), int(y0), int(x0) + 24, int(y0) + 24]
        photo = Image.new("RGB", (48, 48), (200, 180 - 10 * (i % 2), 40 + 10 * i))
        ImageDraw.Draw(photo).ellipse(box, fill=(30, 30, 60))
        sketch = Image.new("L", (48, 48), 255)
        ImageDraw.Draw(sketch).ellipse(box, outline=0, width=1)
        for folder, im in (("images", photo), ("sketches", sketch)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            im.save(root / folder / f"{stem}.png")
        items.append({"stem": stem, "class": ("sea", "snow")[i % 2], "source": ("photo", "drawn")[(i // 2) % 2],
                      "split": "val" if i >= n - 3 else "train"})
    (root / "classes.json").write_text(json.dumps(["sea", "snow"]))
    (root / "index.json").write_text(json.dumps({"items": items}))
    return root


def _config(data: Path, out: Path, **kw) -> SketchTrainConfig:
    base = dict(data=str(data), size=32, ngf=8, ndf=8, num_down=3, z_dim=4, batch=4, steps=4, features="random",
                val_every=2, ckpt_every=2, log_every=2, val_samples=2, out=str(out), device="cpu", threads=1)
    return SketchTrainConfig(**{**base, **kw})


def test_focal_loss_is_cross_entropy_scaled_by_the_miss():
    logits = torch.tensor([[4.0, 0.0], [0.0, 0.0]])
    target = torch.tensor([0, 1])
    ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    p = torch.softmax(logits, 1)[[0, 1], target]
    assert focal_loss(logits, target).item() == pytest.approx(((1 - p) ** 2 * ce).mean().item(), rel=1e-5)
    assert focal_loss(logits, target, gamma=0).item() == pytest.approx(ce.mean().item(), rel=1e-5)


def test_training_writes_loadable_weights_follows_the_curriculum_and_resumes(tmp_path):
    data = _tiny_set(tmp_path / "data")
    cfg = _config(data, tmp_path / "run")
    task = SketchTask(cfg)
    sampler = task.batch_sampler(task.train, cfg, 1, 0)
    shares = [task.train.sources[sampler.global_batch(s)].float().mean().item() for s in range(cfg.steps)]
    assert shares[0] <= 0.25 and shares[-1] >= 0.5  # the drawn share grows over the run
    summary = train_gan(task, cfg, progress=False)
    generator, config, classes = load_sketch(summary["weights"])
    assert classes == ["sea", "snow"] and config.num_classes == 2 and config.arch == "mru"
    out = generator(torch.ones(1, 1, 32, 48), torch.zeros(1, config.z_dim), torch.tensor([1]))
    assert out.shape == (1, 3, 32, 48) and out.abs().max() <= 1
    assert sorted(p.name for p in (tmp_path / "run" / "samples").iterdir()) == ["step_0000002.png", "step_0000004.png"]
    # re-running with more steps resumes from the checkpoint at step 4
    more = train_gan(SketchTask(_config(data, tmp_path / "run", steps=6)), _config(data, tmp_path / "run", steps=6),
                     progress=False)
    assert more["steps"] == 6 and json.loads((tmp_path / "run" / "history.json").read_text())[-1]["step"] == 6


def test_baselines_train_at_equal_parameters_and_bad_options_are_named(tmp_path):
    from impasto.train.models.sketchygan import build_generator, count_parameters

    data = _tiny_set(tmp_path / "data")
    counts = {arch: count_parameters(build_generator(SketchTask(_config(data, tmp_path / arch, arch=arch)).model))
              for arch in ("mru", "resnet", "unet")}
    assert max(counts.values()) / min(counts.values()) < 1.05, counts
    with pytest.raises(OptionError, match="--size 36 is not a multiple"):
        SketchTask(_config(data, tmp_path / "x", size=36))
    with pytest.raises(OptionError, match="curriculum-start"):
        SketchTask(_config(data, tmp_path / "x", curriculum_start=0.9, curriculum_end=0.1))
    with pytest.raises(OptionError, match="--data is required"):
        SketchTask(_config("", tmp_path / "x"))


def test_the_evaluator_scores_fidelity_realism_and_diversity(tmp_path):
    """A real (tiny, untrained) generator against the real photos, with a simple threshold edge detector."""
    from impasto.train.models.sketchygan import SketchConfig, build_generator

    data = build_sketch_dataset("folder", _tiny_set(tmp_path / "data"), "train", 32, augment=False)

    def edges(image: torch.Tensor) -> np.ndarray:  # dark-on-light boundaries: where the grey level crosses 0.5
        grey = image.mean(0).numpy() < 0.5
        return grey ^ np.roll(grey, 1, 0) | grey ^ np.roll(grey, 1, 1)

    torch.manual_seed(0)
    generator = build_generator(SketchConfig(num_classes=2, ngf=8, num_down=3, z_dim=4, image_size=32))
    evaluator = SketchEvaluator(data, edges=edges, features="random", limit=6, batch=4)
    a, b = evaluator(generator), evaluator(generator)
    assert a == b  # seeded noise: the same numbers twice
    assert a.n == 6 and a.frechet.features == "FD-VGG19-random" and a.frechet.value > 0
    assert 0 <= a.chamfer_real < 5 < a.chamfer  # the photos' outlines follow the sketch, a random generator's do not
    assert a.diversity > 0 and set(a.as_dict()) == {"fd_vgg19_random", "chamfer", "chamfer_real", "diversity"}
    with pytest.raises(ValueError, match="at least 2"):
        SketchEvaluator(data, edges=edges, features="random", limit=1)
