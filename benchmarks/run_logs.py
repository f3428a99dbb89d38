"""Reading training run folders in benchmark scripts: the evaluation curve and the training time."""

from __future__ import annotations

import json
from pathlib import Path


def curve(folder: Path) -> list[dict]:
    """The run's metrics.jsonl, one entry per step (the last line for a step wins after a resume)."""
    by_step: dict[int, dict] = {}
    for line in (folder / "metrics.jsonl").read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            by_step[int(entry["step"])] = entry
    return [by_step[s] for s in sorted(by_step)]


def train_seconds(history: Path) -> float | None:
    """Training seconds recorded in a run's history.json (they add up over resumes), if it is there."""
    if not history.is_file():
        return None
    entries = json.loads(history.read_text())
    return round(entries[-1]["seconds"], 1) if entries else None
