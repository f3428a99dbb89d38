"""``impasto build-engine``: ONNX -> serialized TensorRT engine, parity-checked, cached per GPU.

An engine only runs on the GPU architecture and TensorRT version that built it, for the
exact graph it was built from. So each engine is stored under a key of (compute capability,
GPU name, TensorRT version, precision, SHA-256 of the graph), with the key written beside
it; a lookup whose key differs in any part finds nothing and the engine is rebuilt.

What is built (:func:`plan_build`): on TensorRT 10 and later, fp16 engines come from
``model.fp16.onnx`` as a *strongly typed* network, so the branches export keeps in fp32 stay
fp32 (the FP16 builder flag over the fp32 graph lets TensorRT run them in half precision,
off by up to 0.25 on the renderers). TensorRT 8.6/9 have no usable strong typing for ONNX:
there fp16 is the FP16 flag over ``model.onnx`` with every layer the fp16 variant keeps in
fp32 pinned to fp32 (``OBEY_PRECISION_CONSTRAINTS``). fp32 engines clear TF32.

Every new engine is run against ONNX Runtime (CPU, fp32 graph) on the same deterministic
inputs at the profile's opt shape before it is cached (:func:`store_engine`); one outside
:data:`ENGINE_TOLERANCE` is refused with the model, the error and the bound. The builder's
timing cache is kept per GPU and TensorRT version; one TensorRT rejects is started afresh.
The builder, runtime and buffers run on the device asked for (``cuda:N``).

This module imports ``tensorrt`` only when building, so the rest of impasto works without it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from impasto.export.engine_parity import ENGINE_TOLERANCE, EngineParity, Runner, check_engine_parity
from impasto.export.repository import ONNX_FP16, ONNX_FP32, RepositoryError, RepositoryModel, TensorInfo, sha256

if TYPE_CHECKING:
    from impasto.export.compatibility import CompatibilityReport

log = logging.getLogger(__name__)

ENGINES = "engines"
MIN_TENSORRT = (8, 6)  # execute_async_v3 / named tensors / OBEY_PRECISION_CONSTRAINTS


class TensorRTUnavailable(RuntimeError):
    """TensorRT or a CUDA GPU is missing here; the message says which and what to do."""


class EngineBuildError(RuntimeError):
    """TensorRT refused the graph or the build failed (the parser's errors are in the message)."""


class EngineParityError(EngineBuildError):
    """A built engine disagrees with ONNX Runtime beyond the tolerance: it is not cached."""


class InvalidDevice(RepositoryError):
    """A device that is not ``cuda``, ``cuda:N`` or ``N`` (a ValueError: INVALID_ARGUMENT, exit 2)."""


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


@functools.cache
def tensorrt_logger(trt: Any) -> Any:
    """One TensorRT logger per process (TensorRT warns when builders and runtimes get different ones)."""
    return trt.Logger(trt.Logger.WARNING)


def installed_tensorrt_version() -> str | None:
    """The installed TensorRT's version, found without importing it (no CUDA start-up); None if absent."""
    if importlib.util.find_spec("tensorrt") is None:
        return None
    for dist in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt-cu11"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "(unknown version)"


def support_summary(report: CompatibilityReport) -> str:
    """One line for ``impasto export``: what the static check says, and whether TensorRT is here.

    The static check compares the graph with TensorRT's parser table; it says nothing about
    this machine, so the line says separately whether TensorRT itself is installed.
    """
    where = f"opset {report.opset}"
    if not report.ok:
        graph = f"graph not supported ({where}; {len(report.problems)} problem(s))"
    elif report.allowed:
        graph = f"graph supported ({where}) except {len(report.allowed)} allowed construct(s)"
    else:
        graph = f"graph supported ({where})"
    version = installed_tensorrt_version()
    here = f"TensorRT {version} installed here" if version else "TensorRT not installed here"
    return f"TensorRT: {graph}; {here}"


# --- the device ---------------------------------------------------------------------------------


def parse_cuda_device(device: int | str | None) -> int | None:
    """The CUDA device index in ``device`` ("cuda:1", "1", 1), or None for "the current one" ("cuda", "auto", None)."""
    if device is None:
        return None
    if isinstance(device, bool):
        raise InvalidDevice(f"device must be cuda, cuda:N or N, not {device!r}")
    if isinstance(device, int):
        if device < 0:
            raise InvalidDevice(f"device index must be 0 or more, not {device}")
        return device
    text = str(device).strip().lower()
    if text in ("", "auto", "cuda"):
        return None
    if text == "cpu":
        raise InvalidDevice("device 'cpu' cannot run TensorRT: use cuda or cuda:N")
    match = re.fullmatch(r"(?:cuda:)?(\d{1,4})", text)
    if not match:
        raise InvalidDevice(f"device {str(device)[:40]!r} is not a CUDA device: use cuda, cuda:N or N")
    return int(match.group(1))


@dataclass(frozen=True)
class GpuInfo:
    """The CUDA device an engine is built and run on."""

    index: int
    name: str  # as CUDA reports it, e.g. "NVIDIA H100 80GB HBM3"
    capability: str  # "sm" + major + minor, e.g. "sm90"

    @property
    def slug(self) -> str:
        """The name in file-name-safe form, e.g. "nvidia-h100-80gb-hbm3"."""
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")[:40] or "gpu"


def gpu_info(device: int | str | None = None) -> GpuInfo:
    """The CUDA device ``device`` names (default: the current one), or :class:`TensorRTUnavailable`."""
    index = parse_cuda_device(device)
    import torch

    if not torch.cuda.is_available():
        raise TensorRTUnavailable("no CUDA GPU is visible: TensorRT engines need one")
    count = torch.cuda.device_count()
    if index is None:
        index = torch.cuda.current_device()
    if index >= count:
        raise TensorRTUnavailable(f"device cuda:{index} does not exist: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    major, minor = torch.cuda.get_device_capability(index)
    return GpuInfo(index, torch.cuda.get_device_name(index), f"sm{major}{minor}")


def compute_capability(device: int | str | None = None) -> str:
    """'sm' + major + minor of the CUDA device (default: the current one), e.g. 'sm90'."""
    return gpu_info(device).capability


@contextlib.contextmanager
def cuda_device(index: int) -> Iterator[None]:
    """Make device ``index`` current on this thread (cudaSetDevice) for TensorRT calls inside."""
    import torch

    with torch.cuda.device(index):
        yield


# --- what to build ------------------------------------------------------------------------------


def tensorrt_version(version: str) -> tuple[int, int]:
    """(major, minor) of a TensorRT version string such as "10.8.0.43"."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if not match:
        raise EngineBuildError(f"cannot read the TensorRT version {version!r}")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class BuildPlan:
    """What :func:`build_engine` builds for one precision and TensorRT version (no TensorRT needed)."""

    precision: str  # "fp32" | "fp16"
    source: str  # the graph in the version folder: model.onnx or model.fp16.onnx
    strongly_typed: bool  # precisions come from the graph, not from builder flags
    network_flags: tuple[str, ...]  # NetworkDefinitionCreationFlag members to set
    builder_flags: tuple[str, ...]  # BuilderFlag members to set
    cleared_flags: tuple[str, ...]  # BuilderFlag members to clear
    pin_fp32_from: str | None = None  # weak typing: pin to fp32 the layers this graph keeps in fp32

    def source_path(self, model: RepositoryModel) -> Path:
        """The graph file to parse; a missing fp16 variant is an error that says what to do."""
        path = model.version_folder / self.source
        if self.source == ONNX_FP16 and not path.is_file():
            raise EngineBuildError(
                f"model '{model.name}' has no {ONNX_FP16} (exported with --no-fp16?), which fp16 engines are "
                f"built from: re-export it with fp16, or build with --precision fp32"
            )
        return model.onnx_path("fp32") if self.source == ONNX_FP32 else path


def plan_build(precision: str, trt_version: str) -> BuildPlan:
    """The graph and flags for a ``precision`` engine with TensorRT ``trt_version``.

    TensorRT 11: every network is strongly typed (no flag). TensorRT 10: STRONGLY_TYPED set,
    fp16 from the fp16 graph, never the FP16 builder flag. TensorRT 8.6/9: explicit batch,
    weak typing; fp16 is the FP16 flag with the fp16 variant's fp32 layers pinned.
    """
    if precision not in ENGINE_TOLERANCE:
        raise EngineBuildError(f"precision must be 'fp32' or 'fp16', not {precision!r}")
    major, minor = tensorrt_version(trt_version)
    if (major, minor) < MIN_TENSORRT:
        raise EngineBuildError(f"TensorRT {trt_version} is too old: impasto needs {MIN_TENSORRT[0]}.{MIN_TENSORRT[1]} or later")
    cleared = ("TF32",) if precision == "fp32" else ()  # fp32 means fp32, not TF32's 10-bit mantissa
    if major >= 10:
        flags = ("STRONGLY_TYPED",) if major == 10 else ()
        source = ONNX_FP16 if precision == "fp16" else ONNX_FP32
        return BuildPlan(precision, source, True, flags, (), cleared)
    if precision == "fp32":
        return BuildPlan(precision, ONNX_FP32, False, ("EXPLICIT_BATCH",), (), cleared)
    return BuildPlan(precision, ONNX_FP32, False, ("EXPLICIT_BATCH",), ("FP16", "OBEY_PRECISION_CONSTRAINTS"), (), ONNX_FP16)


def onnx_for(model: RepositoryModel, precision: str, trt_version: str) -> Path:
    """The graph an engine of ``precision`` is built from with TensorRT ``trt_version``."""
    return plan_build(precision, trt_version).source_path(model)


def pinned_layer(layer_name: str, precisions: Mapping[str, str]) -> bool:
    """Whether a TensorRT layer comes from an ONNX node the fp16 variant computes in fp32.

    ``precisions`` maps node names to "fp16"/"fp32" (:func:`impasto.export.fp16.node_precisions`).
    TensorRT's ONNX parser names a node's first layer after the node and further ones ``NAME_1``,
    ``NAME_2``, ...; a layer named exactly after a node is that node's.
    """
    if layer_name in precisions:
        return precisions[layer_name] == "fp32"
    match = re.fullmatch(r"(.+)_\d+", layer_name)
    return bool(match) and precisions.get(match.group(1)) == "fp32"


# --- the cache ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineKey:
    """What an engine is valid for; any difference means a rebuild."""

    compute_capability: str
    gpu: str  # the device's name: same-sm GPUs (H100, H200) get engines of their own
    tensorrt: str
    precision: str  # "fp32" | "fp16"
    onnx_sha256: str

    def filename(self) -> str:
        slug = GpuInfo(0, self.gpu, self.compute_capability).slug
        return f"{self.compute_capability}-{slug}-trt{self.tensorrt}-{self.precision}-{self.onnx_sha256[:16]}.plan"


def engine_key(model: RepositoryModel, precision: str, gpu: GpuInfo, trt_version: str) -> EngineKey:
    """The key of a ``precision`` engine of ``model`` on ``gpu``: the graphs it is built from, hashed."""
    plan = plan_build(precision, trt_version)
    digest = sha256(plan.source_path(model))
    if plan.pin_fp32_from:  # the pins come from the fp16 graph: a new one means a new engine
        pins = sha256(model.onnx_path("fp16"))
        digest = hashlib.sha256(f"{digest}:{pins}".encode()).hexdigest()
    return EngineKey(gpu.capability, gpu.name, trt_version, precision, digest)


def engines_folder(model: RepositoryModel) -> Path:
    return model.version_folder / ENGINES


def timing_cache_path(model: RepositoryModel, gpu: GpuInfo, trt_version: str) -> Path:
    """The builder's timing cache for this GPU model and TensorRT version."""
    return engines_folder(model) / f"timing-{gpu.capability}-{gpu.slug}-trt{trt_version}.cache"


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


# --- the parity gate -------------------------------------------------------------------------------


def store_engine(
    model: RepositoryModel,
    key: EngineKey,
    serialized: bytes,
    candidate: Runner,
    *,
    tolerance: float | None = None,
    reference: Runner | None = None,
) -> tuple[Path, EngineParity]:
    """Cache ``serialized`` under ``key`` if ``candidate`` (that engine, running) holds parity.

    Raises :class:`EngineParityError` otherwise, and then writes nothing.
    """
    parity = check_engine_parity(model, candidate, key.precision, reference=reference, tolerance=tolerance)
    if not parity.ok:
        raise EngineParityError(parity.message() + "; the engine was not cached")
    folder = engines_folder(model)
    folder.mkdir(parents=True, exist_ok=True)
    plan = folder / key.filename()
    _write_atomic(plan, bytes(serialized))
    _write_atomic(plan.with_suffix(".json"), json.dumps(asdict(key), indent=1).encode())
    log.info("%s: %s engine holds parity (max error %.3g, tolerance %g): %s",
             model.name, key.precision, parity.max_abs, parity.tolerance, plan)
    return plan, parity


# --- TensorRT -------------------------------------------------------------------------------------

# TensorRT DataType member name -> torch dtype name
TORCH_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT32": "int32", "INT64": "int64",
                "INT8": "int8", "UINT8": "uint8", "BOOL": "bool"}


class EngineRunner:
    """A deserialized engine run on CUDA device ``index``: torch buffers there, one CUDA stream."""

    def __init__(self, engine: Any, outputs: tuple[TensorInfo, ...], index: int, model: str):
        import torch

        self.torch, self.index, self.outputs, self.model = torch, index, outputs, model
        self.device = torch.device("cuda", index)
        self.engine = engine
        with torch.cuda.device(index):
            self.context = engine.create_execution_context()
            self.stream = torch.cuda.Stream(device=self.device)
        if self.context is None:
            raise EngineBuildError(f"TensorRT could not create an execution context for model '{model}'")
        self.dtypes = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            kind = engine.get_tensor_dtype(name).name
            if kind not in TORCH_DTYPES:
                raise EngineBuildError(f"model '{model}': engine tensor '{name}' has type {kind}, which impasto cannot bind")
            self.dtypes[name] = getattr(torch, TORCH_DTYPES[kind])

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        keep = []  # device tensors must live until the stream is done
        with torch.cuda.device(self.index), torch.cuda.stream(self.stream):
            for name, array in inputs.items():
                t = torch.from_numpy(np.ascontiguousarray(array)).to(self.device, self.dtypes[name]).contiguous()
                keep.append(t)
                if not self.context.set_input_shape(name, tuple(t.shape)):
                    raise EngineBuildError(f"model '{self.model}': TensorRT refused shape {tuple(t.shape)} for input '{name}'")
                self.context.set_tensor_address(name, t.data_ptr())
            outputs = {}
            for info in self.outputs:
                shape = tuple(self.context.get_tensor_shape(info.name))
                t = torch.empty(shape, dtype=self.dtypes[info.name], device=self.device)
                self.context.set_tensor_address(info.name, t.data_ptr())
                outputs[info.name] = t
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError(f"TensorRT failed to run model '{self.model}'")
        self.stream.synchronize()
        return {info.name: (outputs[info.name].float() if info.dtype == "FP32" else outputs[info.name]).cpu().numpy()
                for info in self.outputs}


def attach_timing_cache(config: Any, path: Path) -> bool:
    """Give the builder the timing cache at ``path``, or a fresh one if it is unreadable or rejected.

    ``set_timing_cache`` answers False when TensorRT refuses a cache (another TensorRT or GPU);
    that cache is then replaced rather than silently ignored. False: building without one.
    """
    data = b""
    try:
        data = path.read_bytes() if path.is_file() else b""
    except OSError as e:
        log.warning("cannot read the timing cache %s (%s): starting a fresh one", path, e)
    if data:
        try:
            cache = config.create_timing_cache(data)
        except Exception as e:  # TensorRT raises its own types on a blob it cannot parse
            log.warning("timing cache %s is corrupt (%s): starting a fresh one", path, e)
            cache = None
        if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
            return True
        if cache is not None:
            log.warning("TensorRT rejected the timing cache %s (another TensorRT or GPU?): starting a fresh one", path)
    if config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False):
        return True
    log.warning("TensorRT refused a fresh timing cache: building without one")
    return False


