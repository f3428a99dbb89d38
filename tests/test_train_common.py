"""The common training module (device, seeding, checkpoints, schedules) and the trainer registry."""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from impasto.train.brushes import BRUSHES
from impasto.train.loops.common import (
    cosine_lr,
    load_checkpoint,
    resolve_device,
    restore,
    save_checkpoint,
    seed_everything,
    set_lr,
)
from impasto.train.loops.registry import Trainer, UnknownTrainerError, get_trainer, list_trainers, register_trainer
from impasto.train.loops.renderer import TrainConfig
from impasto.train.models.renderer import ARCHITECTURES
from impasto.train.options import OptionError, option, options_of, read_options

# --- a tiny loop built from the common pieces ---------------------------------------------------


def _tiny_model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))


def _train(ckpt: Path, steps: int, *, stop_after: int | None = None) -> nn.Module:
    """A few Adam steps with cosine decay, checkpointing every step; resumes from ``ckpt`` when it exists."""
    seed_everything(11)
    model = _tiny_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    start = 0
    saved = load_checkpoint(ckpt)
    if saved is not None:
        start = restore(saved, model, opt)
    for step in range(start, steps):
        set_lr(opt, cosine_lr(step, steps, 1e-2, 1e-4))
        g = torch.Generator().manual_seed(1000 + step)  # data depends on the step only
        x, y = torch.randn(16, 4, generator=g), torch.randn(16, 2, generator=g)
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        save_checkpoint(ckpt, model=model, optimizer=opt, step=step + 1, config={"steps": steps})
        if stop_after is not None and step + 1 == stop_after:
            break
    return model


def test_checkpoint_round_trip_restores_model_optimiser_and_step(tmp_path):
    model = _train(tmp_path / "a.pt", steps=2)
    ckpt = load_checkpoint(tmp_path / "a.pt")
    assert ckpt is not None and ckpt["step"] == 2 and ckpt["config"] == {"steps": 2}

    fresh = _tiny_model()
    opt = torch.optim.Adam(fresh.parameters(), lr=1.0)
    assert not all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    assert restore(ckpt, fresh, opt) == 2
    for (ka, va), (kb, vb) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    state = opt.state_dict()
    assert state["param_groups"][0]["lr"] == pytest.approx(cosine_lr(1, 2, 1e-2, 1e-4))  # the rate of the last step
    moments = [s["exp_avg"] for s in state["state"].values()]
    assert len(moments) == 4 and all(float(m.abs().sum()) > 0 for m in moments)  # Adam's moments came back
    assert all(int(s["step"]) == 2 for s in state["state"].values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]  # no temporary file left behind


def test_no_checkpoint_is_none_and_a_foreign_file_is_refused(tmp_path):
    assert load_checkpoint(tmp_path / "missing.pt") is None
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


class _Payload:
    """Not plain data: a pickle that would run code on load."""


def test_checkpoints_load_weights_only(tmp_path):
    torch.save({"model": {}, "optimizer": {}, "step": 1, "evil": _Payload()}, tmp_path / "x.pt")
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        load_checkpoint(tmp_path / "x.pt")


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path):
    path = tmp_path / "c.pt"
    model = _tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    save_checkpoint(path, model=model, optimizer=opt, step=1)
    with pytest.raises(Exception):
        save_checkpoint(path, model=model, optimizer=opt, step=2, note=lambda: None)  # lambdas do not pickle
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    whole = _train(tmp_path / "whole.pt", steps=3)
    _train(tmp_path / "split.pt", steps=3, stop_after=1)  # as if killed after the first checkpoint
    assert load_checkpoint(tmp_path / "split.pt")["step"] == 1
    resumed = _train(tmp_path / "split.pt", steps=3)
    for (ka, va), (kb, vb) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    # and the comparison can fail: a restart that forgets the optimiser's state ends elsewhere
    (tmp_path / "split.pt").unlink()
    _train(tmp_path / "split.pt", steps=3, stop_after=1)
    ckpt = load_checkpoint(tmp_path / "split.pt")
    ckpt["optimizer"] = torch.optim.Adam(_tiny_model().parameters(), lr=1e-2).state_dict()
    torch.save(ckpt, tmp_path / "split.pt")
    forgetful = _train(tmp_path / "split.pt", steps=3)
    assert not all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), forgetful.state_dict().values()))


def test_cosine_schedule_runs_from_peak_to_floor():
    assert cosine_lr(0, 100, 1e-3, 2e-5) == pytest.approx(1e-3)
    assert cosine_lr(100, 100, 1e-3, 2e-5) == pytest.approx(2e-5)
    assert cosine_lr(250, 100, 1e-3, 2e-5) == pytest.approx(2e-5)  # past the end: the floor
    assert cosine_lr(50, 100, 1e-3, 2e-5) == pytest.approx((1e-3 + 2e-5) / 2)
    rates = [cosine_lr(s, 100, 1e-3, 2e-5) for s in range(101)]
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert cosine_lr(0, 0, 1.0, 0.0) == pytest.approx(1.0) and math.isfinite(cosine_lr(5, 0, 1.0, 0.0))
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))], lr=1.0)
    opt.add_param_group({"params": [nn.Parameter(torch.zeros(1))]})
    set_lr(opt, 0.25)
    assert [g["lr"] for g in opt.param_groups] == [0.25, 0.25]


