"""TensorRT backend: runs a cached engine directly (device buffers, a CUDA stream, dynamic shapes).

The engine comes from :func:`impasto.export.tensorrt.build_engine`, which reuses the cached
plan only when it was built for this GPU, this TensorRT version and this exact ONNX file.
Device memory and the stream are torch's, since torch is already in the process.
"""

from __future__ import annotations

import numpy as np

from impasto.export.repository import RepositoryModel
from impasto.export.tensorrt import build_engine, compute_capability, import_tensorrt
from impasto.runtime.backends.base import Backend

# TensorRT dtype name -> torch dtype name
_TORCH_DTYPES = {"FLOAT": "float32", "HALF": "float16", "INT32": "int32", "INT64": "int64", "INT8": "int8", "UINT8": "uint8", "BOOL": "bool"}


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, model: RepositoryModel, precision: str = "fp16", device: int = 0):
        super().__init__(model)
        import torch

        trt = import_tensorrt()
        compute_capability()  # raises with the reason when there is no GPU
        self.torch = torch
        self.device = torch.device("cuda", device)
        self.precision = precision
        self.plan = build_engine(model, precision)
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(self.plan.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not load the engine {self.plan}; delete it to rebuild")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream(device=self.device)
        self._dtypes = {
            self.engine.get_tensor_name(i): getattr(torch, _TORCH_DTYPES[self.engine.get_tensor_dtype(self.engine.get_tensor_name(i)).name])
            for i in range(self.engine.num_io_tensors)
        }

    def describe(self) -> dict:
        return {**super().describe(), "engine": str(self.plan), "precision": self.precision}

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        keep = []  # device tensors must live until the stream is done
        with torch.cuda.stream(self.stream):
            for name, array in inputs.items():
                t = torch.from_numpy(array).to(self.device, self._dtypes[name], non_blocking=True).contiguous()
                keep.append(t)
                self.context.set_input_shape(name, tuple(t.shape))
                self.context.set_tensor_address(name, t.data_ptr())
            outputs = {}
            for info in self.outputs:
                shape = tuple(self.context.get_tensor_shape(info.name))
                t = torch.empty(shape, dtype=self._dtypes[info.name], device=self.device)
                self.context.set_tensor_address(info.name, t.data_ptr())
                outputs[info.name] = t
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError(f"TensorRT failed to run model '{self.model.name}'")
        self.stream.synchronize()
        return {n: t.float().cpu().numpy() if info.dtype == "FP32" else t.cpu().numpy() for (n, t), info in zip(outputs.items(), self.outputs)}

    def close(self) -> None:
        self.context = self.engine = self.runtime = None
