"""Batches on a Ray cluster through Ray Data: one actor per worker, each with its TaskRunner.

``impasto batch SPEC --ray [ADDRESS]``: without an address a local Ray instance is started;
with one (``ray://host:10001`` or ``auto``) the tasks run on that cluster. Each actor gets a
GPU when the cluster has them. Inputs and outputs must be on storage all nodes share.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict

from impasto.runtime.batch.runner import TaskResult, TaskRunner
from impasto.runtime.batch.spec import Task


class _Worker:
    """A Ray Data actor: builds its runner once, then maps batches of tasks to results."""

    def __init__(self, spec_path: str, options: dict):
        self.runner = TaskRunner(spec_path, **options)

    def __call__(self, batch: dict) -> dict:
        results = [self.runner.run(Task(int(i), str(a), str(o), None if f is None or f < 0 else int(f)))
                   for i, a, o, f in zip(batch["index"], batch["input"], batch["output"], batch["frame"])]
        return {k: [asdict(r)[k] for r in results] for k in ("index", "output", "status", "seconds", "error")}


def run_ray(spec_path: str, tasks: list[Task], workers: int, options: dict, address: str | None = None) -> Iterator[TaskResult]:
    try:
        import ray
    except ImportError:
        raise RuntimeError("--ray needs Ray: pip install 'impasto[ray]' (ray[data])") from None
    if not ray.is_initialized():
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False, configure_logging=False)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    rows = [dict(asdict(t), frame=-1 if t.frame is None else t.frame) for t in tasks]
    dataset = ray.data.from_items(rows).map_batches(
        _Worker, fn_constructor_kwargs={"spec_path": spec_path, "options": options}, batch_size=1,
        concurrency=max(1, workers), num_gpus=gpus,
    )
    for row in dataset.iter_rows():
        yield TaskResult(int(row["index"]), str(row["output"]), str(row["status"]), float(row["seconds"]), str(row["error"]))
