"""What every training loop needs, defined once: device, seeding, checkpoints, schedules.

Each trainer (the renderer today; the GAN families next) builds on these so that the same
config gives the same numbers on every run, an interrupted run resumes exactly where its
last checkpoint stopped, and a checkpoint is never half-written or loaded unsafely.

- :func:`resolve_device` turns a user's ``auto``/``cpu``/``cuda:N`` into a torch device.
- :func:`seed_everything` seeds every random number generator a loop might touch.
- :func:`save_checkpoint` / :func:`load_checkpoint` / :func:`restore` write checkpoints
  atomically and read them back with ``torch.load(weights_only=True)`` (no pickled code).
- :func:`cosine_lr` / :func:`set_lr` are the learning-rate schedule, applied per step.
"""

from __future__ import annotations

import logging
import math
import os
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

__all__ = [
    "cosine_lr",
    "load_checkpoint",
    "resolve_device",
    "restore",
    "save_checkpoint",
    "seed_everything",
    "set_lr",
]


# --- device --------------------------------------------------------------------------------


def resolve_device(device: str) -> torch.device:
    """The torch device for a user's setting: ``auto`` is CUDA when available, else CPU.

    An explicit ``cuda``/``cuda:N`` on a machine without CUDA is an error here, up front,
    rather than a failure deep inside the first ``.to(device)``.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device '{device}' requested but CUDA is not available here")
    return torch.device(device)


# --- seeding -------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and every CUDA device), Python's ``random`` and NumPy's global generator.

    Loops call it once, before building the model, so that the initial weights (and anything
    else drawn from a global generator) are a function of the config alone. Training data
    should still come from its own seeded generators (see ``impasto.train.data``), so that a
    resumed run draws the same batches as an uninterrupted one.
    """
    torch.manual_seed(seed)  # also seeds every CUDA device
    random.seed(seed)
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency, but the loops do not need it
        return
    np.random.seed(seed % (1 << 32))


# --- checkpoints ---------------------------------------------------------------------------


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    **extra: Any,
) -> Path:
    """Write model and optimiser state, the step reached and ``extra`` entries to ``path``, atomically.

    The checkpoint is written to a temporary file in the same folder and then renamed over
    ``path``, so a process killed mid-write leaves the previous checkpoint intact, never a
    truncated one. ``extra`` values (config, history, ...) must be plain data (dicts, lists,
    numbers, strings, tensors) so that :func:`load_checkpoint` can read them with
    ``weights_only=True``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": int(step), **extra}
    fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.debug("checkpoint at step %d written to %s", step, path)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The checkpoint at ``path`` as written by :func:`save_checkpoint`, or None when there is none.

    Read with ``torch.load(weights_only=True)``: a checkpoint can only hold tensors and plain
    data, never code that runs on load. Tensors are mapped onto ``map_location``.
    """
    path = Path(path)
    if not path.exists():
        return None
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or not {"model", "optimizer", "step"} <= set(ckpt):
        raise ValueError(f"{path} is not a training checkpoint (no model, optimizer and step)")
    return ckpt


def restore(ckpt: Mapping[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Load a checkpoint's model and optimiser state in place; returns the step to continue from."""
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    return int(ckpt["step"])


# --- learning-rate schedules ---------------------------------------------------------------


def cosine_lr(step: int, total: int, peak: float, floor: float) -> float:
    """Cosine decay from ``peak`` at step 0 to ``floor`` at ``total`` (and after).

    A pure function of the step, so a resumed run recomputes exactly the rate it would have
    had (no scheduler state to save).
    """
    progress = min(step / max(total, 1), 1.0)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group of ``optimizer``."""
    for group in optimizer.param_groups:
        group["lr"] = lr


class RunningMeans:
    """Sums of a training loop's logged terms since the last report, kept on the device (no sync per step),
    and the report every loop gives: the means on the progress bar, or a log line where there is none, and a
    warning when a mean is not finite."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor | float] = {}
        self.count = 0

    def add(self, logs: Mapping[str, torch.Tensor | float]) -> None:
        for k, v in logs.items():
            v = v.detach().float() if isinstance(v, torch.Tensor) else float(v)
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def means(self) -> dict[str, float]:
        return {k: float(v) / max(self.count, 1) for k, v in self.sums.items()}

    def report(self, name: str, step: int, steps: int, bar: Any, show: bool, seconds: float,
               logger: logging.Logger = log) -> dict[str, float]:
        """Show the means (``bar``'s postfix, else a line on the loop's ``logger`` when ``show``); warn if one is
        not finite."""
        means = self.means()
        text = " ".join(f"{k}={v:.4g}" for k, v in means.items())
        if bar is not None:
            bar.set_postfix_str(text)
        elif show:
            logger.info("%s step %d/%d %s (%.1f s)", name, step, steps, text, seconds)
        if not all(math.isfinite(v) for v in means.values()):
            logger.warning("%s: non-finite loss in the %d steps before step %d", name, self.count, step)
        return means
