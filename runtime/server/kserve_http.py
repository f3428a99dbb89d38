"""KServe v2 REST (Triton's HTTP protocol) over the model pool, with the binary tensor data extension.

Routes (each ``/v2/models/{m}/...`` route also exists as ``/v2/models/{m}/versions/{v}/...``;
a version other than the served one is a NOT_FOUND naming both)::

    GET  /v2/health/live   /v2/health/ready   /v2
    GET  /v2/models/{m}   .../ready   .../config   .../stats      GET /v2/models/stats
    POST /v2/models/{m}/infer                                      POST /v2/repository/index

Any other path under ``/v2`` answers a JSON 404. Errors are raised as the error taxonomy and
answered by the HTTP API's middleware as ``{"error": "<message>"}``. JSON replies built from
Triton's protobuf messages print 64-bit integers as JSON numbers (protobuf's JSON mapping
would quote them) and every field, as Triton does.

Binary tensor data (on by default in tritonclient): with an ``Inference-Header-Content-Length: N``
header, the body's first N bytes are the JSON request and the rest the concatenated raw bytes
of the inputs whose ``parameters.binary_data_size`` says how many bytes are theirs, in order.
Outputs come back as raw bytes when the output's ``parameters.binary_data`` is true, or, for
outputs without that parameter, when the request's ``parameters.binary_data_output`` is; the
reply is then the JSON header followed by the outputs' bytes, and carries the header's length
in ``Inference-Header-Content-Length``.
"""

from __future__ import annotations

import json

import numpy as np
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from impasto.runtime.api.convert import WireError
from impasto.runtime.errors import NotFound
from impasto.runtime.server import kserve
from impasto.runtime.server import kserve_tensors as tensors
from impasto.runtime.server.models import ModelPool, ServedModel

HEADER = "Inference-Header-Content-Length"
_INT64 = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
          FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64}


def _numbers(value: dict, descriptor: Descriptor) -> None:
    """Turn the quoted 64-bit integers of protobuf's JSON mapping back into JSON numbers, in place."""
    for f in descriptor.fields:
        if f.name not in value:
            continue
        v = value[f.name]
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            inner = f.message_type.fields_by_name["value"]
            for k in v:
                if inner.message_type is not None:
                    _numbers(v[k], inner.message_type)
                elif inner.type in _INT64:
                    v[k] = int(v[k])
        elif f.message_type is not None:
            for item in (v if isinstance(v, list) else [v]):
                _numbers(item, f.message_type)
        elif f.type in _INT64:
            value[f.name] = [int(x) for x in v] if isinstance(v, list) else int(v)


def message_json(message: Message) -> dict:
    """``message`` as Triton's HTTP server writes it: field names as in the proto, every field, 64-bit ints as numbers."""
    value = json_format.MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    _numbers(value, message.DESCRIPTOR)
    return value


def _parameters(where: str, entry: dict) -> dict:
    parameters = entry.get("parameters", {})
    if not isinstance(parameters, dict):
        raise WireError(f"{where}.parameters must be an object, got {type(parameters).__name__}")
    for key in parameters:
        if key.startswith("shared_memory") or key == "classification":
            raise WireError(f"{where}.parameters.{key}: impasto does not support shared memory or classification")
    return parameters


def parse_infer_body(body: bytes, header_length: str | None) -> tuple[dict, memoryview]:
    """(the JSON request, the binary data after it) of a REST infer body; 400 for anything malformed."""
    binary = memoryview(b"")
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            n = -1
        if not 0 <= n <= len(body):
            raise WireError(f"{HEADER} is {header_length!r}: it must be a byte count between 0 and the body's {len(body)}")
        body, binary = body[:n], memoryview(body)[n:]
    try:
        request = json.loads(body)
    except RecursionError:
        raise WireError("the infer request body is not valid JSON: it is nested too deeply") from None
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise WireError(f"the infer request body is not valid JSON: {e}") from None
    if not isinstance(request, dict):
        raise WireError(f"the infer request body must be a JSON object, got {type(request).__name__}")
    return request, binary


def decode_inputs(request: dict, binary: memoryview, m: ServedModel, max_bytes: int) -> dict[str, np.ndarray]:
    """The inputs of a parsed REST infer request, JSON ``data`` or binary, checked by ``kserve_tensors``."""
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise WireError(f"inputs must be a non-empty list of tensors, got {json.dumps(inputs)[:80]}")
    arrays, offset = {}, 0
    for i, entry in enumerate(inputs):
        where = f"inputs[{i}]"
        if not isinstance(entry, dict):
            raise WireError(f"{where} must be an object with name, datatype, shape and data, got {type(entry).__name__}")
        name = entry.get("name")
        if not isinstance(name, str):
            raise WireError(f"{where}.name must be a string, got {name!r}"[:200])
        if name in arrays:
            raise WireError(f"input '{name}' is sent twice")
        dtype, shape, count = tensors.check_input(m.info, name, entry.get("datatype"), entry.get("shape"), max_bytes)
        size = _parameters(where, entry).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise WireError(f"input '{name}': parameters.binary_data_size must be a byte count, got {size!r}")
            if offset + size > len(binary):
                raise WireError(f"input '{name}': binary_data_size {size} runs past the end of the body's "
                                f"{len(binary)} bytes of binary data (from byte {offset})")
            arrays[name] = tensors.from_bytes(name, entry["datatype"], dtype, shape, count, binary[offset:offset + size])
            offset += size
        elif "data" in entry:
            arrays[name] = tensors.from_json(name, entry["datatype"], dtype, shape, count, entry["data"])
        else:
            raise WireError(f"input '{name}': give data, or parameters.binary_data_size with binary data after the JSON")
    if offset != len(binary):
        raise WireError(f"{len(binary) - offset} bytes of binary data after the last input's (binary_data_size adds up to {offset})")
    return arrays


