"""Sketch-to-image scores: the chamfer fidelity measure and the evaluator on a real (tiny) generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from impasto.train.eval.sketch import chamfer_distance, lines_of


def _line(h: int, w: int, row: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[row, 8 : w - 8] = True
    return m


def test_chamfer_is_zero_for_equal_masks_and_grows_with_the_offset():
    a = _line(64, 64, 20)
    assert chamfer_distance(a, a) == 0.0
    near, far = chamfer_distance(a, _line(64, 64, 22)), chamfer_distance(a, _line(64, 64, 30))
    assert near == pytest.approx(100 * 2 / 64, rel=0.05)  # two pixels apart everywhere: 2 px of 64
    assert far == pytest.approx(100 * 10 / 64, rel=0.05) and far > near
    assert chamfer_distance(a, _line(64, 64, 30)) == chamfer_distance(_line(64, 64, 30), a)  # symmetric


def test_chamfer_is_resolution_independent_and_handles_empty_masks():
    small = chamfer_distance(_line(64, 64, 20), _line(64, 64, 24))
    big = chamfer_distance(np.kron(_line(64, 64, 20), np.ones((2, 2), bool)),
                           np.kron(_line(64, 64, 24), np.ones((2, 2), bool)))
    assert big == pytest.approx(small, rel=0.15)
    empty = np.zeros((64, 64), bool)
    assert chamfer_distance(empty, empty) == 0.0
    assert chamfer_distance(_line(64, 64, 20), empty) == pytest.approx(100 * np.hypot(64, 64) / 64)
    with pytest.raises(ValueError, match="differ in size"):
        chamfer_distance(empty, np.zeros((32, 64), bool))


def test_lines_of_a_distance_input_are_where_it_is_zero():
    sketch = torch.ones(1, 8, 8)
    sketch[0, 3, 2:6] = 0
    assert lines_of(sketch).sum() == 4 and lines_of(sketch)[3, 2:6].all()
