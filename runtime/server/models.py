"""The feed-forward models a server serves: one backend and one batcher per repository model."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from impasto.runtime.errors import NotFound
from impasto.export.repository import RepositoryError, RepositoryModel, list_models, read_model
from impasto.runtime.backends import load_backend
from impasto.runtime.backends.base import Backend
from impasto.runtime.server.batching import DynamicBatcher
from impasto.runtime.server.kserve_stats import InferStats, RequestTimer
from impasto.runtime.server.metrics import Metrics

log = logging.getLogger(__name__)
T = TypeVar("T")


class ModelNotFound(NotFound):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class ServedModel:
    info: RepositoryModel
    backend: Backend
    batcher: DynamicBatcher
    stats: InferStats = field(default_factory=InferStats)

    async def infer(self, inputs: dict[str, np.ndarray], timer: RequestTimer | None = None) -> dict[str, np.ndarray]:
        """Checked and batched inference; counted in :attr:`stats` as one request unless a ``timer`` is given.

        Callers that pass a ``timer`` (the KServe transports, through :meth:`serve`) count the request themselves.
        """
        own = timer is None
        timer = timer or RequestTimer()
        try:
            with timer.phase("input"):
                checked = self.backend.check(inputs)
            outputs = await self.batcher.infer(checked, timer)
        except Exception:
            if own:
                self.stats.record(timer, ok=False)
            raise
        if own:
            self.stats.record(timer, ok=True)
        return outputs

    async def serve(self, decode: Callable[[], dict[str, np.ndarray]],
                    encode: Callable[[dict[str, np.ndarray]], T]) -> T:
        """One KServe request: ``decode()`` its tensors, infer, ``encode(outputs)`` the reply; timed and counted.

        Decoding counts as compute_input and encoding as compute_output (see ``kserve_stats``).
        """
        timer = RequestTimer()
        try:
            with timer.phase("input"):
                inputs = decode()
            outputs = await self.infer(inputs, timer)
            with timer.phase("output"):
                reply = encode(outputs)
        except Exception:
            self.stats.record(timer, ok=False)
            raise
        self.stats.record(timer, ok=True)
        return reply


class ModelPool:
    def __init__(self, repo: str | None, backend: str = "auto", batching: bool = True, metrics: Metrics | None = None,
                 threads: int = 0):
        self.repo = repo
        self.models: dict[str, ServedModel] = {}
        self.failed: dict[str, str] = {}  # model -> why it could not load
        if not repo:
            return
        for name in list_models(repo):
            try:
                info = read_model(repo, name)
                served = load_backend(repo, name, backend, threads=threads)
            except (RepositoryError, ValueError, RuntimeError) as e:
                log.error("model %s not served: %s", name, e)
                self.failed[name] = str(e)
                continue

            def observe(queued: float, size: int, name: str = name) -> None:
                if metrics is not None:
                    metrics.queue_time.labels(name).observe(queued)
                    metrics.batch_size.labels(name).observe(size)

            batcher = DynamicBatcher(served, info.max_batch_size, info.max_queue_delay_us / 1e6, batching, observe)
            self.models[name] = ServedModel(info, served, batcher)
            log.info("serving %s on %s", name, served.name)

    def get(self, name: str) -> ServedModel:
        if name not in self.models:
            why = self.failed.get(name)
            raise ModelNotFound(f"model '{name}' failed to load: {why}" if why else
                                f"unknown model '{name}' (served: {', '.join(sorted(self.models)) or 'none'})")
        return self.models[name]

    async def close(self) -> None:
        for m in self.models.values():
            await m.batcher.close()
            m.backend.close()
