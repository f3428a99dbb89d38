"""HTTP/JSON on a second port: the same Studio API, KServe v2 REST, health and Prometheus metrics.

Studio messages use protobuf's JSON mapping. Images never travel as base64: a request that
carries images is ``multipart/form-data`` with a ``request`` part (the JSON message) whose
Image fields say ``{"ref": "PART"}`` for an encoded file in the part of that name (or, for a
raw tensor, ``{"raw": {..., "data_ref": "PART"}}``); in replies, images are
``{"ref": "/v1/jobs/ID/files/NAME"}`` URLs to fetch as binary. Job events stream as
newline-delimited JSON (``application/x-ndjson``), one event per line.

    GET  /v1/capabilities
    POST /v1/ops/{op}                  OpRequest, multipart or JSON -> NDJSON events (?detach=1: the Job at once)
    POST /v1/paint, /v1/texture, /v1/stylize   the typed requests of the first ops, like /v1/ops/{op}
    POST /v1/render                    multipart or JSON -> image/png
    GET  /v1/jobs                      GET /v1/jobs/{id}      POST /v1/jobs/{id}/cancel
    GET  /v1/jobs/{id}/events          NDJSON: every event so far, then live ones
    GET  /v1/jobs/{id}/files/{name}    preview.png, or an output's file name (Capabilities: OutputInfo.filename;
                                       a series output's items: image.png, image.2.png, ...)
    /v2/...                            KServe v2 REST (kserve_http.py)
    GET  /metrics
"""

from __future__ import annotations

import json
import logging
import time

import grpc
from aiohttp import BodyPartReader, web
from google.protobuf import json_format
from google.protobuf.message import Message

from impasto.runtime.api import legacy
from impasto.runtime.api import studio_pb2 as pb
from impasto.runtime.api.convert import WireError
from impasto.runtime.errors import code_of, elide, http_status, message_of
from impasto.runtime.formats.jsontext import load_json
from impasto.runtime.ops.registry import Output, series_filename, series_key, split_series_key
from impasto.runtime.server.auth import OPEN_HTTP_PATHS, Principals
from impasto.runtime.server.kserve_http import KServeRoutes
from impasto.runtime.server.metrics import Metrics
from impasto.runtime.server.models import ModelPool
from impasto.runtime.server.studio import Studio

log = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"


