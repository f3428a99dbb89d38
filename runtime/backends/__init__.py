"""Backends that serve model-repository models: TensorRT where it can run, else ONNX Runtime.

``load_backend(repo, model)`` picks automatically (TensorRT when the ``tensorrt`` package and
a CUDA GPU are present, otherwise ONNX Runtime with its best provider); ``backend=`` or the
``IMPASTO_BACKEND`` setting overrides.
"""

from __future__ import annotations

from pathlib import Path

from impasto.export.repository import read_model
from impasto.runtime.backends.base import Backend, InferenceInputError

BACKENDS = ("auto", "tensorrt", "onnxruntime")

__all__ = ["BACKENDS", "Backend", "InferenceInputError", "available_backends", "load_backend"]


def _tensorrt_ready() -> tuple[bool, str]:
    from impasto.export.tensorrt import TensorRTUnavailable, compute_capability, import_tensorrt

    try:
        import_tensorrt()
        compute_capability()
    except TensorRTUnavailable as e:
        return False, str(e)
    return True, ""


def available_backends() -> dict[str, str]:
    """Each backend -> "" if it can run here, else why not."""
    status = {"onnxruntime": ""}
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        status["onnxruntime"] = "onnxruntime is not installed"
    ok, why = _tensorrt_ready()
    status["tensorrt"] = "" if ok else why
    return status


def load_backend(
    repo: str | Path,
    model: str,
    backend: str | None = None,
    *,
    precision: str | None = None,
    version: int | None = None,
    threads: int = 0,
    providers: list[str] | None = None,
) -> Backend:
    """Model ``model`` of repository ``repo`` on ``backend`` ("auto", "tensorrt" or "onnxruntime").

    ``backend=None`` takes the ``backend`` setting (``IMPASTO_BACKEND``, the settings file), "auto" by default.

    ``precision`` defaults to fp16 on TensorRT and fp32 on ONNX Runtime (whose CPU kernels
    gain nothing from fp16).
    """
    if backend is None:
        from impasto.runtime.config import load_settings

        backend = load_settings().backend
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend '{backend}': choose one of {', '.join(BACKENDS)}")
    info = read_model(repo, model, version)
    if backend == "auto":
        backend = "tensorrt" if _tensorrt_ready()[0] else "onnxruntime"
    if backend == "tensorrt":
        from impasto.runtime.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(info, precision or "fp16")
    from impasto.runtime.backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(info, precision or "fp32", providers=providers, threads=threads)
