"""``impasto serve``: the gRPC server (Studio, KServe v2, health) and the HTTP/JSON port, in one process.

Start-up order: the sidecar (started and supervised, or connected to), the model pool
(one backend and batcher per repository model), the job manager, then the listeners.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from tritonclient.grpc import service_pb2_grpc

from impasto.runtime.api import studio_pb2_grpc
from impasto.runtime.server.auth import OPEN_GRPC_METHODS, check_bind, token_ok
from impasto.runtime.server.http import HttpApi
from impasto.runtime.server.jobs import JobManager
from impasto.runtime.server.kserve import KServeServicer
from impasto.runtime.server.metrics import Metrics
from impasto.runtime.server.models import ModelPool
from impasto.runtime.server.studio import Studio, StudioServicer
from impasto.runtime.server.supervisor import Sidecar

log = logging.getLogger(__name__)


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8001
    http_port: int = 8000  # -1: no HTTP listener (0: any free port, as for port)
    repo: str | None = None
    token: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    insecure: bool = False
    sidecar: str | None = None  # address of an external sidecar; None: start one
    device: str | None = None
    slots: int = 0
    backend: str = "auto"
    batching: bool = True
    max_jobs: int = 16
    result_ttl: float = 3600.0
    max_side: int = 16384
    max_message_bytes: int = 256 << 20
    preview_interval_ms: int = 1000
    threads: int = 0

    def check(self) -> None:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("give both --tls-cert and --tls-key, or neither")
        check_bind(self.host, self.token, bool(self.tls_cert), self.insecure)
        if not 0 <= self.port <= 65535 or not -1 <= self.http_port <= 65535:
            raise ValueError("ports must be between 0 and 65535 (--http-port -1: no HTTP listener)")


class _Interceptor(grpc.aio.ServerInterceptor):
    """Checks the bearer token and records every call's status and latency."""

    def __init__(self, token: str | None, metrics: Metrics):
        self.token = token
        self.metrics = metrics

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method
        metadata = dict(details.invocation_metadata or ())
        allowed = method.startswith(OPEN_GRPC_METHODS) or token_ok(metadata.get("authorization"), self.token)
        metrics = self.metrics

        async def guard(context) -> None:
            if not allowed:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token: send 'authorization: Bearer TOKEN'")

        def record(context, start: float, error: BaseException | None) -> None:
            code = context.code() if hasattr(context, "code") else None
            if code is None or isinstance(code, int):
                code = grpc.StatusCode.OK if error is None else (grpc.StatusCode.CANCELLED if isinstance(error, asyncio.CancelledError) else grpc.StatusCode.UNKNOWN)
            metrics.observe("grpc", method, code.name, time.perf_counter() - start)

        if handler.unary_unary:
            inner = handler.unary_unary

            async def unary_unary(request, context):
                start, error = time.perf_counter(), None
                try:
                    await guard(context)
                    return await inner(request, context)
                except BaseException as e:
                    error = e
                    raise
                finally:
                    record(context, start, error)

            return grpc.unary_unary_rpc_method_handler(unary_unary, handler.request_deserializer, handler.response_serializer)
        def streaming(inner):
            """The same wrapper for server-streaming and bidirectional calls (first argument: request or iterator)."""

            async def wrapped(request, context):
                start, error = time.perf_counter(), None
                try:
                    await guard(context)
                    async for item in inner(request, context):
                        yield item
                except BaseException as e:
                    error = e
                    raise
                finally:
                    record(context, start, error)

            return wrapped

        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream), handler.request_deserializer,
                                                        handler.response_serializer)
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream), handler.request_deserializer,
                                                         handler.response_serializer)
        return handler  # stream-unary: none in impasto's services


class Server:
    """A running impasto server; ``await start()``, then ``await stop()``."""

    def __init__(self, config: ServerConfig):
        config.check()
        self.config = config
        self.metrics = Metrics()
        self.sidecar = Sidecar(config.sidecar, device=config.device, slots=config.slots,
                               max_message_bytes=config.max_message_bytes,
                               on_restart=lambda code: self.metrics.sidecar_restarts.inc())
        self.grpc_port = 0
        self.http_port = 0

    def ready(self) -> bool:
        return self.sidecar.ready.is_set()

    async def start(self) -> None:
        c = self.config
        await self.sidecar.start()
        self.models = ModelPool(c.repo, c.backend, c.batching, self.metrics, c.threads)
        self.jobs = JobManager(self.sidecar, models=self.models, max_jobs=c.max_jobs, result_ttl=c.result_ttl, max_side=c.max_side,
                               preview_interval_ms=c.preview_interval_ms)
        self.jobs.start()
        self.metrics.watch_jobs(self.jobs.counts)
        self.studio = Studio(self.jobs, self.models, max_side=c.max_side, max_message_bytes=c.max_message_bytes)
        options = [("grpc.max_send_message_length", c.max_message_bytes),
                   ("grpc.max_receive_message_length", c.max_message_bytes)]
        self.grpc = grpc.aio.server(interceptors=[_Interceptor(c.token, self.metrics)], options=options)
        studio_pb2_grpc.add_StudioServicer_to_server(StudioServicer(self.studio), self.grpc)
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(KServeServicer(self.models, self.ready), self.grpc)
        self.health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        address = f"{c.host}:{c.port}"
        if c.tls_cert:
            with open(c.tls_key, "rb") as k, open(c.tls_cert, "rb") as cert:
                credentials = grpc.ssl_server_credentials([(k.read(), cert.read())])
            self.grpc_port = self.grpc.add_secure_port(address, credentials)
        else:
            self.grpc_port = self.grpc.add_insecure_port(address)
        if self.grpc_port == 0:
            raise OSError(f"cannot listen on {address} (gRPC)")
        await self.grpc.start()
        for service in ("", "impasto.v1.Studio", "inference.GRPCInferenceService"):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self.runner = None
        if c.http_port >= 0:
            self.http = HttpApi(self.studio, self.models, self.metrics, c.token, c.max_message_bytes, self.ready)
            self.runner = web.AppRunner(self.http.app, access_log=None)
            await self.runner.setup()
            ssl_context = None
            if c.tls_cert:
                import ssl

                ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                ssl_context.load_cert_chain(c.tls_cert, c.tls_key)
            site = web.TCPSite(self.runner, c.host, c.http_port, ssl_context=ssl_context)
            await site.start()
            self.http_port = site._server.sockets[0].getsockname()[1]
        log.info("impasto serving gRPC on %s:%d, HTTP on %s", c.host, self.grpc_port, self.http_port or "-")

    async def stop(self) -> None:
        await self.health.enter_graceful_shutdown()
        await self.grpc.stop(2)
        if self.runner:
            await self.runner.cleanup()
        await self.jobs.close()
        await self.models.close()
        await self.sidecar.close()


async def run(config: ServerConfig, on_ready=None) -> None:
    """Serve until SIGINT/SIGTERM."""
    server = Server(config)
    await server.start()
    if on_ready:
        on_ready(server)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()