def test_seeding_makes_torch_python_and_numpy_repeat():
    def draw() -> tuple:
        return torch.rand(3).tolist(), random.random(), float(np.random.rand())

    seed_everything(123)
    first = draw()
    seed_everything(123)
    assert draw() == first
    seed_everything(124)
    assert draw() != first
    seed_everything(123)
    a = _tiny_model()
    seed_everything(123)
    b = _tiny_model()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")
    from impasto.train.loops import renderer

    assert renderer.resolve_device is resolve_device  # the old import path still works


# --- the trainer registry and the renderer trainer's options -------------------------------------


def test_registry_lists_the_renderer_and_its_options():
    assert "renderer" in [t.name for t in list_trainers()]
    trainer = get_trainer("renderer")
    assert trainer.config is TrainConfig and trainer.help and "resumes" in trainer.description
    specs = {s.name: s for s in options_of(trainer.config)}
    assert list(specs) == ["brush", "arch", "steps", "batch", "lr", "val_every", "val_size", "seed", "schedule",
                           "out", "device", "threads"]
    assert "min_lr" not in specs  # internal
    assert specs["brush"].default == "oil" and "oil" in specs["brush"].choice_list
    assert specs["brush"].choice_list == tuple(BRUSHES)
    assert specs["arch"].default == "dual" and specs["arch"].choice_list == tuple(ARCHITECTURES)
    assert (specs["steps"].default, specs["steps"].type, specs["steps"].min) == (20_000, int, 1)
    assert specs["lr"].type is float and specs["lr"].min > 0
    assert specs["schedule"].default == "32:0.6,64:0.3,128:0.1"
    assert specs["val_every"].cli_flag() == "--val-every"
    with pytest.raises(UnknownTrainerError, match="unknown trainer 'gan'.*renderer"):
        get_trainer("gan")


def test_registering_checks_the_declaration():
    @dataclasses.dataclass
    class Good:
        steps: int = option(3, "steps", min=1)

    @dataclasses.dataclass
    class BadType:
        size: tuple = option((1, 2), "a tuple is no option")

    def run(cfg, show_progress: bool) -> dict:
        return {"steps": cfg.steps}

    with pytest.raises(TypeError, match="int, float, str or bool"):
        register_trainer(Trainer("bad-type", "h", "d", BadType, run))
    with pytest.raises(TypeError, match="dataclass"):
        register_trainer(Trainer("not-dc", "h", "d", dict, run))
    with pytest.raises(ValueError, match="trainer name"):
        register_trainer(Trainer("Bad Name", "h", "d", Good, run))
    with pytest.raises(ValueError, match="already registered"):
        register_trainer(Trainer("renderer", "h", "d", Good, run))
    assert get_trainer("renderer").config is TrainConfig


def test_options_are_checked_with_the_field_names():
    with pytest.raises(OptionError, match="steps must be at least 1"):
        read_options(TrainConfig, {"steps": 0})
    with pytest.raises(OptionError, match="arch 'vae' is not one of"):
        read_options(TrainConfig, {"arch": "vae"})
    with pytest.raises(OptionError, match="brush 'crayon' is not one of oil"):
        read_options(TrainConfig, {"brush": "crayon"})
    with pytest.raises(OptionError, match="lr must be between"):
        read_options(TrainConfig, {"lr": 0})
    cfg = read_options(TrainConfig, {"brush": "tape", "steps": "40", "schedule": "16:0.5,64:0.25"})
    assert (cfg.brush, cfg.steps, cfg.schedule_pairs()) == ("tape", 40, ((16, 0.5), (64, 0.25)))
    assert [cfg.resolution_at(s, True) for s in (0, 19, 20, 29, 30, 39)] == [16, 16, 64, 64, 128, 128]
    assert cfg.resolution_at(0, False) == 128 and cfg.batch_at(16) == 8 * cfg.batch
    assert cfg.run_folder() == Path("runs/renderer-dual-tape")
    assert TrainConfig(schedule=((32, 0.6), (64, 0.3), (128, 0.1))).schedule == "32:0.6,64:0.3,128:0.1"


@pytest.mark.parametrize("text", ["32:0.6,64:0.6", "48:0.5", "32-0.5", "32:0", "32:-0.2", "", "32:0.5,"])
def test_a_bad_schedule_is_an_option_error(text):
    with pytest.raises(OptionError, match="schedule"):
        read_options(TrainConfig, {"schedule": text})


def test_the_renderer_trainer_runs_and_reports(tmp_path):
    trainer = get_trainer("renderer")
    cfg = read_options(trainer.config, {"brush": "tape", "steps": 2, "batch": 2, "val_every": 1, "val_size": 4,
                                        "schedule": "16:0.5", "out": str(tmp_path), "device": "cpu"})
    summary = trainer.run(cfg, False)
    assert set(summary) == {"weights", "steps", "psnr_fg", "psnr_alpha", "psnr"}
    assert summary["steps"] == 2 and Path(summary["weights"]) == tmp_path / "renderer_tape.safetensors"
    assert Path(summary["weights"]).is_file() and (tmp_path / "checkpoint.pt").is_file()
    assert summary["psnr"] == round(summary["psnr"], 3) > 0
    assert load_checkpoint(tmp_path / "checkpoint.pt")["config"]["schedule"] == "16:0.5"
