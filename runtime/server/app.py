"""``impasto serve``: the gRPC server (Studio, KServe v2, health) and the HTTP/JSON port, in one process.

Start-up order: both ports are bound first (a port in use is refused with one clear error
before anything else starts: no sidecar is left behind), then the sidecar (started and
supervised, or connected to), the model pool (one backend and batcher per repository model),
the job manager, and the listeners start serving. gRPC health says NOT_SERVING for ``""`` and
``impasto.v1.Studio`` (and HTTP ``/v2/health/ready`` 503) while no sidecar is up.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from impasto.runtime.api import studio_pb2_grpc
from impasto.runtime.errors import FailedPrecondition
from impasto.runtime.server.auth import OPEN_GRPC_METHODS, PRINCIPAL, Principals, check_bind
from impasto.runtime.server.http import HttpApi
from impasto.runtime.server.jobs import JobManager
from impasto.runtime.server.kserve import KServeServicer
from impasto.runtime.server.metrics import Metrics
from impasto.runtime.server.models import ModelPool
from impasto.runtime.server.studio import Studio, StudioServicer
from impasto.runtime.server.supervisor import Sidecar
from tritonclient.grpc import service_pb2_grpc

log = logging.getLogger(__name__)

SIDECAR_SERVICES = ("", "impasto.v1.Studio")  # health names that follow the sidecar (KServe models run in-process)
PROTOBUF_DEPTH = 100  # protobuf's default recursion limit when decoding (a Struct level takes two: Value, then Struct/ListValue)


class PortInUse(FailedPrecondition):
    """A port the server was told to listen on is taken (by another ``impasto serve``?)."""


def _port_error(kind: str, host: str, port: int, error: OSError | str) -> PortInUse:
    if isinstance(error, OSError) and error.errno != errno.EADDRINUSE:
        return PortInUse(f"cannot listen on {host}:{port} ({kind}): {error.strerror or error}")
    return PortInUse(f"{kind} port {port} is in use (on {host}); stop what holds it or choose another "
                     f"({'--port' if kind == 'gRPC' else '--http-port'})")


def _bind(host: str, port: int, kind: str) -> socket.socket:
    """A listening TCP socket on ``host:port``, without port sharing; PortInUse if it is taken."""
    try:
        family, kind_, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                              flags=socket.AI_PASSIVE)[0]
    except OSError as e:
        raise PortInUse(f"cannot listen on {host}:{port} ({kind}): {e}") from None
    sock = socket.socket(family, kind_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT of a previous run; not a live listener
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise _port_error(kind, host, port, e) from None
    sock.setblocking(False)
    return sock


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8001
    http_port: int = 8000  # -1: no HTTP listener (0: any free port, as for port)
    repo: str | None = None
    token: str | None = None
    token_file: str | None = None  # named tokens, 'NAME TOKEN' a line: jobs are scoped to their principal
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
    max_results: int = 1000
    max_result_bytes: int = 512 << 20
    max_side: int = 16384
    max_message_bytes: int = 256 << 20
    preview_interval_ms: int = 1000
    threads: int = 0

    def check(self) -> None:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("give both --tls-cert and --tls-key, or neither")
        check_bind(self.host, self.token or self.token_file, bool(self.tls_cert), self.insecure)
        if not 0 <= self.port <= 65535 or not -1 <= self.http_port <= 65535:
            raise ValueError("ports must be between 0 and 65535 (--http-port -1: no HTTP listener)")


class _Undecodable:
    """What a request deserializer returns for bytes protobuf cannot decode; the handler answers INVALID_ARGUMENT.

    gRPC calls the deserializer outside any handler, where an exception becomes UNKNOWN with
    no message; returning this marker instead lets the wrapped handler abort with a clear one.
    """

    def __init__(self, message: str):
        self.message = message


def _tolerant(deserializer, method: str):
    """``deserializer`` that returns :class:`_Undecodable` instead of raising (protobuf's depth limit, bad bytes)."""
    if deserializer is None:
        return None
    name = method.rsplit("/", 1)[-1]

    def decode(data: bytes):
        try:
            return deserializer(data)
        except Exception as e:  # google.protobuf.message.DecodeError, RecursionError in pure-Python protobuf
            log.debug("undecodable %s request: %s", method, e)
            return _Undecodable(
                f"the {name} request could not be decoded: a message or a Struct value (such as options) nests "
                f"deeper than protobuf's limit of {PROTOBUF_DEPTH} levels, or the bytes are not a valid message")

    return decode


async def _refuse_undecodable(request, context) -> None:
    if isinstance(request, _Undecodable):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)


async def _checked_stream(requests, context):
    """A client stream whose undecodable message ends the call with INVALID_ARGUMENT."""
    async for request in requests:
        await _refuse_undecodable(request, context)
        yield request


class _Interceptor(grpc.aio.ServerInterceptor):
    """Checks the bearer token, names the caller's principal (``auth.PRINCIPAL``), records every call's status and
    latency, and answers a request protobuf cannot decode with INVALID_ARGUMENT (gRPC alone says UNKNOWN)."""

    def __init__(self, principals: Principals, metrics: Metrics):
        self.principals = principals
        self.metrics = metrics

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method
        metadata = dict(details.invocation_metadata or ())
        principal = self.principals.identify(metadata.get("authorization")) if self.principals.required else None
        allowed = method.startswith(OPEN_GRPC_METHODS) or not self.principals.required or principal is not None
        metrics = self.metrics
        decode = _tolerant(handler.request_deserializer, method)

        async def guard(context) -> None:
            PRINCIPAL.set(principal)  # this call's task: the handler reads it
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
                    await _refuse_undecodable(request, context)
                    return await inner(request, context)
                except BaseException as e:
                    error = e
                    raise
                finally:
                    record(context, start, error)

            return grpc.unary_unary_rpc_method_handler(unary_unary, decode, handler.response_serializer)
        def streaming(inner, client_streams: bool):
            """The same wrapper for server-streaming and bidirectional calls (first argument: request or iterator)."""

            async def wrapped(request, context):
                start, error = time.perf_counter(), None
                try:
                    await guard(context)
                    if client_streams:
                        request = _checked_stream(request, context)
                    else:
                        await _refuse_undecodable(request, context)
                    async for item in inner(request, context):
                        yield item
                except BaseException as e:
                    error = e
                    raise
                finally:
                    record(context, start, error)

            return wrapped

        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream, False), decode,
                                                        handler.response_serializer)
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream, True), decode,
                                                         handler.response_serializer)
        return handler  # stream-unary: none in impasto's services


