"""The ``impasto.v1.Studio`` service: capabilities, op jobs (Run and its typed aliases), render, job control.

The servicer's methods hold the logic once; the gRPC handlers below and the HTTP/JSON
routes (``http.py``) both call them, so the two transports cannot drift apart.
"""

from __future__ import annotations

import asyncio
import logging
from importlib import metadata

import grpc

from impasto.runtime.api import convert, legacy
from impasto.runtime.api import sidecar_pb2 as spb
from impasto.runtime.api import studio_pb2 as pb
from impasto.runtime.api import studio_pb2_grpc
from impasto.runtime.backends import available_backends
from impasto.runtime.errors import Unavailable, code_of, from_status, message_of
from impasto.runtime.ops.paint import MAX_STROKES
from impasto.runtime.ops.registry import OpSpec, RunContext, get_op, list_ops
from impasto.runtime.ops.request import prepare
from impasto.runtime.server.auth import PRINCIPAL
from impasto.runtime.server.jobs import JobManager, JobRecord
from impasto.runtime.server.models import ModelPool
from impasto.runtime.sidecar.render import check_render
from impasto.train.brushes import BRUSHES, get_brush

log = logging.getLogger(__name__)

RENDER_WAIT_SECONDS = 30  # how long a render waits for a (re)starting sidecar


def version() -> str:
    try:
        return metadata.version("impasto")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class Studio:
    """What the Studio API does, independent of the transport."""

    def __init__(self, jobs: JobManager, models: ModelPool, *, max_side: int, max_message_bytes: int):
        self.jobs = jobs
        self.models = models
        self.max_side = max_side
        self.max_message_bytes = max_message_bytes

    def capabilities(self) -> pb.CapabilitiesReply:
        reply = pb.CapabilitiesReply(version=version())
        reply.ops.extend(convert.op_info(get_op(name)) for name in list_ops())
        reply.ops.add(name="render", help="render saved strokes (impasto.strokes JSON) at any size",
                      description="the synchronous Render RPC (POST /v1/render): no job",
                      options=[pb.OptionInfo(name="size", type="int", default="0", min=0, max=self.max_side,
                                             help="longer side, px (0: the painting's own size)"),
                               pb.OptionInfo(name="canvas", type="string", default="",
                                             help="override the background: black, white or #rrggbb")])
        for name in BRUSHES:
            reply.brushes.add(name=name, fields=list(get_brush(name).schema.fields))
        for name, m in sorted(self.models.models.items()):
            reply.models.add(name=name, backend=m.backend.name, description=m.info.parameters.get("impasto.description", ""),
                             parameters=m.info.parameters)
        for name, why in available_backends().items():
            reply.backends.add(name=name, available=not why, reason=why)
        status = self.jobs.sidecar.status
        reply.devices.append(status.device if status else "unavailable")
        reply.limits.CopyFrom(pb.Limits(max_side=self.max_side, max_strokes=MAX_STROKES, max_jobs=self.jobs.max_jobs,
                                        max_message_bytes=self.max_message_bytes, result_ttl_seconds=self.jobs.result_ttl))
        return reply

    async def submit(self, request: pb.OpRequest, legacy: bool = False, principal: str | None = None) -> JobRecord:
        """Check the request against its op's definition, then queue it as a job owned by ``principal``.

        Images are measured from their headers here; pixels are decoded only where the op
        runs (the sidecar for torch ops). Raises the taxonomy's InvalidArgument / NotFound.
        """
        spec = get_op(request.op)
        await asyncio.get_running_loop().run_in_executor(None, self._check, spec, request)
        return self.jobs.submit(spec, request, legacy, owner=principal)

    def _check(self, spec: OpSpec, request: pb.OpRequest) -> None:
        op_request = convert.op_request(request)
        options, _ = prepare(spec, op_request, RunContext(max_side=self.max_side))
        missing = [m for m in spec.models_for(options, op_request.images) if m not in self.models.models]
        if missing:
            raise convert.WireError(f"op '{spec.name}' needs model '{missing[0]}', which this server does not serve "
                                    "(export it into the model repository: `impasto export`)")

    async def submit_typed(self, op: str, request, principal: str | None = None) -> JobRecord:
        """A Paint/Texture/Stylize request: the same job as Run, answered with the typed result."""
        return await self.submit(legacy.to_op_request(op, request), legacy=True, principal=principal)

    async def render(self, request: pb.RenderRequest) -> pb.RenderReply:
        """Check the request's headers here, then render in the sidecar (which decodes and allocates).

        Nothing of the request is decoded in the server process: a small file declaring a
        huge canvas picture, or a render of gigabytes, can only cost the sidecar.
        """
        await asyncio.get_running_loop().run_in_executor(None, check_render, request, self.max_side)
        sidecar = self.jobs.sidecar
        try:
            await asyncio.wait_for(sidecar.ready.wait(), RENDER_WAIT_SECONDS)
        except TimeoutError:
            raise Unavailable(f"no sidecar to render in (waited {RENDER_WAIT_SECONDS} s); try again") from None
        try:
            return await sidecar.stub.Render(spb.RenderJob(request=request, max_side=self.max_side))
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.UNAVAILABLE:
                raise Unavailable(f"the sidecar went away during the render: {e.details()}") from None
            raise from_status(e.code().name, e.details() or "") from None

    # job control: ``principal`` is the caller's (auth.py); another principal's jobs are NOT_FOUND to it

    def job(self, job_id: str, principal: str | None = None) -> pb.Job:
        return self.jobs.get(job_id, principal).to_proto(self.jobs.result_ttl)

    async def cancel(self, job_id: str, principal: str | None = None) -> pb.Job:
        record = await self.jobs.cancel(job_id, principal)
        return record.to_proto(self.jobs.result_ttl)

    def list_jobs(self, principal: str | None = None) -> pb.ListJobsReply:
        return pb.ListJobsReply(jobs=[j.to_proto(self.jobs.result_ttl) for j in self.jobs.list(principal)])


