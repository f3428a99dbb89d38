"""Local worker processes: each loads a :class:`TaskRunner` once and runs many tasks."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator

from impasto.runtime.batch.runner import TaskResult, TaskRunner
from impasto.runtime.batch.spec import Task

_runner: TaskRunner | None = None


def _init(spec_path: str, options: dict) -> None:
    global _runner
    _runner = TaskRunner(spec_path, **options)


def _run(task: Task) -> TaskResult:
    return _runner.run(task)


def run_pool(spec_path: str, tasks: list[Task], workers: int, options: dict,
             on_result: Callable[[TaskResult], None] | None = None) -> Iterator[TaskResult]:
    """Results as tasks finish, from ``workers`` processes (1: in this process)."""
    if workers <= 1:
        runner = TaskRunner(spec_path, **options)
        for task in tasks:
            yield runner.run(task)
        return
    context = multiprocessing.get_context("spawn")  # torch and threads do not survive fork
    with context.Pool(workers, initializer=_init, initargs=(spec_path, options)) as pool:
        yield from pool.imap_unordered(_run, tasks)
