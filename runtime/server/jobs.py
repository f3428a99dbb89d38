"""Jobs: the server's queue of operations, their event logs, results and retention.

Every op runs as a job, whichever RPC started it. A sidecar op (torch optimisation) is
queued here and handed to the sidecar when it has a free slot; an engine op (feed-forward
models) runs in this process, on the model pool and its batchers, in a worker thread. Every event is
kept in the job's log (previews only for the newest one, they are large), so a client that
disconnects can re-attach with ``WatchJob`` and get the whole story, then the live events.
When the sidecar dies, the jobs it was running fail with ``UNAVAILABLE`` and a message
saying so; queued jobs stay queued and run on the restarted sidecar (as does a job handed
to a sidecar that died before it started it).

Retention: a job's inputs (its request images) are dropped the moment it ends. Finished jobs
and their results are forgotten ``result_ttl`` seconds after they end, or earlier, oldest
first, when more than ``max_results`` finished jobs or ``max_result_bytes`` of their events
and results are kept. A forgotten job's id answers NOT_FOUND saying why.

Ownership: a job belongs to the principal that submitted it (``auth.py``); asked by another
principal, every call answers as if the job did not exist.
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
from impasto.runtime.server.chain import SidecarStep, StepCancelled
from impasto.runtime.server.supervisor import Sidecar

log = logging.getLogger(__name__)

TERMINAL = (pb.SUCCEEDED, pb.FAILED, pb.CANCELLED)


class JobsFull(ResourceExhausted):
    """More jobs than the server accepts at once (queued + running)."""


class _Stopped(Exception):
    """Raised in an engine job's thread at its next progress report once the job is cancelled."""


MAX_REQUEUES = 3  # times a job the sidecar never started is handed to a new one before it fails
MAX_TOMBSTONES = 10_000  # forgotten job ids remembered, to say why they are gone


class UnknownJob(NotFound):
    def __str__(self) -> str:
        job_id = self.args[0][:80]
        why = self.args[1] if len(self.args) > 1 else "finished jobs are kept for a limited time"
        return f"no job with id '{job_id}' ({why})"


