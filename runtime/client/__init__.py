"""Python client of impasto's server (gRPC): any op as a job with progress, render, job control.

    from impasto.runtime.client import StudioClient
    with StudioClient("127.0.0.1:8001") as client:
        result = client.run("paint", {"image": "photo.jpg"}, {"strokes": 300}, on_event=print)
        open("painting.png", "wb").write(result.images["image"].encoded)

``run`` takes any op that the server's Capabilities lists; ``paint``/``texture``/``stylize``
are the typed RPCs kept for existing pipelines.

Studio pipelines use this (or any gRPC client generated from ``proto/``); the Krita and
Blender add-ons use the standard-library HTTP/JSON client instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc

from impasto.runtime.api import studio_pb2 as pb
from impasto.runtime.api import studio_pb2_grpc

__all__ = ["JobFailed", "StudioClient", "op_request", "paint_request"]


class JobFailed(RuntimeError):
    """A job ended without a result: ``code`` is the status name (or CANCELLED), ``message`` says why."""

    def __init__(self, job_id: str, code: str, message: str):
        super().__init__(f"job {job_id} {'was cancelled' if code == 'CANCELLED' else 'failed'}: {message} ({code})")
        self.job_id, self.code, self.message = job_id, code, message


def _image(path: str | Path) -> pb.Image:
    return pb.Image(encoded=Path(path).read_bytes())


def op_request(op: str, images: dict[str, str | Path | bytes | pb.Image] | None = None, options: dict | None = None,
               outputs: tuple[str, ...] | list[str] = (), preview_interval_ms: int = 0) -> pb.OpRequest:
    """An OpRequest: images are file paths (sent as their bytes), bytes, or Image messages."""
    request = pb.OpRequest(op=op, outputs=list(outputs), preview_interval_ms=preview_interval_ms)
    for name, value in (images or {}).items():
        if isinstance(value, pb.Image):
            request.images[name].CopyFrom(value)
        elif isinstance(value, (bytes, bytearray)):
            request.images[name].encoded = bytes(value)
        else:
            request.images[name].CopyFrom(_image(value))
    if options:
        request.options.update(options)
    return request


def paint_request(
    image: str | Path,
    *,
    mask: str | Path | None = None,
    style: str | Path | None = None,
    canvas_image: str | Path | None = None,
    svg: bool = False,
    animation: bool = False,
    **options,
) -> pb.PaintRequest:
    """A PaintRequest from image files (sent as their encoded bytes) and PaintOptions fields."""
    request = pb.PaintRequest(image=_image(image), options=pb.PaintOptions(**options), svg=svg, animation=animation)
    for field, path in (("mask", mask), ("style", style), ("canvas_image", canvas_image)):
        if path is not None:
            getattr(request, field).CopyFrom(_image(path))
    return request


class StudioClient:
    def __init__(self, address: str, *, token: str | None = None, tls_ca: str | None = None,
                 max_message_bytes: int = 256 << 20, timeout: float | None = None):
        options = [("grpc.max_send_message_length", max_message_bytes), ("grpc.max_receive_message_length", max_message_bytes)]
        if tls_ca is not None:
            credentials = grpc.ssl_channel_credentials(Path(tls_ca).read_bytes())
            self.channel = grpc.secure_channel(address, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(address, options=options)
        self.stub = studio_pb2_grpc.StudioStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout

    def __enter__(self) -> StudioClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def capabilities(self) -> pb.CapabilitiesReply:
        return self.stub.Capabilities(pb.CapabilitiesRequest(), metadata=self.metadata, timeout=self.timeout)

    def run_events(self, request: pb.OpRequest) -> Iterator[pb.JobEvent]:
        """Start any op as a job; its events as they come (the job goes on if you stop reading)."""
        return self.stub.Run(request, metadata=self.metadata, timeout=self.timeout)

    def run(self, op: str, images: dict | None = None, options: dict | None = None, outputs=(),
            on_event: Callable[[pb.JobEvent], None] | None = None) -> pb.OpResult:
        """Run ``op`` to its end (see :func:`op_request`); raises :class:`JobFailed` if it fails or is cancelled."""
        return self.wait(self.run_events(op_request(op, images, options, outputs)), on_event)

    def paint_events(self, request: pb.PaintRequest) -> Iterator[pb.JobEvent]:
        """The job's events as they come; the job goes on if you stop reading (see ``watch``)."""
        return self.stub.Paint(request, metadata=self.metadata, timeout=self.timeout)

    def texture_events(self, request: pb.TextureRequest) -> Iterator[pb.JobEvent]:
        return self.stub.Texture(request, metadata=self.metadata, timeout=self.timeout)

    def stylize_events(self, request: pb.StylizeRequest) -> Iterator[pb.JobEvent]:
        return self.stub.Stylize(request, metadata=self.metadata, timeout=self.timeout)

    def texture(self, request: pb.TextureRequest, on_event=None) -> pb.ImageResult:
        """Run a texture job to its end (see ``paint``)."""
        return self.wait(self.texture_events(request), on_event)

    def stylize(self, request: pb.StylizeRequest, on_event=None) -> pb.ImageResult:
        return self.wait(self.stylize_events(request), on_event)

    def watch(self, job_id: str) -> Iterator[pb.JobEvent]:
        return self.stub.WatchJob(pb.JobRef(id=job_id), metadata=self.metadata, timeout=self.timeout)

    def paint(self, request: pb.PaintRequest, on_event: Callable[[pb.JobEvent], None] | None = None) -> pb.PaintResult:
        """Run a paint job to its end; raises :class:`JobFailed` if it fails or is cancelled."""
        return self.wait(self.paint_events(request), on_event)

    def wait(self, events: Iterator[pb.JobEvent], on_event: Callable[[pb.JobEvent], None] | None = None):
        """Follow a job's events to its result (OpResult, or PaintResult / ImageResult of the typed RPCs).

        Raises :class:`JobFailed` when the job fails or is cancelled.
        """
        job_id = ""
        for event in events:
            job_id = event.job_id
            if on_event:
                on_event(event)
            kind = event.WhichOneof("event")
            if kind == "result":
                return event.result
            if kind == "image_result":
                return event.image_result
            if kind == "op_result":
                return event.op_result
            if kind == "error":
                raise JobFailed(job_id, event.error.code, event.error.message)
            if kind == "cancelled":
                raise JobFailed(job_id, "CANCELLED", "cancelled on request")
        raise JobFailed(job_id, "UNAVAILABLE", "the event stream ended before the job did; re-attach with watch()")

    def render(self, strokes_json: str, size: int = 0, canvas: str = "") -> pb.RenderReply:
        return self.stub.Render(pb.RenderRequest(strokes_json=strokes_json, size=size, canvas=canvas),
                                metadata=self.metadata, timeout=self.timeout)

    def get_job(self, job_id: str) -> pb.Job:
        return self.stub.GetJob(pb.JobRef(id=job_id), metadata=self.metadata, timeout=self.timeout)

    def cancel_job(self, job_id: str) -> pb.Job:
        return self.stub.CancelJob(pb.JobRef(id=job_id), metadata=self.metadata, timeout=self.timeout)

    def list_jobs(self) -> list[pb.Job]:
        return list(self.stub.ListJobs(pb.ListJobsRequest(), metadata=self.metadata, timeout=self.timeout).jobs)
