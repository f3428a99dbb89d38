"""`impasto train warp` on a tiny generated photo set: steps, scores, weights, exact resume, torchrun, evaluation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from impasto.train.data.warp import build_warp_dataset
from impasto.train.eval.warp import dis_flow, evaluate_warp, real_pairs
from impasto.train.loops.warp import WarpTrainConfig, train_warp
from impasto.train.losses.warp import endpoint_error
from impasto.train.options import OptionError
from PIL import Image, ImageDraw
from torch.utils.data import Dataset


def _tiny_set(root: Path, n: int = 12) -> Path:
    """Random coloured shapes: detail everywhere for the features to match."""
    rng = np.random.default_rng(0)
    (root / "photos").mkdir(parents=True)
    for i in range(n):
        im = Image.new("RGB", (48, 48), tuple(int(v) for v in rng.integers(0, 255, 3)))
        draw = ImageDraw.Draw(im)
        for _ in range(25):
            (x, y), r = (int(v) for v in rng.integers(0, 48, 2)), int(rng.integers(2, 8))
            draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        im.save(root / "photos" / f"p{i}.png")
    (root / "splits.json").write_text(json.dumps({"train": [f"p{i}" for i in range(8)],
                                                  "val": [f"p{i}" for i in range(8, n)]}))
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return _tiny_set(tmp_path_factory.mktemp("warp") / "data")


def _config(data: Path, out: Path, **kw) -> WarpTrainConfig:
    base = {"data": str(data), "side": 32, "width": 8, "iterations": 2, "window": 3, "features": "random", "batch": 4,
            "steps": 4, "val_every": 2, "ckpt_every": 2, "log_every": 2, "val_items": 4, "out": str(out),
            "device": "cpu", "threads": 1}
    return WarpTrainConfig(**{**base, **kw})


def _estimator_state(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint.pt", weights_only=True)["model"]


class _Interrupted(Dataset):
    """The training pairs until ``limit`` have been read, then an error: a run killed mid-way."""

    def __init__(self, data: Dataset, limit: int):
        self.data, self.limit, self.read = data, limit, 0

    def __len__(self) -> int:
        return len(self.data)

    def set_epoch(self, epoch: int) -> None:
        self.data.set_epoch(epoch)

    def __getitem__(self, i: int) -> dict:
        self.read += 1
        if self.read > self.limit:
            raise RuntimeError("interrupted")
        return self.data[i]


def test_training_writes_weights_and_scores(data, tmp_path):
    from impasto.train.models.weights_io import load_warp, read_warp_metadata

    summary = train_warp(_config(data, tmp_path / "a", evaluate=True), progress=False)
    estimator, config = load_warp(summary["weights"])
    assert (config.side, config.grid, config.width, config.iterations, config.window) == (32, 4, 8, 2, 3)
    flows = estimator(torch.randn(1, 512, 4, 4), torch.randn(1, 512, 4, 4))
    assert len(flows) == 2 and flows[-1].shape == (1, 2, 4, 4)
    _, meta = read_warp_metadata(summary["weights"])
    assert meta["vgg"] == "random" and meta["data"] == str(data) and meta["metrics"]["steps"] == 4
    lines = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 4]
    for key in ("epe_model", "epe_identity", "epe_dis", "pck05_model", "pck10_dis", "objective_model",
                "real_objective_model", "real_objective_identity"):
        assert key in lines[-1] and np.isfinite(lines[-1][key]), key
        assert meta["metrics"][key] == pytest.approx(lines[-1][key], abs=1e-4)
    assert lines[-1]["n_synthetic"] == 4 and lines[-1]["n_real"] == 4
    assert (tmp_path / "a" / "samples" / "step_0000004.png").is_file()
    assert summary["epe_identity"] > 0 and "objective" in summary and "smooth" in summary
    more = train_warp(_config(data, tmp_path / "a", steps=6), progress=False)  # more steps in the same folder
    assert more["resumed_from"] == 4 and more["steps"] == 6


def test_a_killed_run_resumes_where_an_uninterrupted_one_would_be(data, tmp_path):
    cfg = _config(data, tmp_path / "a", steps=6, ckpt_every=4)
    train, val = (build_warp_dataset(data, split, 32, artistic_p=cfg.artistic, kind=cfg.flows) for split in
                  ("train", "val"))
    with pytest.raises(RuntimeError, match="interrupted"):
        train_warp(cfg, train=_Interrupted(train, 4 * 4), val=val, progress=False)  # dies reading step 5
    assert torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["step"] == 4
    resumed = train_warp(cfg, progress=False)
    assert resumed["resumed_from"] == 4
    straight = train_warp(_config(data, tmp_path / "b", steps=6, ckpt_every=4), progress=False)
    assert straight["resumed_from"] == 0
    a, b = _estimator_state(tmp_path / "a"), _estimator_state(tmp_path / "b")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    fresh = build_warper_state(cfg)
    assert not all(torch.equal(a[k], fresh[k]) for k in a)  # it trains


def build_warper_state(cfg: WarpTrainConfig) -> dict[str, torch.Tensor]:
    from impasto.train.models.warper import build_estimator

    torch.manual_seed(cfg.seed)
    return build_estimator(cfg.model_config()).state_dict()


def test_supervised_term_is_logged_and_lowers_the_error(data, tmp_path):
    summary = train_warp(_config(data, tmp_path / "s", steps=40, supervised=1.0, lr=3e-3, val_every=40,
                                 ckpt_every=40, iterations=1, width=16), progress=False)
    assert "epe" in summary
    assert summary["epe_model"] < summary["epe_identity"]  # learns something in 40 steps


def test_an_untrained_warper_is_the_identity_and_dis_follows_a_shift(data):
    from impasto.train.models.warper import WarpConfig, build_warper

    val = build_warp_dataset(data, "val", 32, kind="affine")
    warper = build_warper(WarpConfig(side=32, width=8, iterations=2, window=3), features="random")
    scores = evaluate_warp(warper, val, real_pairs(val, 3), batch=2)
    assert scores["epe_model"] == pytest.approx(scores["epe_identity"], abs=1e-5)
    assert scores["objective_model"] == pytest.approx(scores["objective_identity"], abs=1e-5)
    assert scores["n_synthetic"] == 4 and scores["n_real"] == 3 and "real_objective_dis" in scores
    assert evaluate_warp(warper, val, limit=2, dis=False).keys().isdisjoint({"epe_dis"})
    # a 3 px shift right and 2 px down of a textured picture: DIS finds it in the warper's convention
    picture = val.picture(0)[None].repeat(1, 1, 4, 4)  # 128 px of texture, DIS's comfort zone
    true = torch.zeros(1, 2, 128, 128)
    true[:, 0], true[:, 1] = 3 * 2 / 128, 2 * 2 / 128
    from impasto.train.data.warps import apply_flow

    exemplar = apply_flow(picture, true)
    found = dis_flow(picture, exemplar)
    inner = (slice(None), slice(None), slice(16, -16), slice(16, -16))
    assert float(endpoint_error(found[inner], true[inner], 96)) < 0.5
    assert float(endpoint_error(torch.zeros_like(true), true, 128)) == pytest.approx(np.hypot(3, 2), rel=1e-4)


def test_bad_options_are_named(data, tmp_path):
    with pytest.raises(OptionError, match="--data is required"):
        train_warp(WarpTrainConfig())
    with pytest.raises(OptionError, match="--side"):
        train_warp(_config(data, tmp_path / "x", side=36))
    train_warp(_config(data, tmp_path / "r", steps=1), progress=False)
    with pytest.raises(OptionError, match="choose another --out"):
        train_warp(_config(data, tmp_path / "r", steps=2, width=12), progress=False)
    run = subprocess.run([sys.executable, "-m", "impasto", "train", "warp", "--data", str(data), "--layer", "conv9",
                          "--out", str(tmp_path / "y")], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 2 and "--layer" in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert not (tmp_path / "y").exists()


DDP_SCRIPT = """
import os, sys, torch
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_warp_train import _config
from impasto.train.loops.warp import train_warp
torch.set_num_threads(1)
rank = int(os.environ["RANK"])
summary = train_warp(_config(Path({data!r}), Path({base!r}) / f"rank{{rank}}", steps=3, batch=2), progress=False)
assert summary["world_size"] == 2, summary
"""


def test_torchrun_two_cpu_processes_train_one_estimator(data, tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT.format(tests=str(Path(__file__).parent), data=str(data),
                                                        base=str(tmp_path))))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script)], capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "rank0" / "warp.safetensors").is_file() and (tmp_path / "rank0" / "checkpoint.pt").is_file()
    assert not (tmp_path / "rank1").exists() or not any((tmp_path / "rank1").iterdir())
    ckpt = torch.load(tmp_path / "rank0" / "checkpoint.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and ckpt["step"] == 3
    # the two processes' shards averaged: one process over the same global batch of 4 lands on the same weights
    single = train_warp(_config(data, tmp_path / "one", steps=3, batch=4), progress=False)
    assert single["world_size"] == 1
    a, b = ckpt["model"], _estimator_state(tmp_path / "one")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_endpoint_error_weights_score_only_the_known_pairs():
    torch.manual_seed(0)
    flow, true = torch.randn(3, 2, 4, 4, requires_grad=True), torch.randn(3, 2, 8, 8)
    with torch.no_grad():
        weighted = endpoint_error(flow, true, 16, torch.tensor([1.0, 0.0, 1.0]))
        assert float(weighted) == pytest.approx(float(endpoint_error(flow[[0, 2]], true[[0, 2]], 16)), rel=1e-5)
        assert float(endpoint_error(flow, true, 16, torch.ones(3))) == pytest.approx(
            float(endpoint_error(flow, true, 16)), rel=1e-5)
    none = endpoint_error(flow, true, 16, torch.zeros(3))
    none.backward()
    assert float(none.detach()) == 0.0 and not flow.grad.any()
    with pytest.raises(ValueError, match="weights must be"):
        endpoint_error(flow, true, 16, torch.ones(2))


def test_unrelated_pairs_train_without_the_known_flow_term(data, tmp_path):
    first = train_warp(_config(data, tmp_path / "a", steps=4, supervised=1.0, lr=3e-3), progress=False)
    assert first["epe"] > 0
    # every training pair unrelated: the known-flow term has nothing to score (0), the objective still trains,
    # and validation still scores synthetic pairs with their known flow (the val split has no unrelated pairs)
    summary = train_warp(_config(data, tmp_path / "u", steps=4, supervised=1.0, lr=3e-3, unrelated=1.0,
                                 init=first["weights"]), progress=False)
    assert summary["epe"] == 0.0 and summary["objective"] > 0
    assert summary["n_synthetic"] == 4 and summary["epe_identity"] > 0
    from impasto.train.models.weights_io import read_warp_metadata

    _, meta = read_warp_metadata(summary["weights"])
    assert "fine-tuned from" in meta["data"] and "1 of the pairs unrelated" in meta["data"]
    train = build_warp_dataset(data, "train", 32, unrelated=1.0)
    val = build_warp_dataset(data, "val", 32)
    warper = _warper_of(summary["weights"])
    assert evaluate_warp(warper, train, limit=4, dis=False)["n_synthetic"] == 0  # no known flow: not scored
    assert evaluate_warp(warper, val, limit=4, dis=False)["n_synthetic"] == 4


def _warper_of(path: str):
    from impasto.train.models.warper import Warper, build_features
    from impasto.train.models.weights_io import load_warp

    estimator, config = load_warp(path)
    return Warper(build_features(config, features="random"), estimator)


def test_init_starts_from_a_weights_file_or_a_checkpoint(data, tmp_path):
    from impasto.train.loops.warp import load_init
    from impasto.train.models.warper import build_estimator
    from impasto.train.models.weights_io import load_warp

    first = train_warp(_config(data, tmp_path / "a", steps=4, supervised=1.0, lr=3e-3), progress=False)
    stored, _ = load_warp(first["weights"])
    cfg = _config(data, tmp_path / "b")
    for source in (first["weights"], first["checkpoint"]):
        estimator = build_estimator(cfg.model_config())
        load_init(estimator, source)
        got = estimator.state_dict()
        assert all(torch.allclose(got[k], v, atol=2e-3) for k, v in stored.state_dict().items()), source
    # one step at a negligible learning rate from the file: the result is the file, not a fresh estimator
    tuned = train_warp(_config(data, tmp_path / "b", steps=1, lr=1e-9, init=first["weights"]), progress=False)
    after, fresh = _estimator_state(tmp_path / "b"), build_warper_state(cfg)
    assert all(torch.allclose(after[k], v, atol=2e-3) for k, v in stored.state_dict().items())
    assert not all(torch.allclose(after[k], fresh[k], atol=2e-3) for k in after)
    assert tuned["resumed_from"] == 0
    with pytest.raises(OptionError, match="--init .* no such file"):
        train_warp(_config(data, tmp_path / "c", init=str(tmp_path / "nope.safetensors")), progress=False)
    with pytest.raises(OptionError, match="--init .* does not fit"):
        train_warp(_config(data, tmp_path / "d", width=12, init=first["weights"]), progress=False)
