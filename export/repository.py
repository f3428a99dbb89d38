"""The model repository, in NVIDIA Triton's layout, written by export and read by the runtime.

    <repo>/<model>/config.pbtxt            Triton's ModelConfig (text protobuf)
    <repo>/<model>/<version>/model.onnx    fp32 graph (what Triton's onnxruntime backend loads)
    <repo>/<model>/<version>/model.fp16.onnx   fp16 variant (TensorRT fp16 / strongly typed)
    <repo>/<model>/<version>/engines/      TensorRT engines and timing cache, keyed per GPU

``config.pbtxt`` is written and parsed with Triton's own schema, the ``model_config.proto``
compiled into the ``tritonclient`` package, so Triton loads the repository unchanged. What
impasto adds (profiles, parity, checksums) rides in the config's ``parameters`` map.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from google.protobuf import text_format

from impasto.export.registry import ExportableModel, TensorSpec, validate_model_name

CONFIG = "config.pbtxt"
ONNX_FP32 = "model.onnx"
ONNX_FP16 = "model.fp16.onnx"
PLATFORM = "onnxruntime_onnx"
PREFIX = "impasto."

log = logging.getLogger(__name__)

# impasto dtype name -> (Triton config enum name, numpy dtype)
DTYPES = {
    "FP32": ("TYPE_FP32", np.float32),
    "FP16": ("TYPE_FP16", np.float16),
    "INT64": ("TYPE_INT64", np.int64),
    "INT32": ("TYPE_INT32", np.int32),
    "UINT8": ("TYPE_UINT8", np.uint8),
    "BOOL": ("TYPE_BOOL", np.bool_),
}


class RepositoryError(ValueError):
    """A model repository, model folder or config that is missing or malformed (names the file)."""


def _config_pb2():
    from tritonclient.grpc import model_config_pb2  # Triton's schema, as tritonclient ships it

    return model_config_pb2


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class TensorInfo:
    """An input or output as served: name, dtype ("FP32", ...), dims without the batch axis."""

    name: str
    dtype: str
    dims: tuple[int, ...]

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(DTYPES[self.dtype][1])

    def to_dict(self) -> dict:
        """As reported to users: the batch axis shown as -1."""
        return {"name": self.name, "dtype": self.dtype, "dims": [-1, *self.dims]}


@dataclass(frozen=True)
class RepositoryModel:
    """One model of a repository, as read back from its config.pbtxt."""

    name: str
    version: int
    folder: Path
    max_batch_size: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 0
    parameters: dict[str, str] = field(default_factory=dict)
    config: object = field(default=None, compare=False, repr=False)  # the parsed Triton ModelConfig message

    @property
    def version_folder(self) -> Path:
        return self.folder / str(self.version)

    def onnx_path(self, precision: str = "fp32") -> Path:
        """The graph file for ``precision`` ("fp32" or "fp16"); an error names it if missing."""
        if precision not in ("fp32", "fp16"):
            raise RepositoryError(f"precision must be 'fp32' or 'fp16', not {precision!r}")
        path = self.version_folder / (ONNX_FP32 if precision == "fp32" else ONNX_FP16)
        if not path.is_file():
            raise RepositoryError(f"model '{self.name}': {path} is missing (re-run `impasto export {self.name}`)")
        return path

    def profile(self, name: str) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) full shapes of input ``name`` for TensorRT optimisation profiles."""
        text = self.parameters.get(f"{PREFIX}profile.{name}")
        if not text:
            raise RepositoryError(f"model '{self.name}': no optimisation profile for input '{name}' in {self.folder / CONFIG}")
        try:
            shapes = tuple(tuple(int(d) for d in part.split("x")) for part in text.split(";"))
        except ValueError:
            raise RepositoryError(f"model '{self.name}': malformed profile {text!r} for input '{name}'") from None
        if len(shapes) != 3:
            raise RepositoryError(f"model '{self.name}': profile for '{name}' needs min;opt;max, got {text!r}")
        return shapes  # type: ignore[return-value]


