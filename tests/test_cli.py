"""The ``impasto`` command line, run as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image


def impasto(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "impasto.runtime.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def test_help_explains_every_subcommand():
    out = impasto("--help").stdout
    for cmd in ("demo", "brushes", "train"):
        assert cmd in out
    train = impasto("train", "renderer", "--help").stdout
    assert "--brush" in train and "resumes" in train


def test_brushes_json_lists_layouts_and_shipped_renderers():
    res = impasto("brushes", "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["tape"]["fields"] == ["xc", "yc", "w", "h", "theta", "R", "G", "B", "A"]
    assert info["oil"]["shape_fields"] == ["xc", "yc", "w", "h", "theta"]
    for b in info:
        metrics = info[b]["renderer"]
        assert (metrics["psnr_fg"] + metrics["psnr_alpha"]) / 2 >= 25, b


def test_demo_writes_engine_and_renderer_side_by_side(tmp_path):
    out = tmp_path / "demo.png"
    res = impasto("demo", "-o", str(out), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["missing_renderers"] == []
    img = np.asarray(Image.open(out).convert("RGB")).astype(float) / 255
    assert img.shape == (4 * 132, 2 * 128 + 4, 3)
    # each row: both tiles hold strokes, and the neural tile is far closer to the engine's
    # than an empty canvas is (measured: 0.03-0.07 mean error against 0.17-0.28)
    for row in range(4):
        exact = img[row * 132 : row * 132 + 128, :128]
        neural = img[row * 132 : row * 132 + 128, 132:]
        assert (exact < 0.95).mean() > 0.05
        assert np.abs(exact - neural).mean() < 0.4 * np.abs(exact - 1.0).mean()


@pytest.mark.parametrize(
    "args,message",
    [
        (("train", "renderer", "--brush", "crayon"), "unknown brush 'crayon'"),
        (("train", "renderer", "--brush", "oil", "--arch", "vae"), "--arch 'vae' is unknown"),
        (("train", "renderer", "--brush", "oil", "--steps", "0"), "--steps must be at least 1"),
        (("demo", "-o", "x.png", "--strokes", "0"), "--strokes must be at least 1"),
        (("demo", "-o", "no/such/folder/x.png"), "output folder does not exist"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, message, tmp_path):
    res = impasto(*args, cwd=tmp_path)
    assert res.returncode == 2
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # nothing written half-way


def test_settings_come_from_flags_then_environment_then_toml(tmp_path, monkeypatch):
    from impasto.runtime.config import ConfigError, load_settings

    cfg = tmp_path / "impasto.toml"
    cfg.write_text('device = "cpu"\nthreads = 3\n')
    monkeypatch.setenv("IMPASTO_CONFIG", str(cfg))
    assert load_settings().device == "cpu" and load_settings().threads == 3
    monkeypatch.setenv("IMPASTO_THREADS", "5")
    assert load_settings().threads == 5
    assert load_settings({"threads": 7, "device": None}).threads == 7
    cfg.write_text('colour = "red"\n')
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        load_settings()
    cfg.write_text('threads = "many"\n')
    monkeypatch.delenv("IMPASTO_THREADS")
    with pytest.raises(ConfigError, match="'threads' must be int"):
        load_settings()
