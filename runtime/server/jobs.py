"""Jobs: the server's queue of operations, their event logs, results and retention.

Every op runs as a job, whichever RPC started it. A sidecar op (torch optimisation) is
queued here and handed to the sidecar when it has a free slot; an engine op (feed-forward
models) runs in this process, on the model pool and its batchers, in a worker thread. Every event is
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
from impasto.runtime.api import convert, legacy
from impasto.runtime.api import sidecar_pb2 as spb
from impasto.runtime.api import studio_pb2 as pb
from impasto.runtime.errors import NotFound, ResourceExhausted, code_of, message_of
from impasto.runtime.ops.registry import OpSpec, RunContext
from impasto.runtime.ops.request import run_op
from impasto.runtime.server.supervisor import Sidecar

log = logging.getLogger(__name__)

TERMINAL = (pb.SUCCEEDED, pb.FAILED, pb.CANCELLED)


class JobsFull(ResourceExhausted):
    """More jobs than the server accepts at once (queued + running)."""


class _Stopped(Exception):
    """Raised in an engine job's thread at its next progress report once the job is cancelled."""


class UnknownJob(NotFound):
    def __str__(self) -> str:
        return f"no job with id '{self.args[0]}' (finished jobs are kept for a limited time)"


@dataclass
class JobRecord:
    id: str
    spec: OpSpec
    request: pb.OpRequest
    legacy: bool = False  # started with a typed RPC (Paint, ...): its final event carries the typed result
    state: int = pb.QUEUED
    created: float = field(default_factory=time.time)
    started: float = 0.0
    finished: float = 0.0
    events: list[pb.JobEvent] = field(default_factory=list)
    watchers: set[asyncio.Queue] = field(default_factory=set)
    progress: pb.Progress | None = None
    result: pb.OpResult | None = None
    error: pb.JobError | None = None
    cancel_requested: bool = False
    task: asyncio.Task | None = None

    def to_proto(self, ttl: float) -> pb.Job:
        job = pb.Job(id=self.id, op=self.spec.name, state=self.state, created=self.created, started=self.started,
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
    def __init__(self, sidecar: Sidecar, *, models=None, max_jobs: int = 16, result_ttl: float = 3600.0,
                 max_side: int = 16384, preview_interval_ms: int = 1000, progress_interval_ms: int = 100,
                 engine_slots: int = 4):
        self.sidecar = sidecar
        self.models = models  # the ModelPool engine ops infer on
        self.engine_slots = asyncio.Semaphore(engine_slots)
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

    def submit(self, spec: OpSpec, request: pb.OpRequest, legacy: bool = False) -> JobRecord:
        """Queue a checked request (sidecar ops) or start it at once (engine ops)."""
        active = len(self.queue) + len(self.running)
        if active >= self.max_jobs:
            raise JobsFull(f"the server already has {active} jobs queued or running (limit {self.max_jobs}); retry later")
        job = JobRecord(id=uuid.uuid4().hex, spec=spec, request=request, legacy=legacy)
        self.jobs[job.id] = job
        if spec.runs_in == "engine":
            self.running.add(job.id)
            self._append(job, queued=pb.Queued(position=0))
            job.task = asyncio.create_task(self._run_engine(job), name=f"job-{job.id}")
            return job
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
            if job.spec.runs_in == "engine":
                return job  # its thread checks the flag at its next progress report, or when it ends
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
        seen = 0  # the seq of the last event yielded: events are never skipped, never repeated
        try:
            for event in list(job.events):  # events appended meanwhile are in the queue too
                yield event
                seen = event.seq
            if job.state in TERMINAL:
                for event in job.events[seen:]:
                    yield event
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

    def _succeed(self, job: JobRecord, result: pb.OpResult) -> None:
        """The final event: the generic result, or for a typed RPC's job the typed result it expects."""
        job.result = result
        job.request = pb.OpRequest(op=job.request.op)  # the inputs are not needed any more
        self._finish(job, pb.SUCCEEDED, **(legacy.result_event(job.spec.name, result) if job.legacy
                                           else {"op_result": result}))

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
        request = spb.RunRequest(job_id=job.id, request=job.request, max_side=self.max_side,
                                 preview_interval_ms=max(job.request.preview_interval_ms, self.preview_interval_ms),
                                 progress_interval_ms=self.progress_interval_ms)
        try:
            async for event in self.sidecar.stub.Run(request):
                kind = event.WhichOneof("event")
                if kind == "started":
                    job.started = time.time()
                    self._append(job, started=event.started)
                elif kind == "progress":
                    job.progress = event.progress
                    self._append(job, progress=event.progress)
                elif kind == "op_result":
                    self._succeed(job, event.op_result)
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

    async def _run_engine(self, job: JobRecord) -> None:
        """An engine op in a worker thread of this process; its models infer through the pool's batchers."""
        loop = asyncio.get_running_loop()

        def infer(model: str, arrays: dict) -> dict:
            return asyncio.run_coroutine_threadsafe(self.models.get(model).infer(arrays), loop).result()

        def progress(level, levels, step, total, loss, preview) -> None:
            if job.cancel_requested:
                raise _Stopped()
            msg = pb.Progress(level=level, levels=levels, step=step, total=total, loss=loss)
            loop.call_soon_threadsafe(lambda: job.state == pb.RUNNING and self._append(job, progress=msg))

        async with self.engine_slots:
            if job.state in TERMINAL:
                return
            job.state, job.started = pb.RUNNING, time.time()
            self._append(job, started=pb.Started(worker=f"engine/{job.spec.name}"))
            ctx = RunContext(max_side=self.max_side, infer=infer, progress=progress)
            try:
                outcome = await loop.run_in_executor(None, run_op, job.spec, convert.op_request(job.request), ctx)
            except _Stopped:
                self._finish(job, pb.CANCELLED, cancelled=pb.Cancelled())
                return
            except Exception as e:
                code = code_of(e) or "INTERNAL"
                if code == "INTERNAL":
                    log.exception("engine job %s failed", job.id)
                job.error = pb.JobError(code=code, message=message_of(e))
                self._finish(job, pb.FAILED, error=job.error)
                return
            if job.cancel_requested:
                self._finish(job, pb.CANCELLED, cancelled=pb.Cancelled())
            else:
                self._succeed(job, convert.op_result(job.spec, outcome))

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