def _network(trt: Any, builder: Any, plan: BuildPlan, model: RepositoryModel) -> Any:
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    source = plan.source_path(model)
    parser = trt.OnnxParser(network, tensorrt_logger(trt))
    if not parser.parse_from_file(str(source)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT could not parse {source}: {errors}")
    if plan.pin_fp32_from:
        import onnx

        from impasto.export.fp16 import node_precisions

        precisions = node_precisions(onnx.load(str(model.version_folder / plan.pin_fp32_from)))
        pinned = 0
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            outs = [layer.get_output(j) for j in range(layer.num_outputs)]
            if outs and all(o.dtype == trt.float32 for o in outs) and pinned_layer(layer.name, precisions):
                layer.precision = trt.float32
                for j in range(layer.num_outputs):
                    layer.set_output_type(j, trt.float32)
                pinned += 1
        log.info("%s: %d layers pinned to fp32 (TensorRT %s has no strong typing here)", model.name, pinned, trt.__version__)
    return network


def build_engine(
    model: RepositoryModel,
    precision: str = "fp16",
    workspace_gib: float = 4.0,
    force: bool = False,
    device: int | str | None = None,
    tolerance: float | None = None,
) -> Path:
    """The engine for ``model`` on ``device`` (default: the current CUDA device): cached, or built,
    checked against ONNX Runtime and cached. An engine that fails parity raises :class:`EngineParityError`."""
    trt = import_tensorrt()
    gpu = gpu_info(device)
    plan = plan_build(precision, trt.__version__)
    key = engine_key(model, precision, gpu, trt.__version__)
    if not force and (found := find_engine(model, key)) is not None:
        return found
    logger = tensorrt_logger(trt)
    cache_path = timing_cache_path(model, gpu, trt.__version__)
    with cuda_device(gpu.index):  # builder, runtime, context and buffers all on this device
        builder = trt.Builder(logger)
        network = _network(trt, builder, plan, model)
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
        for flag in plan.builder_flags:
            config.set_flag(getattr(trt.BuilderFlag, flag))
        for flag in plan.cleared_flags:
            if hasattr(trt.BuilderFlag, flag):
                config.clear_flag(getattr(trt.BuilderFlag, flag))
        cached = attach_timing_cache(config, cache_path)
        profile = builder.create_optimization_profile()
        for t in model.inputs:
            low, opt, high = model.profile(t.name)
            profile.set_shape(t.name, low, opt, high)
        config.add_optimization_profile(profile)
        log.info("building %s engine for %s on cuda:%d (%s, %s, TensorRT %s)",
                 precision, model.name, gpu.index, gpu.name, gpu.capability, trt.__version__)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise EngineBuildError(f"TensorRT failed to build an engine for '{model.name}' from {plan.source_path(model)}")
        serialized = bytes(serialized)
        runtime = trt.Runtime(logger)  # kept alive while its engine runs the parity check
        engine = runtime.deserialize_cuda_engine(serialized)
        if engine is None:
            raise EngineBuildError(f"TensorRT could not load the engine it built for '{model.name}'")
        plan_path, _ = store_engine(model, key, serialized, EngineRunner(engine, model.outputs, gpu.index, model.name),
                                    tolerance=tolerance)
        if cached:
            _write_atomic(cache_path, bytes(config.get_timing_cache().serialize()))
    return plan_path
