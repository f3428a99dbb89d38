"""``impasto build-engine``: ONNX -> serialized TensorRT engine, cached per GPU and TensorRT version.

An engine only runs on the GPU architecture and TensorRT version that built it, for the
exact graph it was built from. So each engine is stored under a key of (compute capability,
TensorRT version, precision, SHA-256 of the ONNX file), with the key written beside it; a
lookup whose key differs in any part finds nothing and the engine is rebuilt, never loaded.

Precision: on TensorRT 10, fp16 is a builder flag over the fp32 graph; TensorRT 11 removed
weak typing, so fp16 there means a strongly-typed network built from the fp16 ONNX variant
(see :mod:`impasto.export.fp16`). Optimisation profiles (min/opt/max shapes) come from the
model's config.pbtxt. The builder's timing cache is kept per GPU and TensorRT version.

This module imports ``tensorrt`` only when building, so the rest of impasto works without it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from impasto.export.repository import RepositoryModel, sha256

log = logging.getLogger(__name__)

ENGINES = "engines"


class TensorRTUnavailable(RuntimeError):
    """TensorRT or a CUDA GPU is missing here; the message says which and what to do."""


class EngineBuildError(RuntimeError):
    """TensorRT refused the graph or the build failed (the parser's errors are in the message)."""


def import_tensorrt():
    """The ``tensorrt`` module, or :class:`TensorRTUnavailable` with the reason."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        raise TensorRTUnavailable(
            "TensorRT is not installed: `pip install tensorrt` (its libraries come from NVIDIA's "
            "package index) on a machine with an NVIDIA GPU; ONNX Runtime serves the models meanwhile"
        ) from None
    return tensorrt


def compute_capability() -> str:
    """'sm' + major + minor of the current CUDA device, e.g. 'sm90'."""
    import torch

    if not torch.cuda.is_available():
        raise TensorRTUnavailable("no CUDA GPU is visible: TensorRT engines need one")
    major, minor = torch.cuda.get_device_capability()
    return f"sm{major}{minor}"


def tensorrt_major(version: str) -> int:
    return int(version.split(".")[0])


def strongly_typed(version: str) -> bool:
    """TensorRT 11 and later build fp16 only from a strongly-typed (fp16 ONNX) network."""
    return tensorrt_major(version) >= 11


@dataclass(frozen=True)
class EngineKey:
    """What an engine is valid for; any difference means a rebuild."""

    compute_capability: str
    tensorrt: str
    precision: str  # "fp32" | "fp16"
    onnx_sha256: str

    def filename(self) -> str:
        return f"{self.compute_capability}-trt{self.tensorrt}-{self.precision}-{self.onnx_sha256[:16]}.plan"


def onnx_for(model: RepositoryModel, precision: str, trt_version: str) -> Path:
    """The graph an engine of ``precision`` is built from with TensorRT ``trt_version``."""
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"precision must be 'fp32' or 'fp16', not {precision!r}")
    return model.onnx_path("fp16" if precision == "fp16" and strongly_typed(trt_version) else "fp32")


def engine_key(model: RepositoryModel, precision: str, capability: str, trt_version: str) -> EngineKey:
    return EngineKey(capability, trt_version, precision, sha256(onnx_for(model, precision, trt_version)))


def engines_folder(model: RepositoryModel) -> Path:
    return model.version_folder / ENGINES


def find_engine(model: RepositoryModel, key: EngineKey) -> Path | None:
    """The cached engine for exactly ``key``, or None (also when its recorded key differs)."""
    plan = engines_folder(model) / key.filename()
    meta = plan.with_suffix(".json")
    if not (plan.is_file() and meta.is_file()):
        return None
    try:
        recorded = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if recorded != asdict(key):
        log.warning("engine %s was built for %s, not %s: rebuilding", plan, recorded, asdict(key))
        return None
    return plan


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def build_engine(
    model: RepositoryModel, precision: str = "fp16", workspace_gib: float = 4.0, force: bool = False
) -> Path:
    """The engine for ``model`` on this GPU: found in the cache, or built and cached."""
    trt = import_tensorrt()
    capability = compute_capability()
    key = engine_key(model, precision, capability, trt.__version__)
    if not force and (found := find_engine(model, key)) is not None:
        return found
    source = onnx_for(model, precision, trt.__version__)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if precision == "fp16" and strongly_typed(trt.__version__):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(source)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT could not parse {source}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if precision == "fp16" and not strongly_typed(trt.__version__):
        config.set_flag(trt.BuilderFlag.FP16)
    folder = engines_folder(model)
    folder.mkdir(parents=True, exist_ok=True)
    cache_path = folder / f"timing-{capability}-trt{trt.__version__}.cache"
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    for t in model.inputs:
        low, opt, high = model.profile(t.name)
        profile.set_shape(t.name, low, opt, high)
    config.add_optimization_profile(profile)
    log.info("building %s engine for %s (%s, TensorRT %s)", precision, model.name, capability, trt.__version__)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build an engine for '{model.name}' from {source}")
    plan = folder / key.filename()
    _write_atomic(plan, bytes(serialized))
    _write_atomic(plan.with_suffix(".json"), json.dumps(asdict(key), indent=1).encode())
    _write_atomic(cache_path, bytes(config.get_timing_cache().serialize()))
    return plan