@dataclass
class JobRecord:
    id: str
    spec: OpSpec
    request: pb.OpRequest
    legacy: bool = False  # started with a typed RPC (Paint, ...): its final event carries the typed result
    owner: str | None = None  # the principal that submitted it (None: the server has no tokens)
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
    requeues: int = 0  # times the sidecar died before starting it
    step: str | None = None  # an engine job's step running on the sidecar now (its sidecar job id; chain.py)
    retained_bytes: int = 0  # its events and result, once it has ended

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
                 max_results: int = 1000, max_result_bytes: int = 512 << 20,
                 max_side: int = 16384, preview_interval_ms: int = 1000, progress_interval_ms: int = 100,
                 engine_slots: int = 4):
        self.sidecar = sidecar
        self.models = models  # the ModelPool engine ops infer on
        # one RunContext.cache for every engine job (colorize keeps its style vectors there): ops that use it
        # guard their own entries, as jobs run in threads side by side
        self.engine_cache: dict = {}
        self.engine_slots = asyncio.Semaphore(engine_slots)
        self.max_jobs = max_jobs
        self.result_ttl = result_ttl
        self.max_results = max_results
        self.max_result_bytes = max_result_bytes
        self.finished: collections.OrderedDict[str, int] = collections.OrderedDict()  # ended jobs, oldest first: bytes
        self.retained_bytes = 0
        self._tombstones: collections.OrderedDict[str, tuple[str | None, str]] = collections.OrderedDict()
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

    def submit(self, spec: OpSpec, request: pb.OpRequest, legacy: bool = False, owner: str | None = None) -> JobRecord:
        """Queue a checked request (sidecar ops) or start it at once (engine ops), owned by ``owner``."""
        active = len(self.queue) + len(self.running)
        if active >= self.max_jobs:
            raise JobsFull(f"the server already has {active} jobs queued or running (limit {self.max_jobs}); retry later")
        job = JobRecord(id=uuid.uuid4().hex, spec=spec, request=request, legacy=legacy, owner=owner)
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

    def get(self, job_id: str, principal: str | None = None) -> JobRecord:
        """The job, if ``principal`` may see it (its owner; anyone when the server has no tokens).

        A job of another principal is NOT_FOUND with the same message as one that never
        existed; a forgotten one of the caller's says why it was forgotten.
        """
        job = self.jobs.get(job_id)
        if job is not None and self._visible(job.owner, principal):
            return job
        owner, why = self._tombstones.get(job_id, (None, ""))
        if why and self._visible(owner, principal):
            raise UnknownJob(job_id, why)
        raise UnknownJob(job_id)

    def list(self, principal: str | None = None) -> list[JobRecord]:
        """The jobs ``principal`` may see, oldest first."""
        return [j for j in self.jobs.values() if self._visible(j.owner, principal)]

    @staticmethod
    def _visible(owner: str | None, principal: str | None) -> bool:
        return principal is None or owner == principal

    async def cancel(self, job_id: str, principal: str | None = None) -> JobRecord:
        job = self.get(job_id, principal)
        if job.state == pb.QUEUED:
            self.queue.remove(job.id)
            self._finish(job, pb.CANCELLED, cancelled=pb.Cancelled())
        elif job.state == pb.RUNNING and not job.cancel_requested:
            job.cancel_requested = True
            if job.spec.runs_in == "engine" and job.step is None:
                return job  # its thread checks the flag at its next progress report, or when it ends
            try:  # a sidecar job, or an engine job's step on the sidecar
                await self.sidecar.stub.Cancel(spb.CancelRequest(job_id=job.step or job.id), timeout=5)
            except grpc.aio.AioRpcError as e:  # the sidecar is gone: the job ends with it
                log.warning("cancel of %s: sidecar unreachable (%s)", job.id, e.code().name)
        return job

    async def watch(self, job_id: str, principal: str | None = None):
        """Every event of the job so far, then the live ones, until it ends."""
        job = self.get(job_id, principal)
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
        if job.legacy:
            job.result = result
            self._finish(job, pb.SUCCEEDED, **legacy.result_event(job.spec.name, result))
        else:
            event = self._finish(job, pb.SUCCEEDED, op_result=result)
            job.result = event.op_result  # the event's copy: the result bytes are held once

    def _finish(self, job: JobRecord, state: int, **kind) -> pb.JobEvent:
        job.state = state
        job.finished = time.time()
        job.request = pb.OpRequest(op=job.request.op)  # the inputs (images) are not needed any more
        job.task = None
        event = self._append(job, **kind)
        for q in job.watchers:
            q.put_nowait(None)
        self.running.discard(job.id)
        self._retain(job)
        self._wake.set()
        return event

    def _retain(self, job: JobRecord) -> None:
        """Count an ended job's bytes, then forget the oldest ended jobs beyond the count and byte limits."""
        job.retained_bytes = sum(e.ByteSize() for e in job.events)
        if job.result is not None and job.legacy:
            job.retained_bytes += job.result.ByteSize()
        self.finished[job.id] = job.retained_bytes
        self.retained_bytes += job.retained_bytes
        while self.finished and (len(self.finished) > self.max_results or self.retained_bytes > self.max_result_bytes):
            oldest = next(iter(self.finished))
            self._forget(oldest, f"evicted: the server keeps at most {self.max_results} finished jobs and "
                                 f"{self.max_result_bytes / (1 << 20):g} MiB of their results (--max-results, "
                                 "--max-result-mb), oldest first; fetch results sooner or raise the limits")

    def _forget(self, job_id: str, why: str) -> None:
        job = self.jobs.pop(job_id)
        self.retained_bytes -= self.finished.pop(job_id, 0)
        self._tombstones[job_id] = (job.owner, why)
        while len(self._tombstones) > MAX_TOMBSTONES:
            self._tombstones.popitem(last=False)

    async def _dispatch(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.queue and len(self.running) < self.sidecar.slots:
                if not self.sidecar.alive():
                    if self.sidecar.ready.is_set():  # dead, and the supervisor has not noticed yet
                        await asyncio.sleep(0.05)
                    else:
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
        started = False
        try:
            async for event in self.sidecar.stub.Run(request):
                kind = event.WhichOneof("event")
                if kind == "started":
                    started = True
                    job.started = time.time()
                    self._append(job, started=event.started)
                elif kind == "progress":
                    job.progress = pb.Progress()
                    job.progress.CopyFrom(event.progress)
                    job.progress.ClearField("preview")  # the log keeps the newest preview; one copy is enough
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
            if not started and job.requeues < MAX_REQUEUES and self._sidecar_lost(generation, e):
                job.requeues += 1  # handed to a sidecar that died before it started the job: it waits for the next one
                log.warning("job %s: the sidecar went away before starting it; queued again", job.id)
                job.state, job.task = pb.QUEUED, None
                self.running.discard(job.id)
                self.queue.appendleft(job.id)
                self._wake.set()
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
            chain = SidecarStep(self.sidecar, job.id, loop, max_side=self.max_side,
                                on_progress=lambda msg: job.state == pb.RUNNING and self._append(job, progress=msg),
                                cancelled=lambda: job.cancel_requested, started=lambda step: setattr(job, "step", step),
                                preview_interval_ms=max(job.request.preview_interval_ms, self.preview_interval_ms),
                                progress_interval_ms=self.progress_interval_ms)
            ctx = RunContext(max_side=self.max_side, infer=infer, progress=progress, cache=self.engine_cache,
                             model_parameters=lambda model: self.models.get(model).info.parameters, chain=chain)
            try:
                outcome = await loop.run_in_executor(None, run_op, job.spec, convert.op_request(job.request), ctx)
            except (_Stopped, StepCancelled):
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

    def _sidecar_lost(self, generation: int, error: Exception) -> bool:
        """Whether a failed Run call means the sidecar went away (rather than refusing the request)."""
        if self.sidecar.generation != generation or not self.sidecar.alive():
            return True
        return isinstance(error, grpc.aio.AioRpcError) and error.code() in (grpc.StatusCode.UNAVAILABLE,
                                                                            grpc.StatusCode.CANCELLED)

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
            for job_id in [j for j in self.finished if now - self.jobs[j].finished > self.result_ttl]:
                self._forget(job_id, f"expired: finished jobs are kept {self.result_ttl:g} s (--result-ttl)")
