"""Batch job specs (TOML or JSON) and their expansion into numbered tasks.

    op = "paint"                       # any op: `impasto --help` lists them
    inputs = "frames/*.png"            # a glob, a folder, a manifest file (.txt: one path a line;
                                       # .json: a list), or a frame range:
                                       # inputs = { frames = "1-240", pattern = "shots/f{frame:04d}.png" }
    output = "out/{stem}.png"          # {stem} {name} {index} {frame}; relative to the spec's folder
    [params]                           # the op's options (as in Capabilities), and its other images
    strokes = 300
    style = "styles/van_gogh.png"      # image slots are files, relative to the spec's folder too

The input image fills the op's first image slot; ``[params]`` keys that name another image
slot of the op are files (resolved against the spec's folder), every other key is an option.

Tasks are numbered 0..N-1 in a stable order (sorted paths, or the manifest's / range's
order), so ``--items A-B`` means the same images on every machine of a farm.
"""

from __future__ import annotations

import glob
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from impasto.runtime.errors import InvalidArgument
from impasto.runtime.ops.registry import get_op, list_ops
from impasto.runtime.ops.request import split_params

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")


class SpecError(InvalidArgument):
    """A batch spec that cannot run; the message names the file and the field."""


@dataclass(frozen=True)
class Task:
    index: int
    input: str  # the input image (for texture: the exemplar; for stylize: the content)
    output: str
    frame: int | None = None


@dataclass
class BatchSpec:
    path: Path
    op: str
    output: str
    inputs: object
    params: dict = field(default_factory=dict)  # option values, as the spec gives them
    files: dict[str, str] = field(default_factory=dict)  # image slot -> absolute path

    @property
    def root(self) -> Path:
        return self.path.parent

    def resolve(self, p: str) -> Path:
        path = Path(p).expanduser()
        return path if path.is_absolute() else self.root / path


def load_spec(path: str | Path) -> BatchSpec:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"batch spec '{path}' does not exist")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (OSError, ValueError) as e:
        raise SpecError(f"batch spec '{path}' cannot be read: {e}") from None
    unknown = sorted(set(data) - {"op", "inputs", "output", "params"})
    if unknown:
        raise SpecError(f"{path}: unknown key '{unknown[0]}' (keys: op, inputs, output, params)")
    for key in ("op", "inputs", "output"):
        if key not in data:
            raise SpecError(f"{path}: '{key}' is missing")
    if data["op"] not in list_ops():
        raise SpecError(f"{path}: op '{data['op']}' is not one of {', '.join(list_ops())}")
    if not isinstance(data["output"], str) or not data["output"]:
        raise SpecError(f"{path}: output must be a filename pattern such as 'out/{{stem}}.png'")
    params = data.get("params", {})
    if not isinstance(params, dict):
        raise SpecError(f"{path}: [params] must be a table")
    spec = BatchSpec(path.resolve(), data["op"], data["output"], data["inputs"])
    try:
        spec.params, spec.files = split_params(get_op(spec.op), params, lambda p: str(spec.resolve(p)))
    except InvalidArgument as e:
        raise SpecError(f"{path}: {e}") from None
    return spec


def _parse_range(text: str, what: str) -> tuple[int, int]:
    try:
        a, _, b = str(text).partition("-")
        first, last = int(a), int(b or a)
    except ValueError:
        raise SpecError(f"{what} '{text}' is not a range like 1-240") from None
    if last < first or first < 0:
        raise SpecError(f"{what} '{text}' is empty or negative")
    return first, last


def _input_paths(spec: BatchSpec) -> list[tuple[str, int | None]]:
    inputs = spec.inputs
    if isinstance(inputs, dict):
        if set(inputs) != {"frames", "pattern"}:
            raise SpecError(f"{spec.path}: a frame range needs exactly 'frames' and 'pattern'")
        first, last = _parse_range(inputs["frames"], "frames")
        try:
            return [(str(spec.resolve(inputs["pattern"].format(frame=f))), f) for f in range(first, last + 1)]
        except (KeyError, IndexError, ValueError) as e:
            raise SpecError(f"{spec.path}: pattern '{inputs['pattern']}' must use {{frame}} (e.g. f{{frame:04d}}.png): {e}") from None
    if isinstance(inputs, list):
        return [(str(spec.resolve(p)), None) for p in inputs]
    if not isinstance(inputs, str):
        raise SpecError(f"{spec.path}: inputs must be a glob, a folder, a manifest or a frame range")
    target = spec.resolve(inputs)
    if target.is_dir():
        return [(str(p), None) for p in sorted(target.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if target.is_file() and target.suffix in (".txt", ".json"):
        text = target.read_text()
        items = json.loads(text) if target.suffix == ".json" else [line.strip() for line in text.splitlines()]
        return [(str((target.parent / p) if not Path(p).is_absolute() else Path(p)), None) for p in items if p and not p.startswith("#")]
    return [(p, None) for p in sorted(glob.glob(str(target)))]


def expand(spec: BatchSpec) -> list[Task]:
    """The spec's tasks, numbered in a stable order; outputs must not collide."""
    tasks, seen = [], {}
    for index, (path, frame) in enumerate(_input_paths(spec)):
        p = Path(path)
        try:
            out = spec.output.format(stem=p.stem, name=p.name, index=index, frame=frame if frame is not None else index)
        except (KeyError, IndexError, ValueError) as e:
            raise SpecError(f"{spec.path}: output pattern '{spec.output}' uses an unknown field: {e} "
                            "(use {stem}, {name}, {index}, {frame})") from None
        out = str(spec.resolve(out))
        if out in seen:
            raise SpecError(f"{spec.path}: inputs '{seen[out]}' and '{path}' would both write '{out}'")
        seen[out] = path
        tasks.append(Task(index, path, out, frame))
    if not tasks:
        raise SpecError(f"{spec.path}: inputs '{spec.inputs}' match no images")
    return tasks


def select(tasks: list[Task], items: str | None) -> list[Task]:
    """The tasks whose index lies in ``items`` ('A-B' or 'A'), for farm chunks."""
    if not items:
        return tasks
    first, last = _parse_range(items, "--items")
    return [t for t in tasks if first <= t.index <= last]
