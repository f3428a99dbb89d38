"""The shared GAN foundation: blocks, losses, the training loop (resume, EMA, grids, torchrun), evaluation."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import Dataset

from impasto.train.eval import (
    ConfusionMatrix,
    confusion_matrix,
    feature_statistics,
    frechet_distance,
    image_frechet_distance,
    segmentation_scores,
)
from impasto.train.eval.frechet import frechet_distance_of_features, inception_weights
from impasto.train.loops.gan import GANConfig, GANTask, train_gan
from impasto.train.losses.adversarial import (
    d_loss,
    discriminate,
    feature_matching_loss,
    g_loss,
    hinge_d_loss,
    hinge_g_loss,
    nonsaturating_d_loss,
    nonsaturating_g_loss,
)
from impasto.train.losses.perceptual import VGGPerceptualLoss
from impasto.train.models.gan_blocks import (
    MultiscaleDiscriminator,
    apply_spectral_norm,
    fold_spectral_norm,
    has_spectral_norm,
    spectral,
)
from impasto.train.options import OptionError, read_options

torch.set_num_threads(1)

# --- a tiny conditional task: a one-hot 4-class 16x16 label map -> a fixed colour per class ----

CLASSES = 4
COLOURS = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0], [1.0, 1.0, -1.0]])


class Layouts(Dataset):
    """Label maps of random rectangles, each a function of its index; the target paints each class its colour."""

    def __init__(self, n: int = 32, size: int = 16):
        self.n, self.size = n, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(1000 + i)
        labels = torch.zeros(self.size, self.size, dtype=torch.long)
        for c in range(1, CLASSES):
            y, x = torch.randint(0, self.size - 4, (2,), generator=g).tolist()
            h, w = torch.randint(4, self.size // 2 + 1, (2,), generator=g).tolist()
            labels[y : y + h, x : x + w] = c
        onehot = F.one_hot(labels, CLASSES).permute(2, 0, 1).float()
        return {"label": onehot, "image": COLOURS[labels].permute(2, 0, 1)}


class TinyTask(GANTask):
    """pix2pix-style: hinge + feature matching + L1; instance noise on D's inputs (so resume must restore RNG)."""

    name = "tiny"

    def __init__(self, n: int = 32):
        self.n = n
        self.g: nn.Module | None = None

    def build_generator(self) -> nn.Module:
        # spectral norm in G too, as SPADE's residual blocks have: EMA, checkpoints and DDP must carry it
        self.g = nn.Sequential(spectral(nn.Conv2d(CLASSES, 16, 3, padding=1)), nn.LeakyReLU(0.2),
                               nn.Conv2d(16, 3, 3, padding=1), nn.Tanh())
        return self.g

    def build_discriminator(self) -> nn.Module:
        return MultiscaleDiscriminator(CLASSES + 3, width=8, layers=2, scales=2)

    def train_data(self) -> Dataset:
        return Layouts(self.n)

    def val_data(self) -> Dataset:
        return Layouts(4)

    def g_step(self, g, d, batch):
        fake = g(batch["label"])
        fake_out, real_out = discriminate(d, torch.cat([batch["label"], fake], 1), torch.cat([batch["label"], batch["image"]], 1))
        adv, fm, l1 = hinge_g_loss(fake_out), feature_matching_loss(real_out, fake_out), F.l1_loss(fake, batch["image"])
        return adv + fm + 10 * l1, {"adv": adv, "fm": fm, "l1": l1}

    def d_step(self, g, d, batch):
        with torch.no_grad():
            fake = g(batch["label"])
        real = batch["image"] + 0.05 * torch.randn_like(batch["image"])
        fake_out, real_out = discriminate(d, torch.cat([batch["label"], fake], 1), torch.cat([batch["label"], real], 1))
        return hinge_d_loss(real_out, fake_out), {}

    def sample(self, g, batch):
        return batch["label"][:, 1:], g(batch["label"]), batch["image"]


def tiny_config(out: Path, **kw) -> GANConfig:
    base = {"steps": 6, "batch": 8, "lr_g": 2e-3, "lr_d": 2e-3, "ema": 0.9, "val_every": 100, "ckpt_every": 100,
            "log_every": 100, "val_samples": 4, "seed": 3, "out": str(out), "device": "cpu"}
    return GANConfig(**{**base, **kw})