class Server:
    """A running impasto server; ``await start()``, then ``await stop()``."""

    def __init__(self, config: ServerConfig):
        config.check()
        self.config = config
        self.principals = Principals.load(config.token, config.token_file)
        self.metrics = Metrics()
        self.health = health_aio.HealthServicer()
        self.sidecar = Sidecar(config.sidecar, device=config.device, slots=config.slots,
                               max_message_bytes=config.max_message_bytes,
                               on_restart=lambda code: self.metrics.sidecar_restarts.inc(),
                               on_state=self._sidecar_state,
                               repo=config.repo if config.repo and Path(config.repo).is_dir() else None,
                               backend=config.backend)
        self.grpc_port = 0
        self.http_port = 0
        self.grpc = None
        self.runner = None
        self._http_socket: socket.socket | None = None

    def ready(self) -> bool:
        return self.sidecar.ready.is_set()

    async def _sidecar_state(self, ready: bool) -> None:
        """Health follows the sidecar: NOT_SERVING while there is none (it died, a new one is starting)."""
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in SIDECAR_SERVICES:
            await self.health.set(service, status)

    def _bind_ports(self) -> None:
        """Bind the gRPC and HTTP ports (not serving yet): PortInUse before anything is started."""
        c = self.config
        options = [("grpc.max_send_message_length", c.max_message_bytes),
                   ("grpc.max_receive_message_length", c.max_message_bytes),
                   ("grpc.so_reuseport", 0)]  # gRPC would otherwise share a port another server listens on
        self.grpc = grpc.aio.server(interceptors=[_Interceptor(self.principals, self.metrics)], options=options)
        if c.port:  # checked here first: gRPC's own failure also prints a C-level log line
            _bind(c.host, c.port, "gRPC").close()
        address = f"{c.host}:{c.port}"
        try:
            if c.tls_cert:
                with open(c.tls_key, "rb") as k, open(c.tls_cert, "rb") as cert:
                    credentials = grpc.ssl_server_credentials([(k.read(), cert.read())])
                self.grpc_port = self.grpc.add_secure_port(address, credentials)
            else:
                self.grpc_port = self.grpc.add_insecure_port(address)
        except RuntimeError as e:  # grpcio raises when it cannot bind
            raise _port_error("gRPC", c.host, c.port, str(e)) from None
        if self.grpc_port == 0:
            raise _port_error("gRPC", c.host, c.port, "bind failed")
        if c.http_port >= 0:
            self._http_socket = _bind(c.host, c.http_port, "HTTP")

    async def start(self) -> None:
        c = self.config
        try:
            self._bind_ports()
            for service in (*SIDECAR_SERVICES, "inference.GRPCInferenceService"):
                await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
            await self.sidecar.start()
            await self._serve()
        except BaseException:
            await self._abandon()
            raise
        log.info("impasto serving gRPC on %s:%d, HTTP on %s", c.host, self.grpc_port, self.http_port or "-")

    async def _serve(self) -> None:
        c = self.config
        self.models = ModelPool(c.repo, c.backend, c.batching, self.metrics, c.threads)
        self.jobs = JobManager(self.sidecar, models=self.models, max_jobs=c.max_jobs, result_ttl=c.result_ttl,
                               max_results=c.max_results, max_result_bytes=c.max_result_bytes, max_side=c.max_side,
                               preview_interval_ms=c.preview_interval_ms)
        self.jobs.start()
        self.metrics.watch_jobs(self.jobs.counts)
        self.studio = Studio(self.jobs, self.models, max_side=c.max_side, max_message_bytes=c.max_message_bytes)
        studio_pb2_grpc.add_StudioServicer_to_server(StudioServicer(self.studio), self.grpc)
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(KServeServicer(self.models, self.ready, c.max_message_bytes), self.grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        await self.grpc.start()
        await self.health.set("inference.GRPCInferenceService", health_pb2.HealthCheckResponse.SERVING)
        await self._sidecar_state(self.sidecar.ready.is_set())
        if self._http_socket is not None:
            self.http = HttpApi(self.studio, self.models, self.metrics, self.principals, c.max_message_bytes, self.ready)
            self.runner = web.AppRunner(self.http.app, access_log=None)
            await self.runner.setup()
            ssl_context = None
            if c.tls_cert:
                import ssl

                ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                ssl_context.load_cert_chain(c.tls_cert, c.tls_key)
            site = web.SockSite(self.runner, self._http_socket, ssl_context=ssl_context)
            await site.start()
            self.http_port = self._http_socket.getsockname()[1]

    async def _abandon(self) -> None:
        """Undo a start that failed part-way: the sidecar is stopped, the ports are released."""
        if self.grpc is not None:
            await self.grpc.stop(None)
        if self._http_socket is not None:
            self._http_socket.close()
        if hasattr(self, "jobs"):
            await self.jobs.close()
        await self.sidecar.close()

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