def _profile_text(spec: ExportableModel, t: TensorSpec) -> str:
    lo, opt, hi = spec.batch_profile()
    shapes: list[list[int]] = [[lo], [opt], [hi]]
    dynamic = iter(t.profile)
    for d in t.dims:
        triple = next(dynamic) if d == -1 else (d, d, d)
        for shape, v in zip(shapes, triple):
            shape.append(v)
    return ";".join("x".join(str(v) for v in s) for s in shapes)


def render_config(spec: ExportableModel, parameters: dict[str, str]) -> str:
    """config.pbtxt text for ``spec``, built as Triton's ModelConfig message."""
    pb = _config_pb2()
    config = pb.ModelConfig(name=spec.name, platform=PLATFORM, max_batch_size=spec.max_batch_size)
    config.default_model_filename = ONNX_FP32
    for tensors, field_ in ((spec.inputs, config.input), (spec.outputs, config.output)):
        for t in tensors:
            entry = field_.add(name=t.name, dims=list(t.dims))
            entry.data_type = pb.DataType.Value(DTYPES[t.dtype][0])
    if spec.max_batch_size > 0:
        config.dynamic_batching.preferred_batch_size.extend(
            [b for b in spec.preferred_batch_sizes if b <= spec.max_batch_size]
        )
        config.dynamic_batching.max_queue_delay_microseconds = spec.max_queue_delay_us
    config.instance_group.add(count=1, kind=pb.ModelInstanceGroup.KIND_AUTO)
    params = {f"{PREFIX}description": spec.description}
    params.update({f"{PREFIX}{k}": v for k, v in spec.metadata.items()})
    params.update({f"{PREFIX}profile.{t.name}": _profile_text(spec, t) for t in spec.inputs})
    params.update({f"{PREFIX}{k}": str(v) for k, v in parameters.items()})
    for k in sorted(params):
        config.parameters[k].string_value = params[k]
    return text_format.MessageToString(config)