def l1_of(g: nn.Module) -> float:
    batch = torch.utils.data.default_collate([Layouts(16)[i] for i in range(16)])
    with torch.no_grad():
        return float(F.l1_loss(g(batch["label"]), batch["image"]))


# --- blocks --------------------------------------------------------------------------------


def test_folding_spectral_norm_keeps_outputs_and_leaves_plain_weights():
    torch.manual_seed(0)
    net = apply_spectral_norm(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 2)))
    x = torch.randn(2, 3, 8, 8)
    for _ in range(30):  # power iterations converge in train mode
        net(x)
    net.eval()
    sigma = torch.linalg.matrix_norm(net[2].weight.detach().reshape(4, -1), ord=2)
    assert abs(float(sigma) - 1) < 1e-2  # the normalised weight has spectral norm 1
    before = net(x)
    fold_spectral_norm(net)
    assert not has_spectral_norm(net)
    assert not any(parametrize.is_parametrized(m) for m in net.modules())
    assert {"0.weight", "2.weight", "4.weight"} <= set(net.state_dict())
    assert torch.equal(net(x), before)
    net.train()
    assert torch.equal(net(x), before)  # no power iteration left to change anything


def test_multiscale_discriminator_structure_and_checks():
    d = MultiscaleDiscriminator(7, width=8, layers=3, scales=3)
    out = d(torch.randn(2, 7, 64, 64))
    assert len(out) == 3 and all(len(scale) == 4 for scale in out)  # 3 feature maps + logits per scale
    assert [s[-1].shape[1] for s in out] == [1, 1, 1]
    sizes = [s[-1].shape[-1] for s in out]
    assert sizes[0] > sizes[1] > sizes[2]
    assert [t.shape[1] for t in out[0][:-1]] == [8, 16, 32]
    assert has_spectral_norm(d)
    with pytest.raises(ValueError, match=r"\(B, 7, H, W\)"):
        d(torch.randn(2, 6, 64, 64))
    d.eval()
    x = torch.randn(1, 7, 32, 32)
    before = d(x)[1][-1]
    assert torch.equal(fold_spectral_norm(d)(x)[1][-1], before)


# --- losses --------------------------------------------------------------------------------


def test_adversarial_losses_on_hand_made_logits():
    real = [[torch.zeros(1), torch.tensor([2.0, 0.5, -1.0])], [torch.zeros(1), torch.ones(3)]]
    fake = [[torch.zeros(1), torch.tensor([-2.0, 0.0, 1.0])], [torch.zeros(1), -torch.ones(3)]]
    # scale 1: relu(1-r) = 0, .5, 2 -> 5/6; relu(1+f) = 0, 1, 2 -> 1; scale 2: both 0; averaged over scales
    assert math.isclose(float(hinge_d_loss(real, fake)), (5 / 6) / 2 + 1 / 2, rel_tol=1e-6)
    assert math.isclose(float(hinge_g_loss(fake)), (-(-1 / 3) + 1) / 2, rel_tol=1e-6)
    sp = lambda v: math.log1p(math.exp(v))
    expect_d = ((sp(-2) + sp(-0.5) + sp(1)) / 3 + sp(-1)) / 2 + ((sp(-2) + sp(0) + sp(1)) / 3 + sp(-1)) / 2
    assert math.isclose(float(nonsaturating_d_loss(real, fake)), expect_d, rel_tol=1e-6)
    assert math.isclose(float(nonsaturating_g_loss(fake)), ((sp(2) + sp(0) + sp(-1)) / 3 + sp(1)) / 2, rel_tol=1e-6)
    assert float(d_loss("hinge", real, fake)) == float(hinge_d_loss(real, fake))
    assert float(g_loss("nonsaturating", fake)) == float(nonsaturating_g_loss(fake))
    with pytest.raises(ValueError, match="wgan"):
        g_loss("wgan", fake)


def test_feature_matching_is_l1_over_features_not_logits():
    real = [[torch.ones(2, 3), torch.zeros(4), torch.full((1,), 100.0)]]
    fake = [[torch.zeros(2, 3), torch.full((4,), 2.0), torch.full((1,), -100.0)]]
    assert math.isclose(float(feature_matching_loss(real, fake)), 1.5)  # mean of L1 1 and 2; logits ignored
    two = [real[0], real[0]], [fake[0], [torch.ones(2, 3), torch.zeros(4), torch.zeros(1)]]
    assert math.isclose(float(feature_matching_loss(*two)), (1.5 + 0.0) / 2)
    f = torch.zeros(2, 3, requires_grad=True)
    feature_matching_loss([[torch.ones(2, 3, requires_grad=True), torch.zeros(1)]], [[f, torch.zeros(1)]]).backward()
    assert f.grad is not None and float(f.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="intermediate features"):
        feature_matching_loss(torch.zeros(3), torch.zeros(3))


