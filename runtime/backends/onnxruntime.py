"""ONNX Runtime backend: TensorRT EP (with engine and timing caches) -> CUDA EP -> CPU.

Providers are taken in that order among those this onnxruntime build offers, or as given.
The TensorRT execution provider keeps its engines in the model's ``engines/ort-trt`` folder,
so they are built once per GPU, as with the direct TensorRT backend.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from impasto.export.repository import RepositoryError, RepositoryModel
from impasto.export.tensorrt import engines_folder
from impasto.runtime.backends.base import Backend

log = logging.getLogger(__name__)

PREFERRED = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def choose_providers(available: Sequence[str], requested: Sequence[str] | None = None) -> list[str]:
    """Providers to use: ``requested`` (each must be available), else the preferred order."""
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise ValueError(f"ONNX Runtime provider {missing[0]} is not available here (available: {', '.join(available)})")
        return list(requested)
    return [p for p in PREFERRED if p in available] or list(available)


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(
        self,
        model: RepositoryModel,
        precision: str = "fp32",
        providers: Sequence[str] | None = None,
        threads: int = 0,
    ):
        super().__init__(model)
        import onnxruntime as ort

        path = model.onnx_path(precision)
        chosen = choose_providers(ort.get_available_providers(), providers)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        provider_args: list = []
        for p in chosen:
            if p == "TensorrtExecutionProvider":
                cache = engines_folder(model) / "ort-trt"
                cache.mkdir(parents=True, exist_ok=True)
                provider_args.append((p, {
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": str(cache),
                    "trt_timing_cache_enable": True,
                    "trt_timing_cache_path": str(cache),
                    "trt_fp16_enable": precision == "fp16",
                }))
            else:
                provider_args.append(p)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=provider_args)
        except Exception as e:  # onnxruntime raises its own types for unreadable graphs
            raise RepositoryError(f"model '{model.name}': ONNX Runtime cannot load {path}: {e}") from None
        self.providers = self.session.get_providers()
        self.precision = precision
        log.info("%s on ONNX Runtime (%s)", model.name, ", ".join(self.providers))

    def describe(self) -> dict:
        return {**super().describe(), "providers": self.providers, "precision": self.precision}

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [t.name for t in self.outputs]
        return dict(zip(names, self.session.run(names, inputs)))

    def close(self) -> None:
        self.session = None

