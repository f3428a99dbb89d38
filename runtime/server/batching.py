"""Dynamic batching: requests for one model that are waiting together share one backend run.

Requests whose non-batch shapes agree are concatenated along the batch axis up to
``max_batch`` items, run once, and split back. Runs of one model are serialised on one
thread (the backends' own thread pools do the parallel work), so while a batch runs, the
requests that arrive meanwhile queue up and form the next batch: under concurrent load,
batches form by themselves.

A batch is dispatched as soon as nothing more can join it: when it is full, or when the queue
is empty and no request for the model is still being received (:meth:`DynamicBatcher.arriving`,
e.g. an HTTP body being read). Only while such a request is on its way does the batch wait
for it, and never longer than ``max_delay`` after its first request was queued. A lone
request therefore never waits out the queue delay. A request whose caller has gone (deadline
or cancel) before its batch runs is dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from impasto.runtime.backends.base import Backend
from impasto.runtime.server.kserve_stats import RequestTimer


@dataclass
class _Item:
    inputs: dict[str, np.ndarray]
    future: asyncio.Future
    timer: RequestTimer | None = None
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def n(self) -> int:
        return next(iter(self.inputs.values())).shape[0]

    def key(self) -> tuple:
        return tuple((k, v.shape[1:], v.dtype.str) for k, v in sorted(self.inputs.items()))


@dataclass
class BatchStats:
    """Backend runs of one model: how many, how many items, time, and runs by batch size."""

    runs: int = 0
    items: int = 0
    run_seconds: float = 0.0
    queue_seconds: float = 0.0
    failures: int = 0
    by_size: dict[int, list[int]] = field(default_factory=dict)  # size -> [runs, input ns, infer ns, output ns]


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
        self._arriving = 0
        self._changed: asyncio.Event | None = None  # set when an item is queued or an arrival ends

    @contextmanager
    def arriving(self) -> Iterator[None]:
        """Mark a request for this model as on its way (being received) for the ``with`` block.

        A forming batch waits for it (at most ``max_delay``) instead of leaving without it.
        """
        self._arriving += 1
        try:
            yield
        finally:
            self._arriving -= 1
            if self._changed is not None:
                self._changed.set()

    async def infer(self, inputs: dict[str, np.ndarray], timer: RequestTimer | None = None) -> dict[str, np.ndarray]:
        """Checked inputs (see ``Backend.check``) -> outputs, possibly batched with other requests.

        ``timer``, if given, gets the request's queue and compute times.
        """
        loop = asyncio.get_running_loop()
        item = _Item(inputs, loop.create_future(), timer)
        if not self.enabled:
            return (await self._execute([item]))[0]
        if self._task is None:
            self._changed = asyncio.Event()
            self._task = asyncio.create_task(self._loop(), name=f"batcher-{self.backend.model.name}")
        self.queue.put_nowait(item)
        self._changed.set()
        return await item.future

    async def _next_item(self, deadline: float) -> _Item | None:
        """The next queued item; waits only while a request is still arriving, and not past ``deadline``."""
        while True:
            if not self.queue.empty():
                return self.queue.get_nowait()
            timeout = deadline - time.perf_counter()
            if self._arriving == 0 or timeout <= 0:
                return None
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except asyncio.TimeoutError:
                return None if self.queue.empty() else self.queue.get_nowait()

    async def _loop(self) -> None:
        carry: _Item | None = None
        while True:
            first = carry or await self.queue.get()
            carry = None
            batch, size = [first], first.n
            deadline = first.enqueued + self.max_delay
            while size < self.max_batch:
                item = await self._next_item(deadline)
                if item is None:
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
        t0 = time.perf_counter_ns()
        now = time.perf_counter()
        queued = [now - i.enqueued for i in items]
        names = list(items[0].inputs)
        joined = items[0].inputs if len(items) == 1 else {n: np.concatenate([i.inputs[n] for i in items]) for n in names}
        size = sum(i.n for i in items)
        t1 = time.perf_counter_ns()
        loop = asyncio.get_running_loop()
        try:
            outputs = await loop.run_in_executor(self.executor, self.backend._run, joined)
        except Exception:
            self.stats.failures += len(items)
            raise
        t2 = time.perf_counter_ns()
        results, start = [], 0
        for i in items:
            results.append({k: v[start : start + i.n] for k, v in outputs.items()})
            start += i.n
        t3 = time.perf_counter_ns()
        self.stats.runs += 1
        self.stats.items += size
        self.stats.run_seconds += (t2 - t1) / 1e9
        self.stats.queue_seconds += sum(queued)
        runs = self.stats.by_size.setdefault(size, [0, 0, 0, 0])
        for k, ns in enumerate((1, t1 - t0, t2 - t1, t3 - t2)):
            runs[k] += ns
        for i, q in zip(items, queued):
            self.observe(q, size)
            if i.timer is not None:
                i.timer.queue += int(q * 1e9)
                i.timer.input += t1 - t0
                i.timer.infer += t2 - t1
                i.timer.output += t3 - t2
        return results

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
        self.executor.shutdown(wait=False)
