"""TensorRT backend: runs a cached engine directly (device buffers, a CUDA stream, dynamic shapes).

The engine comes from :func:`impasto.export.tensorrt.build_engine`, which reuses the cached
plan only when it was built for this GPU model, this TensorRT version and this exact graph,
and caches a new one only after it held parity against ONNX Runtime. Everything runs on one
CUDA device: ``device=`` ("cuda:1", 1), else the ``device`` setting when it names a CUDA
device (``IMPASTO_DEVICE=cuda:1``), else the current one. Device memory and the stream are
torch's, since torch is already in the process.
"""

from __future__ import annotations

import numpy as np

from impasto.export.repository import RepositoryModel
from impasto.export.tensorrt import (
    EngineBuildError,
    EngineRunner,
    build_engine,
    cuda_device,
    gpu_info,
    import_tensorrt,
    tensorrt_logger,
)
from impasto.runtime.backends.base import Backend


def configured_device() -> str | None:
    """The ``device`` setting when it names a CUDA device ("cuda", "cuda:N"); else None (the current one).

    "auto" and "cpu" say where the sidecar's torch jobs run; they do not move TensorRT.
    """
    from impasto.runtime.config import load_settings

    setting = load_settings().device.strip().lower()
    return setting if setting.startswith("cuda") else None


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, model: RepositoryModel, precision: str = "fp16", device: int | str | None = None):
        super().__init__(model)
        trt = import_tensorrt()
        self.gpu = gpu_info(configured_device() if device is None else device)  # raises with the reason
        self.precision = precision
        self.plan = build_engine(model, precision, device=self.gpu.index)
        with cuda_device(self.gpu.index):  # the engine's memory lives on the device it runs on
            self.runtime = trt.Runtime(tensorrt_logger(trt))
            self.engine = self.runtime.deserialize_cuda_engine(self.plan.read_bytes())
        if self.engine is None:
            raise EngineBuildError(f"TensorRT could not load the engine {self.plan}; delete it to rebuild")
        self.runner = EngineRunner(self.engine, model.outputs, self.gpu.index, model.name)

    def describe(self) -> dict:
        return {**super().describe(), "engine": str(self.plan), "precision": self.precision,
                "device": f"cuda:{self.gpu.index}", "gpu": self.gpu.name}

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.runner(inputs)

    def close(self) -> None:
        self.runner = self.engine = self.runtime = None
