"""The sidecar's gRPC service: run op jobs in worker threads, stream their events, cancel them.

Any op whose definition says ``runs_in="sidecar"`` runs here through the same request path
as the CLI (:func:`impasto.runtime.ops.request.run_op`); nothing here is op-specific. The
Studio Render RPC runs here too (:mod:`impasto.runtime.sidecar.render`): images are decoded
only in this process, never in the server.

Each job runs in a thread (torch releases the GIL in its kernels); events cross to the
asyncio loop through a queue. Progress events are throttled (``progress_interval_ms``) and
previews, which cost a PNG encode, more so (``preview_interval_ms``). Cancellation sets a
flag that the painter's progress callback checks at every optimisation step, so a job
stops within one step (well under a second).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import torch
from impasto.runtime.api import convert, sidecar_pb2_grpc
from impasto.runtime.api import sidecar_pb2 as spb
from impasto.runtime.api import studio_pb2 as pb
from impasto.runtime.config import DEFAULT_MAX_SIDE
from impasto.runtime.errors import code_of, message_of
from impasto.runtime.ops.registry import RunContext, get_op
from impasto.runtime.ops.request import run_op, use_local_models
from impasto.runtime.sidecar.render import render

log = logging.getLogger(__name__)


class JobCancelled(Exception):
    """Raised inside a job's thread when the job is asked to stop."""


class SidecarService(sidecar_pb2_grpc.SidecarServicer):
    def __init__(self, device: str = "cpu", slots: int = 1, vgg_weights: str | None = None, *,
                 repo: str | None = None, backend: str = "auto"):
        self.device = device
        self.repo, self.backend = repo, backend  # engine models a sidecar op may run (None: none)
        self.slots = max(1, slots)
        self.vgg_weights = vgg_weights
        self.executor = ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix="job")
        self.semaphore = asyncio.Semaphore(self.slots)
        self.flags: dict[str, threading.Event] = {}
        self.running = 0
        self.cache: dict = {}  # per-process state ops keep between jobs (feature networks)
        # renders (the Render RPC) wait for each other, not for jobs: one at a time bounds their memory
        self.render_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="render")

    async def Status(self, request, context) -> spb.StatusReply:
        return spb.StatusReply(pid=os.getpid(), device=self.device, slots=self.slots, running=self.running)

    async def Cancel(self, request, context) -> spb.CancelReply:
        flag = self.flags.get(request.job_id)
        if flag is not None:
            flag.set()
        return spb.CancelReply(found=flag is not None)

    async def Render(self, request: spb.RenderJob, context) -> pb.RenderReply:
        """Render saved strokes (the Studio Render RPC, forwarded by the server); errors keep their status."""
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self.render_executor, render, request.request, request.max_side or DEFAULT_MAX_SIDE)
        except torch.OutOfMemoryError as e:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"out of memory on {self.device}: {e}")
        except Exception as e:
            code = code_of(e)
            if code is None:
                log.exception("render failed")
            await context.abort(grpc.StatusCode[code or "INTERNAL"], message_of(e))

    async def Run(self, request: spb.RunRequest, context):
        if not request.HasField("request"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "RunRequest.request is missing")
        flag = self.flags.setdefault(request.job_id, threading.Event())
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def emit(**kwargs) -> None:  # called from the job's thread
            event = pb.JobEvent(job_id=request.job_id, time=time.time(), **kwargs)
            loop.call_soon_threadsafe(events.put_nowait, event)

        entered = False
        try:
            async with self.semaphore:
                self.running += 1
                entered = True
                yield pb.JobEvent(job_id=request.job_id, time=time.time(), started=pb.Started(worker=f"{os.getpid()}/{self.device}"))
                future = loop.run_in_executor(self.executor, self._job, request, flag, emit)
                future.add_done_callback(lambda _: loop.call_soon_threadsafe(events.put_nowait, None))
                while (event := await events.get()) is not None:
                    yield event
                await future
        finally:
            flag.set()  # the server went away: stop the job rather than paint for nobody
            self.flags.pop(request.job_id, None)
            if entered:
                self.running -= 1

    def _job(self, request: spb.RunRequest, flag: threading.Event, emit) -> None:
        """Run one job in this thread, emitting throttled progress and then exactly one final event."""
        max_side = request.max_side or 16384
        progress_every = max(request.progress_interval_ms, 50) / 1000
        preview_every = max(request.preview_interval_ms, 250) / 1000
        last = {"progress": 0.0, "preview": 0.0}

        def on_progress(level: int, levels: int, step: int, total: int, loss: float, image) -> None:
            if flag.is_set():
                raise JobCancelled()
            now = time.monotonic()
            if now - last["progress"] < progress_every and step < total:
                return
            last["progress"] = now
            msg = pb.Progress(level=level, levels=levels, step=step, total=total, loss=loss)
            if now - last["preview"] >= preview_every:
                last["preview"] = now
                msg.preview.CopyFrom(convert.png_image(image()))
            emit(progress=msg)

        try:
            spec = get_op(request.request.op)
            ctx = RunContext(device=self.device, max_side=max_side, vgg_weights=self.vgg_weights, progress=on_progress,
                             cache=self.cache)
            if self.repo:
                use_local_models(ctx, self.repo, self.backend)
            outcome = run_op(spec, convert.op_request(request.request), ctx)
            if flag.is_set():
                raise JobCancelled()
            emit(op_result=convert.op_result(spec, outcome))
        except JobCancelled:
            emit(cancelled=pb.Cancelled())
        except torch.OutOfMemoryError as e:
            emit(error=pb.JobError(code="RESOURCE_EXHAUSTED", message=f"out of memory on {self.device}: {e}"))
        except Exception as e:
            code = code_of(e)
            if code is None:  # a bug or a broken environment: report it, keep serving
                log.exception("job %s failed", request.job_id)
            emit(error=pb.JobError(code=code or "INTERNAL", message=message_of(e)))


async def serve(listen: str, service: SidecarService, max_message_bytes: int = 256 << 20) -> None:
    """Serve ``service`` on ``listen`` ('unix:/path' or 'host:port') until cancelled."""
    options = [("grpc.max_send_message_length", max_message_bytes), ("grpc.max_receive_message_length", max_message_bytes)]
    server = grpc.aio.server(options=options)
    sidecar_pb2_grpc.add_SidecarServicer_to_server(service, server)
    if server.add_insecure_port(listen) == 0 and not listen.startswith("unix:"):
        raise OSError(f"cannot listen on {listen}")
    await server.start()
    log.info("sidecar pid %d listening on %s (%s, %d slot(s))", os.getpid(), listen, service.device, service.slots)
    print(f"impasto sidecar ready on {listen}", flush=True)
    try:
        await server.wait_for_termination()
    finally:
        await server.stop(1)
