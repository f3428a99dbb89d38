"""An engine job's step that runs on the sidecar: the server's ``RunContext.chain``.

Some ops are a feed-forward model followed by an optimisation (``warp --style``: the warper on
the engine, then ``stylize``). The first part runs in the engine job's worker thread here; the
second is an op of its own that belongs in the torch sidecar, for the reasons the sidecar
exists (GPU memory, crashes and long runs kept out of the serving process). :class:`SidecarStep`
is the callable an engine job's context gets as ``chain``: it sends the step to the sidecar as
a ``RunRequest`` (images as raw float32 tensors, nothing lost to 8-bit on the way in), forwards
the step's progress as the job's own, and gives back the step's :class:`OpOutcome`.

The step runs inside the job's place among the running jobs (an engine job already counts
against the sidecar's slots), it is cancelled with its job, and a sidecar that dies under it
fails the job with UNAVAILABLE, as for any sidecar job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import grpc
import torch
from google.protobuf import json_format, struct_pb2

from impasto.runtime.api import convert
from impasto.runtime.api import sidecar_pb2 as spb
from impasto.runtime.api import studio_pb2 as pb
from impasto.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from impasto.runtime.ops.registry import OpOutcome
from impasto.runtime.server.supervisor import Sidecar

log = logging.getLogger(__name__)

# a step's error status -> the exception the job fails with (so it keeps its status); others are INTERNAL
ERRORS: dict[str, type[Exception]] = {
    "INVALID_ARGUMENT": InvalidArgument, "NOT_FOUND": NotFound, "RESOURCE_EXHAUSTED": ResourceExhausted,
    "FAILED_PRECONDITION": FailedPrecondition, "UNAVAILABLE": Unavailable,
}


class StepFailed(RuntimeError):
    """A chained step that failed with an internal error on the sidecar (its message is the sidecar's)."""


class StepCancelled(Exception):
    """The job was cancelled while its chained step ran."""


def raw_image(image: torch.Tensor) -> pb.Image:
    """A (C, H, W) tensor in [0, 1] as a raw float32 Image message (row-major HWC, sRGB, top row first)."""
    c, h, w = image.shape
    data = image.detach().float().clamp(0, 1).permute(1, 2, 0).contiguous().numpy().tobytes()
    return pb.Image(raw=pb.RawImage(width=w, height=h, channels=c, dtype=pb.DTYPE_F32, data=data))


def step_request(name: str, images: dict[str, torch.Tensor], options: dict[str, Any]) -> pb.OpRequest:
    """The wire request of a chained step: its images raw, its options as a Struct."""
    request = pb.OpRequest(op=name)
    for slot, image in images.items():
        request.images[slot].CopyFrom(raw_image(image))
    struct = struct_pb2.Struct()
    json_format.ParseDict(options, struct)
    request.options.CopyFrom(struct)
    return request


def outcome_of(result: pb.OpResult, max_side: int) -> OpOutcome:
    """An OpResult read back into values (images as (3, H, W) tensors, texts, file bytes) and numbers."""
    values: dict[str, Any] = {key: convert.image_to_tensor(msg, key, max_side) for key, msg in result.images.items()}
    values.update(result.texts)
    values.update({key: msg.encoded for key, msg in result.files.items()})
    return OpOutcome(values, dict(result.numbers))


class SidecarStep:
    """``chain(name, images, options) -> OpOutcome`` for one engine job, called from its worker thread.

    ``on_progress(progress)`` gets each of the step's progress messages (the job appends them to
    its log); ``cancelled()`` says whether the job was cancelled; ``started(step_id)`` tells the job
    which sidecar job id to cancel meanwhile.
    """

    def __init__(self, sidecar: Sidecar, job_id: str, loop: asyncio.AbstractEventLoop, *, max_side: int,
                 on_progress: Callable[[pb.Progress], None], cancelled: Callable[[], bool],
                 started: Callable[[str | None], None], preview_interval_ms: int = 0, progress_interval_ms: int = 0):
        self.sidecar, self.job_id, self.loop, self.max_side = sidecar, job_id, loop, max_side
        self.on_progress, self.cancelled, self.started = on_progress, cancelled, started
        self.preview_interval_ms, self.progress_interval_ms = preview_interval_ms, progress_interval_ms
        self.steps = 0

    def __call__(self, name: str, images: dict[str, torch.Tensor], options: dict[str, Any]) -> OpOutcome:
        if self.cancelled():
            raise StepCancelled()
        return asyncio.run_coroutine_threadsafe(self._run(name, images, options), self.loop).result()

    async def _run(self, name: str, images: dict[str, torch.Tensor], options: dict[str, Any]) -> OpOutcome:
        self.steps += 1
        step_id = f"{self.job_id}.{self.steps}.{name}"
        request = spb.RunRequest(job_id=step_id, request=step_request(name, images, options), max_side=self.max_side,
                                 preview_interval_ms=self.preview_interval_ms,
                                 progress_interval_ms=self.progress_interval_ms)
        if not self.sidecar.alive():
            await self.sidecar.ready.wait()
        self.started(step_id)
        try:
            async for event in self.sidecar.stub.Run(request):
                kind = event.WhichOneof("event")
                if kind == "progress":
                    self.on_progress(event.progress)
                elif kind == "op_result":
                    return outcome_of(event.op_result, self.max_side)
                elif kind == "error":
                    raise ERRORS.get(event.error.code, StepFailed)(f"{name} (on the sidecar): {event.error.message}")
                elif kind == "cancelled":
                    raise StepCancelled()
        except grpc.aio.AioRpcError as e:
            if self.cancelled():
                raise StepCancelled() from None
            raise Unavailable(f"the sidecar went away during the {name} step ({e.code().name}); the job failed, "
                              "the server restarts the sidecar: run it again") from None
        finally:
            self.started(None)
        raise StepFailed(f"the sidecar ended the {name} step without a result")
