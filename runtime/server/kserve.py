"""KServe v2 (``inference.GRPCInferenceService``) over the model pool, with tritonclient's own stubs.

``tritonclient.grpc`` and perf_analyzer work against impasto unchanged: live/ready/metadata,
ModelConfig (the repository's config.pbtxt, parsed with Triton's schema), ModelStatistics (with
Triton's per-request semantics, see ``kserve_stats``), RepositoryIndex, ModelInfer and
ModelStreamInfer. Tensors arrive as ``raw_input_contents`` or typed ``contents`` and are checked
by ``kserve_tensors`` exactly as the REST transport checks them; replies always use
``raw_output_contents``. The answers both transports share (metadata, statistics, the
repository index) are built here as protobuf messages; ``kserve_http`` serves them as JSON.
"""

from __future__ import annotations

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as kpb
from tritonclient.grpc import service_pb2_grpc

from impasto.runtime.api.convert import WireError
from impasto.runtime.errors import NotFound, code_of, message_of
from impasto.runtime.server import kserve_tensors as tensors
from impasto.runtime.server.kserve_stats import fill_model_stats
from impasto.runtime.server.models import ModelPool, ServedModel
from impasto.runtime.server.studio import version

# What impasto implements of Triton's protocol extensions (no model_repository: models cannot be loaded or unloaded)
EXTENSIONS = ["binary_tensor_data", "model_configuration", "statistics"]
PLATFORM = "onnxruntime_onnx"


def served(models: ModelPool, name: str, model_version: str = "") -> ServedModel:
    """Model ``name``, if it is served in ``model_version`` ("" or the served one), else NOT_FOUND naming both."""
    m = models.get(name)
    if model_version and model_version != str(m.info.version):
        raise NotFound(f"model '{name}' has no version '{model_version}' (served version: {m.info.version})")
    return m


def is_ready(models: ModelPool, name: str, model_version: str = "") -> bool:
    m = models.models.get(name)
    return m is not None and (not model_version or model_version == str(m.info.version))


def server_metadata() -> kpb.ServerMetadataResponse:
    return kpb.ServerMetadataResponse(name="impasto", version=version(), extensions=EXTENSIONS)


def model_metadata(m: ServedModel) -> kpb.ModelMetadataResponse:
    def meta(ts):
        return [kpb.ModelMetadataResponse.TensorMetadata(name=t.name, datatype=t.dtype, shape=[-1, *t.dims]) for t in ts]

    return kpb.ModelMetadataResponse(name=m.info.name, versions=[str(m.info.version)], platform=PLATFORM,
                                     inputs=meta(m.info.inputs), outputs=meta(m.info.outputs))


def statistics(models: ModelPool, name: str = "", model_version: str = "") -> kpb.ModelStatisticsResponse:
    """Triton's statistics of one model (``name``) or of every served model."""
    chosen = [served(models, name, model_version)] if name else [models.models[n] for n in sorted(models.models)]
    reply = kpb.ModelStatisticsResponse()
    for m in chosen:
        s = m.batcher.stats
        fill_model_stats(reply.model_stats.add(name=m.info.name, version=str(m.info.version)), m.stats, s.items, s.runs, s.by_size)
    return reply


def repository_index(models: ModelPool, ready_only: bool = False) -> kpb.RepositoryIndexResponse:
    """Every model of the repository: READY, or UNAVAILABLE with the reason it failed to load."""
    reply = kpb.RepositoryIndexResponse()
    for name in sorted({*models.models, *models.failed}):
        if name in models.models:
            reply.models.add(name=name, version=str(models.models[name].info.version), state="READY")
        elif not ready_only:
            reply.models.add(name=name, state="UNAVAILABLE", reason=models.failed[name])
    return reply


def decode_request(request: kpb.ModelInferRequest, m: ServedModel, max_bytes: int) -> dict[str, np.ndarray]:
    """The request's tensors as arrays (raw_input_contents, or typed contents), each checked by ``kserve_tensors``."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise WireError(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs")
    tensors.check_unique([t.name for t in request.inputs])
    arrays = {}
    for i, t in enumerate(request.inputs):
        dtype, shape, count = tensors.check_input(m.info, t.name, t.datatype, list(t.shape), max_bytes)
        if raw:
            if t.HasField("contents"):
                raise WireError(f"input '{t.name}': send contents or raw_input_contents, not both")
            arrays[t.name] = tensors.from_bytes(t.name, t.datatype, dtype, shape, count, raw[i])
        else:
            arrays[t.name] = tensors.from_contents(t.name, t.datatype, dtype, shape, count, t.contents)
    return arrays


class KServeServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, models: ModelPool, is_ready=lambda: True, max_message_bytes: int = tensors.DEFAULT_MAX_BYTES):
        self.models = models
        self.is_ready = is_ready
        self.max_bytes = max_message_bytes

    async def _fail(self, context, error: Exception):
        await context.abort(grpc.StatusCode[code_of(error) or "INTERNAL"], message_of(error))

    async def ServerLive(self, request, context):
        return kpb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return kpb.ServerReadyResponse(ready=bool(self.is_ready()))

    async def ModelReady(self, request, context):
        return kpb.ModelReadyResponse(ready=is_ready(self.models, request.name, request.version))

    async def ServerMetadata(self, request, context):
        return server_metadata()

    async def ModelMetadata(self, request, context):
        try:
            return model_metadata(served(self.models, request.name, request.version))
        except Exception as e:
            await self._fail(context, e)

    async def ModelConfig(self, request, context):
        try:
            return kpb.ModelConfigResponse(config=served(self.models, request.name, request.version).info.config)
        except Exception as e:
            await self._fail(context, e)

    async def ModelStatistics(self, request, context):
        try:
            return statistics(self.models, request.name, request.version)
        except Exception as e:
            await self._fail(context, e)

    async def RepositoryIndex(self, request, context):
        return repository_index(self.models, request.ready)

    async def _infer(self, request: kpb.ModelInferRequest) -> kpb.ModelInferResponse:
        m = served(self.models, request.model_name, request.model_version)
        wanted = tensors.check_outputs(m.info, [o.name for o in request.outputs])

        def encode(outputs: dict[str, np.ndarray]) -> kpb.ModelInferResponse:
            reply = kpb.ModelInferResponse(model_name=m.info.name, model_version=str(m.info.version), id=request.id)
            for name in wanted:
                array = np.ascontiguousarray(outputs[name])
                reply.outputs.add(name=name, datatype=tensors.kserve_datatype(array), shape=list(array.shape))
                reply.raw_output_contents.append(array.tobytes())
            return reply

        return await m.serve(lambda: decode_request(request, m, self.max_bytes), encode)

    async def ModelInfer(self, request, context):
        try:
            return await self._infer(request)
        except Exception as e:
            await self._fail(context, e)

    async def ModelStreamInfer(self, request_iterator, context):
        async for request in request_iterator:
            try:
                yield kpb.ModelStreamInferResponse(infer_response=await self._infer(request))
            except Exception as e:  # a stream reports errors per request and goes on
                yield kpb.ModelStreamInferResponse(error_message=message_of(e),
                                                   infer_response=kpb.ModelInferResponse(id=request.id))
