"""Long quality runs (``pytest -m slow``): a full training run from scratch reaches the floor."""

from __future__ import annotations

import pytest

from impasto.train.loops.renderer import TrainConfig, train_renderer

pytestmark = pytest.mark.slow


def test_tape_renderer_trained_from_scratch_reaches_25_db(tmp_path):
    # about 15 minutes on 2 CPU cores; the shipped renderers were trained the same way
    result = train_renderer(TrainConfig(brush="tape", steps=2500, out=str(tmp_path)), progress=False)
    assert result.final.psnr >= 25.0, result.final
