"""Dynamic batching: requests for one model wait up to ``max_delay`` to share a backend run.

Requests whose non-batch shapes agree are concatenated along the batch axis up to
``max_batch`` items, run once, and split back. A request whose caller has gone (deadline or
cancel) before its batch runs is dropped. Runs of one model are serialised on one thread,
the backends' own thread pools doing the parallel work.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from impasto.runtime.backends.base import Backend


@dataclass
class _Item:
    inputs: dict[str, np.ndarray]
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def n(self) -> int:
        return next(iter(self.inputs.values())).shape[0]

    def key(self) -> tuple:
        return tuple((k, v.shape[1:], v.dtype.str) for k, v in sorted(self.inputs.items()))


@dataclass
class BatchStats:
    runs: int = 0
    items: int = 0
    run_seconds: float = 0.0
    queue_seconds: float = 0.0
    failures: int = 0


class DynamicBatcher:
    def __init__(self, backend: Backend, max_batch: int, max_delay_s: float, enabled: bool = True, observe=None):
        self.backend = backend
        self.max_batch = max(1, max_batch)
        self.max_delay = max(0.0, max_delay_s)
        self.enabled = enabled and self.max_batch > 1
        self.observe = observe or (lambda queued, size: None)  # metrics hook: (seconds queued, batch size)
        self.stats = BatchStats()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infer-{backend.model.name}")
        self.queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._task: asyncio.Task | None = None

    async def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Checked inputs (see ``Backend.check``) -> outputs, possibly batched with other requests."""
        loop = asyncio.get_running_loop()
        if not self.enabled:
            return (await self._execute([_Item(inputs, loop.create_future())]))[0]
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=f"batcher-{self.backend.model.name}")
        item = _Item(inputs, loop.create_future())
        await self.queue.put(item)
        return await item.future

    async def _loop(self) -> None:
        carry: _Item | None = None
        while True:
            first = carry or await self.queue.get()
            carry = None
            batch, size = [first], first.n
            deadline = first.enqueued + self.max_delay
            while size < self.max_batch:
                timeout = deadline - time.perf_counter()
                if timeout <= 0 and self.queue.empty():
                    break
                try:
                    item = self.queue.get_nowait() if timeout <= 0 else await asyncio.wait_for(self.queue.get(), timeout)
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
                if item.key() != first.key() or size + item.n > self.max_batch:
                    carry = item
                    break
                batch.append(item)
                size += item.n
            live = [i for i in batch if not i.future.done()]  # callers gone (deadline, cancel): skip
            if live:
                try:
                    outputs = await self._execute(live)
                except Exception as e:  # report to every caller of the batch
                    for i in live:
                        if not i.future.done():
                            i.future.set_exception(e)
                    continue
                for i, out in zip(live, outputs):
                    if not i.future.done():
                        i.future.set_result(out)

    async def _execute(self, items: list[_Item]) -> list[dict[str, np.ndarray]]:
        now = time.perf_counter()
        queued = [now - i.enqueued for i in items]
        names = list(items[0].inputs)
        joined = items[0].inputs if len(items) == 1 else {n: np.concatenate([i.inputs[n] for i in items]) for n in names}
        size = sum(i.n for i in items)
        loop = asyncio.get_running_loop()
        try:
            outputs = await loop.run_in_executor(self.executor, self.backend._run, joined)
        except Exception:
            self.stats.failures += len(items)
            raise
        ran = time.perf_counter() - now
        self.stats.runs += 1
        self.stats.items += size
        self.stats.run_seconds += ran
        self.stats.queue_seconds += sum(queued)
        for q in queued:
            self.observe(q, size)
        results, start = [], 0
        for i in items:
            results.append({k: v[start : start + i.n] for k, v in outputs.items()})
            start += i.n
        return results

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
        self.executor.shutdown(wait=False)