async def _abort(context, error: Exception):
    code = code_of(error)
    if code is None:
        log.exception("internal error", exc_info=error)
        await context.abort(grpc.StatusCode.INTERNAL, message_of(error))
    await context.abort(grpc.StatusCode[code], message_of(error))


class StudioServicer(studio_pb2_grpc.StudioServicer):
    """gRPC handlers over :class:`Studio`."""

    def __init__(self, studio: Studio):
        self.studio = studio

    async def Capabilities(self, request, context):
        return self.studio.capabilities()

    async def _job(self, submit, context):
        try:
            job = await submit
        except Exception as e:
            await _abort(context, e)
        async for event in self.studio.jobs.watch(job.id, job.owner):
            yield event

    async def Run(self, request, context):
        async for event in self._job(self.studio.submit(request, principal=PRINCIPAL.get()), context):
            yield event

    async def Paint(self, request, context):
        async for event in self._job(self.studio.submit_typed("paint", request, PRINCIPAL.get()), context):
            yield event

    async def Texture(self, request, context):
        async for event in self._job(self.studio.submit_typed("texture", request, PRINCIPAL.get()), context):
            yield event

    async def Stylize(self, request, context):
        async for event in self._job(self.studio.submit_typed("stylize", request, PRINCIPAL.get()), context):
            yield event

    async def WatchJob(self, request, context):
        try:
            events = self.studio.jobs.watch(request.id, PRINCIPAL.get())
            first = await anext(events)
        except Exception as e:
            await _abort(context, e)
        yield first
        async for event in events:
            yield event

    async def Render(self, request, context):
        try:
            return await self.studio.render(request)
        except Exception as e:
            await _abort(context, e)

    async def GetJob(self, request, context):
        try:
            return self.studio.job(request.id, PRINCIPAL.get())
        except Exception as e:
            await _abort(context, e)

    async def CancelJob(self, request, context):
        try:
            return await self.studio.cancel(request.id, PRINCIPAL.get())
        except Exception as e:
            await _abort(context, e)

    async def ListJobs(self, request, context):
        return self.studio.list_jobs(PRINCIPAL.get())
