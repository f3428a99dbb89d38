"""Jobs: the server's queue of long operations, their event logs, results and retention.

A job is queued here and handed to the sidecar when it has a free slot. Every event is
kept in the job's log (previews only for the newest one, they are large), so a client that
disconnects can re-attach with ``WatchJob`` and get the whole story, then the live events.
When the sidecar dies, the jobs it was running fail with ``UNAVAILABLE`` and a message
saying so; queued jobs stay queued and run on the restarted sidecar. Finished jobs and
their results are forgotten ``result_ttl`` seconds after they end.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from dataclasses import dataclass, field

import grpc
from google.protobuf.message import Message

from impasto.runtime.api import sidecar_pb2 as spb
from impasto.runtime.api import studio_pb2 as pb
from impasto.runtime.server.supervisor import Sidecar

log = logging.getLogger(__name__)

TERMINAL = (pb.SUCCEEDED, pb.FAILED, pb.CANCELLED)


class JobsFull(Exception):
    """More jobs than the server accepts at once (queued + running)."""


class UnknownJob(KeyError):
    def __str__(self) -> str:
        return f"no job with id '{self.args[0]}' (finished jobs are kept for a limited time)"


@dataclass
class JobRecord:
    id: str
    op: str
    request: Message  # PaintRequest, TextureRequest or StylizeRequest (the op's)
    state: int = pb.QUEUED
    created: float = field(default_factory=time.time)
    started: float = 0.0
    finished: float = 0.0
    events: list[pb.JobEvent] = field(default_factory=list)
    watchers: set[asyncio.Queue] = field(default_factory=set)
    progress: pb.Progress | None = None
    result: pb.PaintResult | pb.ImageResult | None = None
    error: pb.JobError | None = None
    cancel_requested: bool = False
    task: asyncio.Task | None = None

    def to_proto(self, ttl: float) -> pb.Job:
        job = pb.Job(id=self.id, op=self.op, state=self.state, created=self.created, started=self.started,
                     finished=self.finished, has_result=self.result is not None)
        if self.progress is not None:
            job.progress.CopyFrom(self.progress)
            job.progress.ClearField("preview")
        if self.error is not None:
            job.error.CopyFrom(self.error)
        if self.finished:
            job.expires = self.finished + ttl
        return job


class JobManager:
    def __init__(self, sidecar: Sidecar, *, max_jobs: int = 16, result_ttl: float = 3600.0, max_side: int = 16384,
                 preview_interval_ms: int = 1000, progress_interval_ms: int = 100):
        self.sidecar = sidecar
        self.max_jobs = max_jobs
        self.result_ttl = result_ttl
        self.max_side = max_side
        self.preview_interval_ms = preview_interval_ms
        self.progress_interval_ms = progress_interval_ms
        self.jobs: dict[str, JobRecord] = {}
        self.queue: collections.deque[str] = collections.deque()
        self.running: set[str] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._dispatch(), name="jobs-dispatch"),
                       asyncio.create_task(self._janitor(), name="jobs-janitor")]

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for job in self.jobs.values():
            if job.task:
                job.task.cancel()

    def counts(self) -> dict[str, int]:
        """Jobs by state name (for metrics)."""
        counts = {pb.JobState.Name(s).lower(): 0 for s in (pb.QUEUED, pb.RUNNING, *TERMINAL)}
        for job in self.jobs.values():
            counts[pb.JobState.Name(job.state).lower()] += 1
        return counts

    # --- the API ---------------------------------------------------------------------------

    def submit(self, op: str, request: Message) -> JobRecord:
        active = len(self.queue) + len(self.running)
        if active >= self.max_jobs:
            raise JobsFull(f"the server already has {active} jobs queued or running (limit {self.max_jobs}); retry later")
        job = JobRecord(id=uuid.uuid4().hex, op=op, request=request)
        self.jobs[job.id] = job
        self.queue.append(job.id)
        self._append(job, queued=pb.Queued(position=len(self.queue)))
        self._wake.set()
        return job

    def get(self, job_id: str) -> JobRecord:
        if job_id not in self.jobs:
            raise UnknownJob(job_id)
        return self.jobs[job_id]

    async def cancel(self, job_id: str) -> JobRecord:
        job = self.get(job_id)
        if job.state == pb.QUEUED:
            self.queue.remove(job.id)
            self._finish(job, pb.CANCELLED, cancelled=pb.Cancelled())
        elif job.state == pb.RUNNING and not job.cancel_requested:
            job.cancel_requested = True
            try:
                await self.sidecar.stub.Cancel(spb.CancelRequest(job_id=job.id), timeout=5)
            except grpc.aio.AioRpcError as e:  # the sidecar is gone: the job ends with it
                log.warning("cancel of %s: sidecar unreachable (%s)", job.id, e.code().name)
        return job

    async def watch(self, job_id: str):
        """Every event of the job so far, then the live ones, until it ends."""
        job = self.get(job_id)
        queue: asyncio.Queue = asyncio.Queue()
        job.watchers.add(queue)
        try:
            for event in list(job.events):
                yield event
            seen = job.events[-1].seq if job.events else 0
            if job.state in TERMINAL:
                return
            while True:
                event = await queue.get()
                if event is None:
                    return
                if event.seq > seen:
                    seen = event.seq
                    yield event
        finally:
            job.watchers.discard(queue)

    # --- internals -------------------------------------------------------------------------

    def _append(self, job: JobRecord, **kind) -> pb.JobEvent:
        event = pb.JobEvent(job_id=job.id, seq=len(job.events) + 1, time=time.time(), **kind)
        if event.HasField("progress") and event.progress.HasField("preview"):
            for old in reversed(job.events):  # keep only the newest preview in the log
                if old.HasField("progress") and old.progress.HasField("preview"):
                    old.progress.ClearField("preview")
                    break
        job.events.append(event)
        for q in job.watchers:
            q.put_nowait(event)
        return event

    def _finish(self, job: JobRecord, state: int, **kind) -> None:
        job.state = state
        job.finished = time.time()
        self._append(job, **kind)
        for q in job.watchers:
            q.put_nowait(None)
        self.running.discard(job.id)
        self._wake.set()

    async def _dispatch(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.queue and len(self.running) < self.sidecar.slots:
                if not self.sidecar.ready.is_set():
                    await self.sidecar.ready.wait()
                    continue  # jobs may have been cancelled (dequeued) while the sidecar restarted
                job = self.get(self.queue.popleft())
                job.state = pb.RUNNING
                self.running.add(job.id)
                job.task = asyncio.create_task(self._run(job), name=f"job-{job.id}")

    async def _run(self, job: JobRecord) -> None:
        generation = self.sidecar.generation
        request = spb.RunRequest(job_id=job.id, max_side=self.max_side,
                                 preview_interval_ms=max(job.request.preview_interval_ms, self.preview_interval_ms),
                                 progress_interval_ms=self.progress_interval_ms)
        getattr(request, job.op).CopyFrom(job.request)
        try:
            async for event in self.sidecar.stub.Run(request):
                kind = event.WhichOneof("event")
                if kind == "started":
                    job.started = time.time()
                    self._append(job, started=event.started)
                elif kind == "progress":
                    job.progress = event.progress
                    self._append(job, progress=event.progress)
                elif kind == "result":
                    job.result = event.result
                    self._finish(job, pb.SUCCEEDED, result=event.result)
                elif kind == "image_result":
                    job.result = event.image_result
                    self._finish(job, pb.SUCCEEDED, image_result=event.image_result)
                elif kind == "error":
                    job.error = event.error
                    self._finish(job, pb.FAILED, error=event.error)
                elif kind == "cancelled":
                    self._finish(job, pb.CANCELLED, cancelled=pb.Cancelled())
            if job.state not in TERMINAL:
                raise RuntimeError("the sidecar ended the job without a result")
        except asyncio.CancelledError:
            raise
        except (grpc.aio.AioRpcError, RuntimeError) as e:
            if job.state in TERMINAL:
                return
            if job.cancel_requested:
                self._finish(job, pb.CANCELLED, cancelled=pb.Cancelled())
                return
            message = await self._why_lost(generation, e)
            job.error = pb.JobError(code="UNAVAILABLE", message=message)
            self._finish(job, pb.FAILED, error=job.error)

    async def _why_lost(self, generation: int, error: Exception) -> str:
        process = self.sidecar.process
        for _ in range(20):  # let the supervisor notice a dead process (at most ~2 s)
            if process is None or process.returncode is not None or self.sidecar.generation != generation:
                break
            await asyncio.sleep(0.1)
        if process is not None and process.returncode is not None:
            return (f"the sidecar process (pid {process.pid}) died with exit code {process.returncode} while running this "
                    "job (killed, or out of memory); it has been restarted: submit the job again")
        detail = error.details() if isinstance(error, grpc.aio.AioRpcError) else str(error)
        return f"lost the connection to the sidecar while running this job: {detail}"

    async def _janitor(self) -> None:
        while True:
            await asyncio.sleep(min(60.0, max(1.0, self.result_ttl / 4)))
            now = time.time()
            for job_id in [j.id for j in self.jobs.values() if j.state in TERMINAL and now - j.finished > self.result_ttl]:
                del self.jobs[job_id]