def write_model(
    repo: str | Path,
    spec: ExportableModel,
    files: dict[str, Path],
    parameters: dict[str, str],
    version: int = 1,
) -> Path:
    """Install ``files`` (name in the version folder -> source path) and the config as ``spec.name``.

    The model folder is assembled outside the repository (see :func:`staging_area`) and swapped
    in by renames, so a reader never sees a half-written model and the repository root holds
    nothing but model folders: Triton treats every folder there as a model and refuses to start
    on one whose name is not its model's. An older export of the same model is replaced.
    """
    repo = Path(repo)
    name = validate_model_name(spec.name)
    if version < 1:
        raise RepositoryError(f"model version must be 1 or more, not {version}")
    repo.mkdir(parents=True, exist_ok=True)
    area = staging_area(repo)
    clean_stale_staging(repo, area)
    staging = Path(tempfile.mkdtemp(prefix=f"{name}.{os.getpid()}.", dir=area))
    model = staging / name  # named as in the repository: Triton's rule, checked by the parse-back
    try:
        (model / str(version)).mkdir(parents=True)
        for filename, source in files.items():
            shutil.copyfile(source, model / str(version) / filename)
        (model / CONFIG).write_text(render_config(spec, parameters))
        read_model_folder(model, expect_name=name)  # parse back with Triton's schema before installing
        final, old = repo / name, staging / "replaced"
        if final.exists():
            final.replace(old)
        model.replace(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        try:
            area.rmdir()  # only when empty: another export may be staging beside this one
        except OSError:
            pass
    return final


def staging_area(repo: Path) -> Path:
    """Where models for ``repo`` are assembled: on its filesystem (so installing is a rename), not in it.

    First choice is a hidden sibling, ``<parent>/.<repo name>.staging``; where the parent is not
    writable, the system temp folder if it shares the repository's filesystem. Otherwise the
    error says what to change.
    """
    repo = repo.resolve()
    device = repo.stat().st_dev
    candidates = [repo.parent / f".{repo.name}.staging", Path(tempfile.gettempdir()) / f"impasto-staging-{_digest(repo)}"]
    for area in candidates:
        try:
            area.mkdir(exist_ok=True)
        except OSError:
            continue
        if area.stat().st_dev == device:
            return area
        try:
            area.rmdir()
        except OSError:
            pass
    raise RepositoryError(
        f"cannot stage models for {repo}: {candidates[0]} cannot be created and the temp folder is on "
        f"another filesystem; make {repo.parent} writable or set TMPDIR to a folder on the repository's filesystem"
    )


def _digest(path: Path) -> str:
    return hashlib.sha256(str(path).encode()).hexdigest()[:12]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_staging(repo: Path, area: Path) -> list[Path]:
    """Remove what interrupted exports left: staging folders of processes that no longer run.

    Those are ``<name>.<pid>.<random>`` folders in ``area``, and the ``.<name>.staging-<pid>`` /
    ``.<name>.old-<pid>`` folders that exports before this layout left inside the repository root
    (Triton would refuse to start on them). Folders of running processes are left alone.
    """
    removed = []
    legacy = [(p, p.name.rsplit("-", 1)[-1]) for p in repo.glob(".*.staging-*")]
    legacy += [(p, p.name.rsplit("-", 1)[-1]) for p in repo.glob(".*.old-*")]
    current = [(p, p.name.split(".")[-2]) for p in area.iterdir() if p.name.count(".") >= 2]
    for path, pid in legacy + current:
        if path.is_dir() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
            log.info("removed %s, left by an interrupted export", path)
    return removed


def read_model_folder(folder: Path, expect_name: str | None = None, version: int | None = None) -> RepositoryModel:
    pb = _config_pb2()
    path = folder / CONFIG
    if not path.is_file():
        raise RepositoryError(f"{path} is missing: not a model folder")
    try:
        config = text_format.Parse(path.read_text(), pb.ModelConfig())
    except (text_format.ParseError, UnicodeDecodeError) as e:
        raise RepositoryError(f"{path} does not parse as Triton's ModelConfig: {e}") from None
    name = config.name or folder.name
    if expect_name is not None and name != expect_name:
        raise RepositoryError(f"{path} names model '{name}', but its folder is '{expect_name}'")
    if config.platform not in (PLATFORM, "") and config.backend not in ("onnxruntime",):
        raise RepositoryError(f"{path}: platform '{config.platform}' is not served by impasto (ONNX models only)")
    versions = sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
    if version is None:
        if not versions:
            raise RepositoryError(f"model '{name}' in {folder} has no version folder (1/, 2/, ...)")
        version = versions[-1]
    elif version not in versions:
        raise RepositoryError(f"model '{name}' has no version {version} (has {versions or 'none'})")
    back = {pb.DataType.Value(v[0]): k for k, v in DTYPES.items()}

    def tensors(entries) -> tuple[TensorInfo, ...]:
        out = []
        for e in entries:
            if e.data_type not in back:
                raise RepositoryError(f"{path}: tensor '{e.name}' has unsupported type {pb.DataType.Name(e.data_type)}")
            out.append(TensorInfo(e.name, back[e.data_type], tuple(int(d) for d in e.dims)))
        return tuple(out)

    return RepositoryModel(
        name=name,
        version=version,
        folder=folder,
        max_batch_size=config.max_batch_size,
        inputs=tensors(config.input),
        outputs=tensors(config.output),
        preferred_batch_sizes=tuple(config.dynamic_batching.preferred_batch_size),
        max_queue_delay_us=config.dynamic_batching.max_queue_delay_microseconds,
        parameters={k: v.string_value for k, v in config.parameters.items()},
        config=config,
    )


def read_model(repo: str | Path, name: str, version: int | None = None) -> RepositoryModel:
    """Model ``name`` of repository ``repo`` (its newest version unless ``version``)."""
    validate_model_name(name)
    repo = Path(repo)
    if not repo.is_dir():
        raise RepositoryError(f"model repository {repo} does not exist (create one with `impasto export --all --repo {repo}`)")
    folder = repo / name
    if not folder.is_dir():
        raise RepositoryError(f"model '{name}' is not in repository {repo} (it has: {', '.join(list_models(repo)) or 'nothing'})")
    return read_model_folder(folder, expect_name=name, version=version)


def list_models(repo: str | Path) -> list[str]:
    """Names of the model folders in ``repo`` (those holding a config.pbtxt)."""
    repo = Path(repo)
    if not repo.is_dir():
        return []
    return sorted(p.name for p in repo.iterdir() if (p / CONFIG).is_file() and not p.name.startswith("."))