def to_json(message: Message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def error_response(code: grpc.StatusCode, message: str) -> web.Response:
    """KServe's error body, ``{"error": "<message>"}``, with the gRPC status name beside it."""
    return web.json_response({"error": message, "code": code.name}, status=http_status(code.name))


def _strip_images(event: pb.JobEvent, filenames: dict[str, str]) -> pb.JobEvent:
    """A copy of ``event`` whose image and file bytes are replaced by URLs of the job's files.

    ``filenames`` maps the op's outputs to their file names (its definition's ``Output.filename``);
    a series output's item ``image.2`` is the file ``image.2.png``.
    """
    event = pb.JobEvent.FromString(event.SerializeToString())
    base = f"/v1/jobs/{event.job_id}/files/"
    if event.HasField("progress") and event.progress.HasField("preview"):
        event.progress.preview.ref = base + "preview.png"
    if event.HasField("op_result"):
        for field in (event.op_result.images, event.op_result.files):
            for key, image in field.items():
                name, index = (key, 1) if key in filenames else split_series_key(key)
                image.ref = base + series_filename(filenames[name], index)
    if event.HasField("image_result"):
        event.image_result.image.ref = base + filenames["image"]
    if event.HasField("result"):
        event.result.image.ref = base + filenames["image"]
        if event.result.HasField("animation"):
            event.result.animation.ref = base + filenames["animation"]
    return event


def _job_file(outputs: tuple[Output, ...], name: str) -> tuple[Output, str] | None:
    """The output and result key a job file name stands for (``image.2.png`` -> the image output, ``image.2``)."""
    for output in outputs:
        if name == output.filename:
            return output, output.name
        for base in (name.rpartition(".")[0], name):  # an index before the suffix, or at the end (no suffix)
            index = split_series_key(base)[1]
            if output.series and index > 1 and series_filename(output.filename, index) == name:
                return output, series_key(output.name, index)
    return None


def _resolve(name: str, image: pb.Image, parts: dict[str, bytes]) -> None:
    """Put the bytes of the multipart part an Image field names into it."""
    if image.WhichOneof("data") == "ref":
        if image.ref not in parts:
            raise WireError(f"{name}: multipart part '{image.ref}' is missing")
        image.encoded = parts[image.ref]
    elif image.WhichOneof("data") == "raw" and image.raw.data_ref:
        if image.raw.data_ref not in parts:
            raise WireError(f"{name}.raw: multipart part '{image.raw.data_ref}' is missing")
        image.raw.data = parts[image.raw.data_ref]
        image.raw.data_ref = ""


async def _read_parts(request: web.Request) -> tuple[bytes | None, dict[str, bytes]]:
    """The ``request`` part and the other parts, by name, of a multipart body.

    Every way a body can break its framing (no or wrong boundary, truncated, nested
    multipart, parts without names or named twice) is an InvalidArgument naming what is wrong;
    more bytes than the message limit raise aiohttp's 413, which the middleware answers.
    """
    body, parts, total = None, {}, 0
    limit = request.client_max_size
    try:
        reader = await request.multipart()
        index = 0
        async for part in reader:
            index += 1
            if not isinstance(part, BodyPartReader):
                raise WireError(f"multipart part #{index} is itself multipart; send each file as one part")
            name = part.name
            if not name:
                raise WireError(f"multipart part #{index} has no name: give it "
                                "'Content-Disposition: form-data; name=\"...\"'")
            if name in parts or (name == "request" and body is not None):
                raise WireError(f"multipart part '{elide(name)}' is given twice")
            data = bytes(await part.read(decode=False))
            total += len(data)
            if total > limit:
                raise web.HTTPRequestEntityTooLarge(limit, total)
            if name == "request":
                body = data
            else:
                parts[name] = data
    except (web.HTTPRequestEntityTooLarge, WireError, ConnectionError):
        raise  # the size limit is answered by the middleware, like every route's
    except Exception as e:  # aiohttp's framing errors (ValueError, AssertionError, ...): the body's fault
        raise WireError(f"request body is not valid multipart/form-data ({type(e).__name__}: {e})") from None
    return body, parts


async def _read_request(request: web.Request, message: Message, image_fields: tuple[str, ...] = ()) -> Message:
    """Fill ``message`` from a JSON body, or a multipart body with binary image parts.

    The JSON is read by :func:`load_json` (UTF-8, valid, at most 32 levels deep, an object),
    so a malformed body is a 400 naming what is wrong, never a 500.
    """
    parts: dict[str, bytes] = {}
    if request.content_type.startswith("multipart/"):
        body, parts = await _read_parts(request)
        what = "multipart part 'request'"
    else:
        body = await request.read()
        what = "request body"
    data = load_json(body, what, want=dict) if body else {}
    try:
        json_format.ParseDict(data, message)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as e:
        raise WireError(f"{what} is not a valid {message.DESCRIPTOR.name} in JSON: {e}") from None
    for name in image_fields:
        if message.HasField(name):
            _resolve(name, getattr(message, name), parts)
    if isinstance(message, pb.OpRequest):
        for name, image in message.images.items():
            _resolve(f"images.{name}", image, parts)
    return message


class HttpApi:
    def __init__(self, studio: Studio, models: ModelPool, metrics: Metrics, principals: Principals | str | None,
                 max_message_bytes: int, is_ready=lambda: True):
        self.studio = studio
        self.models = models
        self.metrics = metrics
        self.principals = principals if isinstance(principals, Principals) else Principals.load(principals)
        self.is_ready = is_ready
        self.app = web.Application(client_max_size=max_message_bytes, middlewares=[self._middleware])
        r = self.app.router
        r.add_get("/v1/capabilities", self.capabilities)
        r.add_post("/v1/ops/{op}", self.run)
        for op in legacy.REQUESTS:
            r.add_post(f"/v1/{op}", self.typed)
        r.add_post("/v1/render", self.render)
        r.add_get("/v1/jobs", self.list_jobs)
        r.add_get("/v1/jobs/{id}", self.get_job)
        r.add_post("/v1/jobs/{id}/cancel", self.cancel_job)
        r.add_get("/v1/jobs/{id}/events", self.watch_job)
        r.add_get("/v1/jobs/{id}/files/{name}", self.job_file)
        KServeRoutes(models, is_ready, max_message_bytes).add_to(r)
        r.add_get("/metrics", self.prometheus)

    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        start = time.perf_counter()
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
        code = grpc.StatusCode.OK
        try:
            principal = None
            if self.principals.required:
                principal = self.principals.identify(request.headers.get("Authorization"))
                if principal is None and request.path not in OPEN_HTTP_PATHS:
                    code = grpc.StatusCode.UNAUTHENTICATED
                    return error_response(code, "missing or wrong token: send 'Authorization: Bearer TOKEN'")
            request["principal"] = principal  # whose jobs this request may see (None: no tokens, everyone's)
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:  # raised by any handler's body read (and by _read_parts)
            code = grpc.StatusCode.RESOURCE_EXHAUSTED
            return error_response(code, f"the request body is over the server's message limit of "
                                        f"{request.client_max_size} bytes (--max-message-mb)")
        except web.HTTPException:
            raise
        except Exception as e:
            code = grpc.StatusCode[code_of(e) or "INTERNAL"]
            if code == grpc.StatusCode.INTERNAL:
                log.exception("internal error on %s", request.path)
            return error_response(code, message_of(e))
        finally:
            self.metrics.observe("http", f"{request.method} {route}", code.name, time.perf_counter() - start)

    # --- Studio ------------------------------------------------------------------------------

    async def capabilities(self, request):
        return web.json_response(to_json(self.studio.capabilities()))

    async def run(self, request):
        message = await _read_request(request, pb.OpRequest())
        message.op = request.match_info["op"]
        return await self._start(request, await self.studio.submit(message, principal=request["principal"]))

    async def typed(self, request):
        op = request.path.rsplit("/", 1)[1]
        kind, images = legacy.REQUESTS[op]
        message = await _read_request(request, kind(), images)
        return await self._start(request, await self.studio.submit_typed(op, message, principal=request["principal"]))

    async def _start(self, request, job):
        if request.query.get("detach") in ("1", "true"):
            return web.json_response(to_json(job.to_proto(self.studio.jobs.result_ttl)), status=202)
        return await self._stream(request, job.id)

    async def _stream(self, request, job_id: str):
        principal = request["principal"]
        filenames = {o.name: o.filename for o in self.studio.jobs.get(job_id, principal).spec.outputs}
        events = self.studio.jobs.watch(job_id, principal)
        first = await anext(events)  # NOT_FOUND raises here, before the 200 goes out
        response = web.StreamResponse(headers={"Content-Type": NDJSON, "X-Impasto-Job": job_id})
        await response.prepare(request)
        await response.write(json.dumps(to_json(_strip_images(first, filenames))).encode() + b"\n")
        async for event in events:
            await response.write(json.dumps(to_json(_strip_images(event, filenames))).encode() + b"\n")
        await response.write_eof()
        return response

    async def watch_job(self, request):
        return await self._stream(request, request.match_info["id"])

    async def render(self, request):
        message = await _read_request(request, pb.RenderRequest(), ("canvas_image",))
        reply = await self.studio.render(message)
        return web.Response(body=reply.image.encoded, content_type="image/png",
                            headers={"X-Impasto-Width": str(reply.width), "X-Impasto-Height": str(reply.height)})

    async def list_jobs(self, request):
        return web.json_response(to_json(self.studio.list_jobs(request["principal"])))

    async def get_job(self, request):
        return web.json_response(to_json(self.studio.job(request.match_info["id"], request["principal"])))

    async def cancel_job(self, request):
        return web.json_response(to_json(await self.studio.cancel(request.match_info["id"], request["principal"])))

    async def job_file(self, request):
        job = self.studio.jobs.get(request.match_info["id"], request["principal"])
        name = request.match_info["name"]
        found = _job_file(job.spec.outputs, name)
        if name != "preview.png" and found is None:
            files = ", ".join(o.filename + (" (a series: then " + series_filename(o.filename, 2) + ", ...)" if o.series
                                            else "") for o in job.spec.outputs)
            raise WireError(f"unknown job file '{name}': use one of preview.png, {files}")
        data: bytes | str | None = None
        mime = "image/png"
        if name == "preview.png":
            previews = [e.progress.preview.encoded for e in job.events if e.HasField("progress") and e.progress.HasField("preview")]
            data = previews[-1] if previews else None
        elif job.result is not None:
            (output, key), result = found, job.result
            mime = output.mime
            if output.kind == "text":
                data = result.texts.get(key)
            else:
                field = result.images if output.kind == "image" else result.files
                data = field[key].encoded if key in field else None
        if data is None:
            return error_response(grpc.StatusCode.NOT_FOUND, f"job {job.id} has no {name} (state {pb.JobState.Name(job.state)})")
        return web.Response(body=data.encode() if isinstance(data, str) else data, content_type=mime)

    async def prometheus(self, request):
        return web.Response(body=self.metrics.text(), content_type="text/plain", charset="utf-8")