def requested_outputs(request: dict, m: ServedModel) -> list[tuple[str, bool]]:
    """(output name, as binary?) for each output to return, checked before anything runs."""
    binary_default = _parameters("request", request).get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise WireError(f"parameters.binary_data_output must be true or false, got {binary_default!r}")
    entries = request.get("outputs", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("name"), str) for e in entries):
        raise WireError("outputs must be a list of objects with a name")
    names = tensors.check_outputs(m.info, [e["name"] for e in entries])
    flags = {}
    for i, e in enumerate(entries):
        flag = _parameters(f"outputs[{i}]", e).get("binary_data", binary_default)
        if not isinstance(flag, bool):
            raise WireError(f"outputs[{i}].parameters.binary_data must be true or false, got {flag!r}")
        flags[e["name"]] = flag
    return [(n, flags.get(n, binary_default)) for n in names]


def encode_reply(m: ServedModel, request_id: str, outputs: dict[str, np.ndarray], wanted: list[tuple[str, bool]]) -> web.Response:
    """The REST infer reply: JSON, or JSON header + raw output bytes when any output is binary."""
    described, chunks = [], []
    for name, binary in wanted:
        a = np.ascontiguousarray(outputs[name])
        entry: dict = {"name": name, "datatype": tensors.kserve_datatype(a), "shape": list(a.shape)}
        if binary:
            data = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
            entry["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        else:
            entry["data"] = a.ravel().tolist()
        described.append(entry)
    reply = {"model_name": m.info.name, "model_version": str(m.info.version), "outputs": described}
    if request_id:
        reply["id"] = request_id
    header = json.dumps(reply).encode()
    if not chunks:
        return web.Response(body=header, content_type="application/json")
    return web.Response(body=b"".join([header, *chunks]), content_type="application/octet-stream",
                        headers={HEADER: str(len(header))})


class KServeRoutes:
    def __init__(self, models: ModelPool, is_ready=lambda: True, max_message_bytes: int = tensors.DEFAULT_MAX_BYTES):
        self.models = models
        self.is_ready = is_ready
        self.max_bytes = max_message_bytes

    def add_to(self, r: web.UrlDispatcher) -> None:
        r.add_get("/v2/health/live", self.live)
        r.add_get("/v2/health/ready", self.ready)
        r.add_get("/v2", self.server_metadata)
        r.add_post("/v2/repository/index", self.repository_index)
        r.add_get("/v2/models/stats", self.stats)
        for base in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
            r.add_get(base, self.model_metadata)
            r.add_get(base + "/ready", self.model_ready)
            r.add_get(base + "/config", self.model_config)
            r.add_get(base + "/stats", self.stats)
            r.add_post(base + "/infer", self.infer)
        r.add_route("*", "/v2/{tail:.*}", self.unknown)

    def _model(self, request: web.Request) -> ServedModel:
        return kserve.served(self.models, request.match_info["model"], request.match_info.get("version", ""))

    async def unknown(self, request):
        raise NotFound(f"no KServe route {request.method} {request.path}")

    async def live(self, request):
        return web.json_response({"live": True})

    async def ready(self, request):
        ready = bool(self.is_ready())
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def server_metadata(self, request):
        return web.json_response(message_json(kserve.server_metadata()))

    async def model_metadata(self, request):
        return web.json_response(message_json(kserve.model_metadata(self._model(request))))

    async def model_ready(self, request):
        name = request.match_info["model"]
        ready = kserve.is_ready(self.models, name, request.match_info.get("version", ""))
        return web.json_response({"name": name, "ready": ready}, status=200 if ready else 400)

    async def model_config(self, request):
        return web.json_response(message_json(self._model(request).info.config))

    async def stats(self, request):
        name = request.match_info.get("model", "")
        return web.json_response(message_json(kserve.statistics(self.models, name, request.match_info.get("version", ""))))

    async def repository_index(self, request):
        body = await request.read()
        try:
            options = json.loads(body) if body.strip() else {}
        except (ValueError, RecursionError):
            raise WireError("the repository index request body is not valid JSON") from None
        ready = options.get("ready", False) if isinstance(options, dict) else None
        if not isinstance(ready, bool):
            raise WireError(f"the repository index request must be a JSON object with an optional boolean 'ready', got {body[:80]!r}")
        return web.json_response([message_json(e) for e in kserve.repository_index(self.models, ready).models])

    async def infer(self, request):
        m = self._model(request)
        with m.batcher.arriving():  # a batch forming now may wait for this request (at most its queue delay)
            body = await request.read()  # over the message limit: the HTTP API's middleware answers 429
        parsed, binary = parse_infer_body(body, request.headers.get(HEADER))
        request_id = parsed.get("id", "")
        if not isinstance(request_id, str):
            raise WireError(f"id must be a string, got {request_id!r}"[:200])
        wanted = requested_outputs(parsed, m)
        response = await m.serve(lambda: decode_inputs(parsed, binary, m, self.max_bytes),
                                 lambda outputs: encode_reply(m, request_id, outputs, wanted))
        if request.headers.get("Accept-Encoding"):
            response.enable_compression()
        return response