def test_perceptual_loss_maps_minus_one_one_and_trains_only_the_fake():
    loss = VGGPerceptualLoss("random")
    torch.manual_seed(0)
    real = torch.rand(1, 3, 32, 32) * 2 - 1
    fake = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_(True)
    value = loss(fake, real)
    f, r = loss.vgg((fake + 1) / 2), loss.vgg((real + 1) / 2)
    manual = sum(w * F.l1_loss(f[k], r[k]) for k, w in zip(loss.vgg.layers, loss.layer_weights))
    assert torch.allclose(value, manual) and float(value.detach()) > 0
    assert float(loss(real, real)) == 0.0
    value.backward()
    assert fake.grad is not None and all(p.grad is None for p in loss.parameters())


# --- the loop ------------------------------------------------------------------------------


def test_tiny_gan_learns_and_writes_grid_and_ema_weights(tmp_path):
    task = TinyTask()
    summary = train_gan(task, tiny_config(tmp_path, steps=40, val_every=20, log_every=20, ckpt_every=20), progress=False)
    history = __import__("json").loads((tmp_path / "history.json").read_text())
    assert [h["step"] for h in history] == [20, 40]
    assert history[1]["l1"] < history[0]["l1"] and history[1]["g"] < history[0]["g"]
    torch.manual_seed(3)  # the loop seeds with cfg.seed before building G: this is G at step 0
    assert l1_of(task.g) < 0.8 * l1_of(TinyTask().build_generator())
    grid = tmp_path / "samples" / "step_0000040.png"
    from PIL import Image

    assert Image.open(grid).size == (3 * 16, 4 * 16)  # condition | output | real, 4 rows
    # the EMA copy, not the raw G, is what is saved
    from safetensors.torch import load_file

    saved = load_file(summary["weights"])
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(saved[k], ckpt["ema"][k]) for k in saved)
    assert not all(torch.equal(saved[k], ckpt["model"][k]) for k in saved)
    assert ckpt["step"] == 40 and summary["world_size"] == 1
    assert any(k.endswith("_u") for k in saved)  # G's spectral-norm state travels with the EMA copy


