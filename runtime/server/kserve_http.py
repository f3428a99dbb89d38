"""KServe v2 REST (Triton's HTTP protocol) over the model pool: health, metadata, config, infer.

The routes are added to the HTTP API's router by :class:`KServeRoutes`; errors are raised as
the error taxonomy and answered by the HTTP API's middleware as ``{"error": "<message>"}``.
"""

from __future__ import annotations

import numpy as np
from aiohttp import web
from google.protobuf import json_format

from impasto.runtime.api.convert import WireError
from impasto.runtime.server.kserve import DATATYPES, NUMPY_TO_KSERVE
from impasto.runtime.server.models import ModelPool
from impasto.runtime.server.studio import version


class KServeRoutes:
    def __init__(self, models: ModelPool, is_ready=lambda: True):
        self.models = models
        self.is_ready = is_ready

    def add_to(self, r: web.UrlDispatcher) -> None:
        r.add_get("/v2/health/live", self.live)
        r.add_get("/v2/health/ready", self.ready)
        r.add_get("/v2", self.server_metadata)
        r.add_get("/v2/models/{model}", self.model_metadata)
        r.add_get("/v2/models/{model}/ready", self.model_ready)
        r.add_get("/v2/models/{model}/config", self.model_config)
        r.add_post("/v2/models/{model}/infer", self.infer)

    async def live(self, request):
        return web.json_response({"live": True})

    async def ready(self, request):
        ready = bool(self.is_ready())
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def server_metadata(self, request):
        return web.json_response({"name": "impasto", "version": version(), "extensions": ["model_configuration", "statistics"]})

    async def model_metadata(self, request):
        m = self.models.get(request.match_info["model"])

        def tensors(ts):
            return [{"name": t.name, "datatype": t.dtype, "shape": [-1, *t.dims]} for t in ts]

        return web.json_response({"name": m.info.name, "versions": [str(m.info.version)], "platform": "onnxruntime_onnx",
                                  "inputs": tensors(m.info.inputs), "outputs": tensors(m.info.outputs)})

    async def model_ready(self, request):
        ready = request.match_info["model"] in self.models.models
        return web.json_response({"name": request.match_info["model"], "ready": ready}, status=200 if ready else 400)

    async def model_config(self, request):
        m = self.models.get(request.match_info["model"])
        return web.json_response(json_format.MessageToDict(m.info.config, preserving_proto_field_name=True))

    async def infer(self, request):
        m = self.models.get(request.match_info["model"])
        try:
            body = await request.json()
        except ValueError:
            raise WireError("the infer request body is not JSON") from None
        arrays = {}
        for tensor in body.get("inputs", []):
            try:
                name, datatype, shape, data = tensor["name"], tensor["datatype"], tensor["shape"], tensor["data"]
            except (KeyError, TypeError):
                raise WireError("each input needs name, datatype, shape and data") from None
            if datatype not in DATATYPES:
                raise WireError(f"input '{name}': datatype '{datatype}' is not supported")
            try:
                arrays[name] = np.asarray(data, dtype=DATATYPES[datatype][0]).reshape(shape)
            except (ValueError, TypeError) as e:
                raise WireError(f"input '{name}': data does not fit shape {shape}: {e}") from None
        outputs = await m.infer(arrays)
        wanted = [o["name"] for o in body.get("outputs", [])] or [t.name for t in m.info.outputs]
        result = []
        for name in wanted:
            if name not in outputs:
                raise WireError(f"model '{m.info.name}' has no output '{name}'")
            a = outputs[name]
            result.append({"name": name, "datatype": NUMPY_TO_KSERVE[a.dtype.str], "shape": list(a.shape), "data": a.ravel().tolist()})
        return web.json_response({"model_name": m.info.name, "model_version": str(m.info.version),
                                  "id": body.get("id", ""), "outputs": result})
