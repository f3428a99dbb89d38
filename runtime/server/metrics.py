"""Prometheus metrics of one server: requests, latencies, batching, jobs, sidecar restarts."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _JobsCollector:
    def __init__(self, counts: Callable[[], dict[str, int]]):
        self.counts = counts

    def collect(self):
        family = GaugeMetricFamily("impasto_jobs", "Jobs known to the server, by state", labels=["state"])
        for state, n in self.counts().items():
            family.add_metric([state], n)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("impasto_requests_total", "Requests by transport, method and status code",
                                ["transport", "method", "code"], registry=self.registry)
        self.latency = Histogram("impasto_request_seconds", "Request latency (streams: until the last message)",
                                 ["transport", "method"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.queue_time = Histogram("impasto_batch_queue_seconds", "Time an inference request waited for its batch",
                                    ["model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("impasto_batch_size", "Items per batch run on a backend", ["model"],
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry)
        self.sidecar_restarts = Counter("impasto_sidecar_restarts_total", "Times the sidecar process died and was restarted",
                                        registry=self.registry)

    def watch_jobs(self, counts: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_JobsCollector(counts))

    def observe(self, transport: str, method: str, code: str, seconds: float) -> None:
        self.requests.labels(transport, method, code).inc()
        self.latency.labels(transport, method).observe(seconds)

    def text(self) -> bytes:
        return generate_latest(self.registry)