def test_resume_continues_bit_identically(tmp_path):
    train_gan(TinyTask(), tiny_config(tmp_path / "whole", steps=8, ckpt_every=4), progress=False)
    train_gan(TinyTask(), tiny_config(tmp_path / "split", steps=4), progress=False)  # stops (checkpoint at 4)
    summary = train_gan(TinyTask(), tiny_config(tmp_path / "split", steps=8), progress=False)
    assert summary["resumed_from"] == 4
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)
    for key in ("model", "d", "ema"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    state_a, state_b = a["opt_d"]["state"], b["opt_d"]["state"]
    assert all(torch.equal(state_a[i]["exp_avg"], state_b[i]["exp_avg"]) for i in state_a)
    wider = TinyTask()
    wider.build_discriminator = lambda: MultiscaleDiscriminator(CLASSES + 3, width=16, layers=2, scales=2)
    with pytest.raises(ValueError, match="does not fit these models"):
        train_gan(wider, tiny_config(tmp_path / "split", steps=9), progress=False)
    other = tiny_config(tmp_path / "split", steps=9)
    TinyTask.name = "other"
    try:
        with pytest.raises(ValueError, match="choose another --out"):
            train_gan(TinyTask(), other, progress=False)
    finally:
        TinyTask.name = "tiny"


def test_config_and_data_errors_name_the_field(tmp_path):
    with pytest.raises(OptionError, match="lr_g"):
        read_options(GANConfig, {"lr_g": -1})
    with pytest.raises(OptionError, match="amp"):
        read_options(GANConfig, {"amp": "fp8"})
    with pytest.raises(ValueError, match="fewer than batch 8"):
        train_gan(TinyTask(n=5), tiny_config(tmp_path), progress=False)


DDP_SCRIPT = """
import os, sys, torch
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_gan import TinyTask, tiny_config
from impasto.train.loops.gan import train_gan
torch.set_num_threads(1)
rank = int(os.environ["RANK"])
out = Path({base!r}) / f"rank{{rank}}"  # per-rank folders: rank 1's must stay empty
task = TinyTask()
summary = train_gan(task, tiny_config(out, steps=4, batch=4, val_every=2), progress=False)
assert summary["world_size"] == 2, summary
torch.save(task.g.state_dict(), Path({base!r}) / f"g{{rank}}.pt")
"""


def test_torchrun_two_cpu_processes_stay_in_sync(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT.format(tests=str(Path(__file__).parent), base=str(tmp_path))))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)],
                          capture_output=True, text=True, timeout=180, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    g0, g1 = (torch.load(tmp_path / f"g{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(g0[k], g1[k]) for k in g0)  # different data shards and noise: equal only through all-reduce
    assert (tmp_path / "rank0" / "checkpoint.pt").is_file()
    assert (tmp_path / "rank0" / "samples" / "step_0000002.png").is_file()
    assert not (tmp_path / "rank1").exists() or not any((tmp_path / "rank1").iterdir())
    ckpt = torch.load(tmp_path / "rank0" / "checkpoint.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])  # each process its own noise
    fresh = TinyTask().build_generator()
    assert not all(torch.equal(v, g0[k]) for k, v in fresh.state_dict().items())


# --- evaluation ----------------------------------------------------------------------------


def test_frechet_distance_closed_form_and_identity():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    a, b = np.array([1.0, 2.0, 0.5, 3.0]), np.array([4.0, 0.5, 0.5, 1.0])
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    mu1, mu2 = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, 3.0])
    expect = float(((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum())  # commuting covariances
    assert math.isclose(frechet_distance(mu1, s1, mu2, s2), expect, rel_tol=1e-9)
    assert frechet_distance(mu1, s1, mu1, s1) < 1e-9
    x = rng.multivariate_normal(mu1, s1, size=20_000)
    y = rng.multivariate_normal(mu2, s2, size=20_000)
    assert frechet_distance_of_features(x, x) < 1e-9
    assert abs(frechet_distance_of_features(x, y) - expect) < 0.05 * expect
    mu, sigma = feature_statistics(torch.from_numpy(x))
    assert np.allclose(mu, mu1, atol=0.05) and np.allclose(sigma, s1, atol=0.1)
    with pytest.raises(ValueError, match="N >= 2"):
        feature_statistics(np.zeros((1, 4)))


def test_image_frechet_distance_is_labelled_by_its_features(tmp_path):
    from safetensors.torch import save_file

    from impasto.train.models.vgg import vgg19_features

    torch.manual_seed(0)
    real, fake = torch.rand(6, 3, 32, 32) * 2 - 1, torch.rand(6, 3, 32, 32) * 0.5
    same = image_frechet_distance(real, real, features="random")
    assert same.features == "FD-VGG19-random" and same.value < 1e-6 and same.n_real == 6
    assert image_frechet_distance(real, fake, features="random").value > 0
    # a local VGG-19 file (IMPASTO_VGG_WEIGHTS' route), with no Inception here: FD-VGG19, never FID
    net = vgg19_features(("relu5_1",), features="random")
    path = tmp_path / "vgg.safetensors"
    save_file({k: v.half().contiguous() for k, v in net.features.state_dict().items()}, str(path))
    result = image_frechet_distance(real.split(3), fake.split(3), features="auto", weights=str(path))
    if inception_weights() is None:
        assert result.features == "FD-VGG19" and result.value > 0
        with pytest.raises(ValueError, match="Inception"):
            image_frechet_distance(real, fake, features="inception")


def test_miou_and_pixel_accuracy_with_ignore_index():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 1]])
    cm = confusion_matrix(pred, target, num_classes=4)
    assert int(cm.sum()) == 6  # the two ignored pixels are not counted
    scores = segmentation_scores(cm)
    assert scores.iou[:3] == pytest.approx([1 / 3, 2 / 3, 1 / 2]) and math.isnan(scores.iou[3])  # class 3 absent
    assert scores.miou == pytest.approx(0.5) and scores.pixel_accuracy == pytest.approx(4 / 6)
    acc = ConfusionMatrix(4)
    acc.update(pred, target)
    acc.update(pred, target)
    assert acc.scores().miou == pytest.approx(0.5) and int(acc.matrix.sum()) == 12
    with pytest.raises(ValueError, match="prediction holds class 7"):
        confusion_matrix(torch.tensor([7]), torch.tensor([0]), num_classes=4)
