"""SPADE's evaluation protocol: the segmenter, its trainer, evaluate_semantic and the training hook.

The data is made here: label maps of random rectangles in three classes, each painted in its
table colour (plus a little noise), so a segmenter can learn them within a few dozen steps and
a generator that paints the table colours (an oracle) must score near-perfectly.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from impasto.runtime.cli import main
from impasto.train.data.labels import Label, LabelTable
from impasto.train.eval.semantic import (
    SemanticEvaluator,
    evaluate_semantic,
    frechet_key,
    segmenter_scores,
)
from impasto.train.loops.segmenter import SegmenterTrainConfig, train_segmenter
from impasto.train.models.segmenter import SegmenterConfig, unet_segmenter
from impasto.train.models.weights_io import load_segmenter, read_metadata, save_segmenter

torch.set_num_threads(1)

TABLE = LabelTable((Label("sky", "#3060e0"), Label("grass", "#30c030"), Label("sand", "#e0c060")))
SIZE = 32


def layout(seed: int, size: int = SIZE) -> np.ndarray:
    """A (size, size) uint8 map: a background class with two rectangles of other classes, from ``seed``."""
    rng = np.random.default_rng(seed)
    lab = np.full((size, size), rng.integers(3), np.uint8)
    for _ in range(2):
        y, x = rng.integers(0, size - 8, 2)
        h, w = rng.integers(6, size // 2, 2)
        lab[y:y + h, x:x + w] = rng.integers(3)
    return lab


def paint(lab: np.ndarray, seed: int) -> np.ndarray:
    """The picture of a label map: each class in its table colour, with mild noise."""
    noise = np.random.default_rng(seed + 10_000).normal(0, 8, lab.shape + (3,))
    return np.clip(TABLE.palette()[lab].astype(np.float64) + noise, 0, 255).astype(np.uint8)


class Flat(Dataset):
    """(image in [-1, 1], label) pairs of :func:`layout` / :func:`paint`, a function of the index."""

    table = TABLE

    def __init__(self, n: int, offset: int = 0):
        self.n, self.offset = n, offset

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        lab = layout(self.offset + i)
        img = torch.from_numpy(paint(lab, self.offset + i)).permute(2, 0, 1).float() / 127.5 - 1
        return img, torch.from_numpy(lab).long()


def oracle(labels: torch.Tensor) -> torch.Tensor:
    """A 'generator' that paints each class in its table colour: what a perfect generator would do."""
    palette = torch.as_tensor(TABLE.palette(), dtype=torch.float32) / 127.5 - 1
    return palette[labels].permute(0, 3, 1, 2)


def noise(labels: torch.Tensor) -> torch.Tensor:
    """A 'generator' that ignores its labels (draws from torch's generator, which the evaluator seeds)."""
    return torch.rand(labels.shape[0], 3, *labels.shape[1:]) * 2 - 1


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    """A segmenter trained on Flat data for 40 steps, and its weights file."""
    out = tmp_path_factory.mktemp("seg")
    cfg = SegmenterTrainConfig(steps=40, batch=8, lr=3e-3, width=8, val_every=40, out=str(out), device="cpu")
    result = train_segmenter(cfg, progress=False, train=Flat(64), val=Flat(16, offset=500))
    model, _ = load_segmenter(result.weights)
    return model, result.weights


def test_segmenter_learns_flat_colour_classes_and_the_file_round_trips(trained, tmp_path):
    model, path = trained
    scores = segmenter_scores(model, Flat(16, offset=900))
    assert scores.miou > 0.9 and scores.pixel_accuracy > 0.95, scores
    meta = read_metadata(path)
    assert meta["kind"] == "segmenter" and meta["metrics"]["val_miou"] > 0.9
    assert meta["config"] == SegmenterConfig(num_classes=3, width=8).to_dict()
    # round trip: same logits, same table; the file is float32 by default (a measuring instrument)
    again = save_segmenter(tmp_path / "again.safetensors", model, TABLE)
    reloaded, table = load_segmenter(again)
    x = Flat(2)[0][0][None]
    assert torch.equal(model(x), reloaded(x)) and table == TABLE
    with pytest.raises(ValueError, match="2 labels but the segmenter has 3"):
        save_segmenter(tmp_path / "bad.safetensors", model, LabelTable(TABLE.labels[:2]))
    with pytest.raises(FileNotFoundError, match="impasto train segmenter"):
        load_segmenter(tmp_path / "missing.safetensors")


def test_segmenter_takes_any_size_and_checks_its_config():
    seg = unet_segmenter(5, width=8)
    assert seg(torch.zeros(1, 3, 21, 34)).shape == (1, 5, 21, 34)
    assert 4e5 < sum(p.numel() for p in unet_segmenter(9).parameters()) < 2e6  # the default: a compact U-Net
    with pytest.raises(ValueError, match="groups must divide width 12"):
        SegmenterConfig(num_classes=3, width=12, norm="group", groups=8)


def test_oracle_scores_high_and_close_noise_scores_low_and_far(trained):
    model, path = trained
    val = Flat(12, offset=700)
    good = evaluate_semantic(oracle, val, path, features="random", batch=5)
    bad = evaluate_semantic(noise, val, model, features="random", batch=5)
    assert good.n == bad.n == 12
    assert good.miou > 0.9 and bad.miou < 0.6, (good, bad)
    assert good.frechet.features == "FD-VGG19-random" and good.frechet.value < bad.frechet.value / 4
    assert good.real is not None and good.real.miou > 0.9  # the upper bound on the real images
    keys = good.as_dict()
    assert set(keys) == {"miou", "pixel_accuracy", "fd_vgg19_random", "real_miou", "real_pixel_accuracy"}
    assert frechet_key("FID") == "fid"
    # the same noise each call: a random generator scores identically twice
    evaluator = SemanticEvaluator(val, model, features="random", limit=6)
    first, second = evaluator(noise), evaluator(noise)
    assert first.n == 6 and first.miou == second.miou and first.frechet.value == second.frechet.value


def test_the_protocol_refuses_what_does_not_fit(trained, tmp_path):
    model, path = trained
    other = LabelTable((Label("a", "#000001"), Label("b", "#000002"), Label("c", "#000003")))

    class Other(Flat):
        table = other

    with pytest.raises(ValueError, match="train a segmenter on this dataset"):
        evaluate_semantic(oracle, Other(4), path, features="random")
    with pytest.raises(ValueError, match="limit must be at least 2"):
        evaluate_semantic(oracle, Flat(4), model, features="random", limit=1)
    with pytest.raises(ValueError, match=r"expected \(2, 3, 32, 32\)"):
        evaluate_semantic(lambda labels: torch.zeros(2, 1, 32, 32), Flat(2), model, features="random")


class Interrupted(Flat):
    """Flat data that fails after ``fail_after`` item reads: a run killed mid-way."""

    def __init__(self, n: int, fail_after: int):
        super().__init__(n)
        self.reads, self.fail_after = 0, fail_after

    def __getitem__(self, i: int):
        self.reads += 1
        if self.reads > self.fail_after:
            raise KeyboardInterrupt
        return super().__getitem__(i)


def test_an_interrupted_segmenter_run_resumes_to_the_same_weights(tmp_path):
    def cfg(out: str) -> SegmenterTrainConfig:
        return SegmenterTrainConfig(steps=6, batch=4, width=8, val_every=3, out=str(tmp_path / out), device="cpu")

    straight = train_segmenter(cfg("a"), progress=False, train=Flat(16), val=Flat(4, 100))
    with pytest.raises(KeyboardInterrupt):  # dies during step 5, after the step-3 checkpoint
        train_segmenter(cfg("b"), progress=False, train=Interrupted(16, fail_after=4 * 4 + 2), val=Flat(4, 100))
    resumed = train_segmenter(cfg("b"), progress=False, train=Flat(16), val=Flat(4, 100))
    assert [e.step for e in resumed.history] == [3, 6]
    a, _ = load_segmenter(straight.weights)
    b, _ = load_segmenter(resumed.weights)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def write_folder(root: Path, n_train: int = 8, n_val: int = 4) -> Path:
    """The generic folder layout (images/, labels/, labels.json, split.json) of Flat pictures."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    stems = [f"s{i:03d}" for i in range(n_train + n_val)]
    for i, stem in enumerate(stems):
        lab = layout(i)
        Image.fromarray(paint(lab, i)).save(root / "images" / f"{stem}.png")
        Image.fromarray(lab, mode="L").save(root / "labels" / f"{stem}.png")
    (root / "labels.json").write_text(TABLE.to_json())
    (root / "split.json").write_text(json.dumps({"train": stems[:n_train], "val": stems[n_train:]}))
    return root


def test_cli_trains_a_segmenter_resumes_and_feeds_the_semantic_trainer(tmp_path, capsys):
    data = write_folder(tmp_path / "data")
    seg = tmp_path / "seg"
    common = ["train", "segmenter", "--data", str(data), "--size", "32", "--batch", "4", "--width", "8",
              "--out", str(seg), "--threads", "1", "--json"]
    assert main([*common, "--steps", "3"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["steps"] == 3 and Path(first["weights"]).is_file() and 0 <= first["val_miou"] <= 1
    assert main([*common, "--steps", "5"]) == 0  # resumes from step 3
    second = json.loads(capsys.readouterr().out)
    history = json.loads((seg / "history.json").read_text())
    assert second["steps"] == 5 and [e["step"] for e in history] == [3, 5]

    run = tmp_path / "gan"
    code = main(["train", "semantic", "--data", str(data), "--size", "32", "--ngf", "4", "--num-up", "2", "--ndf", "4",
                 "--scales", "1", "--z-dim", "4", "--steps", "2", "--batch", "2", "--val-every", "1",
                 "--features", "random", "--lambda-vgg", "0", "--segmenter", first["weights"], "--out", str(run),
                 "--threads", "1", "--json"])
    assert code == 0, capsys.readouterr().err
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in lines] == [1, 2] and all(e["n"] == 4 for e in lines)
    assert all(0 <= e["miou"] <= 1 and math.isfinite(e["fd_vgg19_random"]) for e in lines)
    assert json.loads((run / "history.json").read_text())[-1]["miou"] == lines[-1]["miou"]  # the loop records them too
    # the saved generator file is scored the same way (the raw generator takes one-hot maps: wrapped)
    from impasto.train.data.segmentation import build_dataset

    val = build_dataset("folder", data, "val", 32)
    scores = evaluate_semantic(run / "semantic_spade.safetensors", val, first["weights"], features="random")
    assert scores.n == 4 and 0 <= scores.miou <= 1

    # a segmenter for other labels is refused with one line, naming the remedy
    other = LabelTable((Label("a", "#000001"), Label("b", "#000002"), Label("c", "#000003")))
    wrong = save_segmenter(tmp_path / "wrong.safetensors", unet_segmenter(3, width=8), other)
    code = main(["train", "semantic", "--data", str(data), "--size", "32", "--ngf", "4", "--num-up", "2", "--ndf", "4",
                 "--scales", "1", "--z-dim", "4", "--steps", "1", "--batch", "2", "--val-every", "1",
                 "--features", "random", "--lambda-vgg", "0", "--segmenter", str(wrong), "--out", str(tmp_path / "g2"),
                 "--threads", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "train a segmenter on this dataset" in err and "Traceback" not in err
