"""KServe v2 (``inference.GRPCInferenceService``) over the model pool, with tritonclient's own stubs.

``tritonclient.grpc`` (and perf_analyzer-style tools) work against impasto unchanged:
live/ready/metadata, ModelConfig (the repository's config.pbtxt, parsed with Triton's
schema), ModelStatistics, ModelInfer and ModelStreamInfer. Tensors arrive as
``raw_input_contents`` or typed ``contents``; replies always use ``raw_output_contents``.
"""

from __future__ import annotations

import time

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as kpb
from tritonclient.grpc import service_pb2_grpc

from impasto.runtime.api.convert import WireError
from impasto.runtime.errors import code_of, message_of
from impasto.runtime.server.models import ModelPool
from impasto.runtime.server.studio import version

# KServe datatype -> (numpy dtype, InferTensorContents field)
DATATYPES = {
    "FP32": (np.float32, "fp32_contents"), "FP64": (np.float64, "fp64_contents"), "FP16": (np.float16, None),
    "INT64": (np.int64, "int64_contents"), "INT32": (np.int32, "int_contents"), "INT16": (np.int16, "int_contents"),
    "INT8": (np.int8, "int_contents"), "UINT8": (np.uint8, "uint_contents"), "UINT16": (np.uint16, "uint_contents"),
    "UINT32": (np.uint32, "uint_contents"), "UINT64": (np.uint64, "uint64_contents"), "BOOL": (np.bool_, "bool_contents"),
}
NUMPY_TO_KSERVE = {np.dtype(v[0]).str: k for k, v in DATATYPES.items()}


def decode_inputs(request: kpb.ModelInferRequest) -> dict[str, np.ndarray]:
    """The request's tensors as arrays (raw_input_contents, or typed contents), checked against their shapes."""
    arrays = {}
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise WireError(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs")
    for i, tensor in enumerate(request.inputs):
        if tensor.datatype not in DATATYPES:
            raise WireError(f"input '{tensor.name}': datatype '{tensor.datatype}' is not supported")
        dtype, field = DATATYPES[tensor.datatype]
        shape = tuple(int(d) for d in tensor.shape)
        if any(d < 0 for d in shape):
            raise WireError(f"input '{tensor.name}': shape {list(shape)} has negative dims")
        count = int(np.prod(shape)) if shape else 1
        if raw:
            data = raw[i]
            if len(data) != count * np.dtype(dtype).itemsize:
                raise WireError(f"input '{tensor.name}': {len(data)} bytes for shape {list(shape)} {tensor.datatype} "
                                f"(needs {count * np.dtype(dtype).itemsize})")
            array = np.frombuffer(data, dtype=dtype)
        else:
            if field is None:
                raise WireError(f"input '{tensor.name}': {tensor.datatype} must be sent as raw_input_contents")
            values = getattr(tensor.contents, field)
            if len(values) != count:
                raise WireError(f"input '{tensor.name}': {len(values)} values for shape {list(shape)}")
            array = np.asarray(values, dtype=dtype)
        arrays[tensor.name] = array.reshape(shape)
    return arrays


class KServeServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, models: ModelPool, is_ready=lambda: True):
        self.models = models
        self.is_ready = is_ready
        self.last_inference: dict[str, int] = {}

    async def _fail(self, context, error: Exception):
        await context.abort(grpc.StatusCode[code_of(error) or "INTERNAL"], message_of(error))

    async def ServerLive(self, request, context):
        return kpb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return kpb.ServerReadyResponse(ready=bool(self.is_ready()))

    async def ModelReady(self, request, context):
        return kpb.ModelReadyResponse(ready=request.name in self.models.models)

    async def ServerMetadata(self, request, context):
        return kpb.ServerMetadataResponse(name="impasto", version=version(), extensions=["model_configuration", "statistics"])

    async def ModelMetadata(self, request, context):
        try:
            m = self.models.get(request.name)
        except Exception as e:
            await self._fail(context, e)
        return kpb.ModelMetadataResponse(
            name=m.info.name, versions=[str(m.info.version)], platform="onnxruntime_onnx",
            inputs=[kpb.ModelMetadataResponse.TensorMetadata(name=t.name, datatype=t.dtype, shape=[-1, *t.dims]) for t in m.info.inputs],
            outputs=[kpb.ModelMetadataResponse.TensorMetadata(name=t.name, datatype=t.dtype, shape=[-1, *t.dims]) for t in m.info.outputs],
        )

    async def ModelConfig(self, request, context):
        try:
            m = self.models.get(request.name)
        except Exception as e:
            await self._fail(context, e)
        return kpb.ModelConfigResponse(config=m.info.config)

    async def ModelStatistics(self, request, context):
        names = [request.name] if request.name else sorted(self.models.models)
        reply = kpb.ModelStatisticsResponse()
        for name in names:
            try:
                m = self.models.get(name)
            except Exception as e:
                await self._fail(context, e)
            s = m.batcher.stats
            stat = reply.model_stats.add(name=name, version=str(m.info.version), last_inference=self.last_inference.get(name, 0),
                                         inference_count=s.items, execution_count=s.runs)
            stat.inference_stats.success.count = s.items
            stat.inference_stats.success.ns = int((s.run_seconds + s.queue_seconds) * 1e9)
            stat.inference_stats.fail.count = s.failures
            stat.inference_stats.queue.count = s.items
            stat.inference_stats.queue.ns = int(s.queue_seconds * 1e9)
            stat.inference_stats.compute_infer.count = s.runs
            stat.inference_stats.compute_infer.ns = int(s.run_seconds * 1e9)
        return reply

    async def _infer(self, request: kpb.ModelInferRequest) -> kpb.ModelInferResponse:
        m = self.models.get(request.model_name)
        if request.model_version and request.model_version != str(m.info.version):
            raise WireError(f"model '{request.model_name}' has version {m.info.version}, not {request.model_version}")
        outputs = await m.infer(decode_inputs(request))
        self.last_inference[m.info.name] = int(time.time() * 1000)
        wanted = [o.name for o in request.outputs] or [t.name for t in m.info.outputs]
        unknown = [n for n in wanted if n not in outputs]
        if unknown:
            raise WireError(f"model '{m.info.name}' has no output '{unknown[0]}'")
        reply = kpb.ModelInferResponse(model_name=m.info.name, model_version=str(m.info.version), id=request.id)
        for name in wanted:
            array = np.ascontiguousarray(outputs[name])
            reply.outputs.add(name=name, datatype=NUMPY_TO_KSERVE[array.dtype.str], shape=list(array.shape))
            reply.raw_output_contents.append(array.tobytes())
        return reply

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
                yield kpb.ModelStreamInferResponse(error_message=str(e))
