"""Per-model inference statistics with Triton's semantics (KServe ``ModelStatistics``).

Counts are per *request*, as in Triton: 5 requests of batch 4 are ``success.count == 5`` and
``inference_count == 20`` (items), with ``execution_count`` the number of backend runs they
took. Every successful request adds one to each of queue, compute_input, compute_infer and
compute_output (so their counts always equal ``success.count``, which perf_analyzer checks),
with the time it spent:

- queue: from entering the batcher's queue to its batch being dispatched;
- compute_input: decoding its tensors from the wire, checking them, and its share of joining
  the batch (the batch's concatenation time);
- compute_infer: the backend run of its batch (each request of a batch is charged the whole
  run, as Triton does);
- compute_output: splitting the batch's outputs and encoding its reply.

``success.ns`` is the whole request, from the first decode to the encoded reply. ``fail`` counts
requests that reached a model and then failed (bad tensors, a failed run).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tritonclient.grpc import service_pb2 as kpb


@dataclass
class RequestTimer:
    """The time one request spent in each phase, in nanoseconds."""

    start: int = field(default_factory=time.perf_counter_ns)
    queue: int = 0
    input: int = 0
    infer: int = 0
    output: int = 0

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Add the time spent in the ``with`` block to phase ``name`` (input, infer, output)."""
        t0 = time.perf_counter_ns()
        try:
            yield
        finally:
            setattr(self, name, getattr(self, name) + time.perf_counter_ns() - t0)


@dataclass
class _Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns


@dataclass
class InferStats:
    """What one model has served: per-request durations, item and run counts, per-batch-size runs."""

    success: _Duration = field(default_factory=_Duration)
    fail: _Duration = field(default_factory=_Duration)
    queue: _Duration = field(default_factory=_Duration)
    compute_input: _Duration = field(default_factory=_Duration)
    compute_infer: _Duration = field(default_factory=_Duration)
    compute_output: _Duration = field(default_factory=_Duration)
    last_inference_ms: int = 0

    def record(self, timer: RequestTimer, ok: bool) -> None:
        """Count one finished request."""
        total = time.perf_counter_ns() - timer.start
        if not ok:
            self.fail.add(total)
            return
        self.success.add(total)
        self.queue.add(timer.queue)
        self.compute_input.add(timer.input)
        self.compute_infer.add(timer.infer)
        self.compute_output.add(timer.output)
        self.last_inference_ms = int(time.time() * 1000)


def fill_model_stats(stat: kpb.ModelStatistics, stats: InferStats, items: int, runs: int,
                     by_size: dict[int, list[int]]) -> None:
    """Fill Triton's ``ModelStatistics`` message from a model's request stats and its batcher's run counts.

    ``by_size`` maps a batch size to [runs, input ns, infer ns, output ns] of the runs of that size.
    """
    stat.last_inference = stats.last_inference_ms
    stat.inference_count = items
    stat.execution_count = runs
    for name in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
        d = getattr(stats, name)
        target = getattr(stat.inference_stats, name)
        target.count, target.ns = d.count, d.ns
    for size in sorted(by_size):
        count, input_ns, infer_ns, output_ns = by_size[size]
        b = stat.batch_stats.add(batch_size=size)
        b.compute_input.count = b.compute_infer.count = b.compute_output.count = count
        b.compute_input.ns, b.compute_infer.ns, b.compute_output.ns = input_ns, infer_ns, output_ns
