"""Running batch tasks: one :class:`TaskRunner` per worker, resumable through per-task records.

A worker builds its runner once (feature networks and settings loaded once) and runs many
tasks. Each finished task leaves a record (``<spec folder>/.impasto-batch/<spec>/<index>.json``)
with a key made of the op, its parameters, the input file's hash and impasto's version; a
task whose output exists and whose record has the same key is skipped on a re-run. Every
write (output, record) goes through a temp file and a rename. A failing task is recorded
and the others go on. An op whose main output is a series (``--variations``) writes its
further items beside the output, ``out/a.png``, ``out/a.2.png``, ... (the main file last).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from impasto.runtime.atomic import atomic_output
from impasto.runtime.batch.spec import BatchSpec, Task, load_spec
from impasto.runtime.errors import InvalidArgument, message_of
from impasto.runtime.ops.registry import RunContext, get_op, series_path
from impasto.runtime.ops.request import FileImage, OpRequest, run_op, use_local_models
from impasto.train.options import read_options

log = logging.getLogger(__name__)

RUN_ID = uuid.uuid4().hex[:12]  # this process's run, written into the records it makes


@dataclass
class TaskResult:
    index: int
    output: str
    status: str  # done | skipped | failed
    seconds: float = 0.0
    error: str = ""


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def records_folder(spec: BatchSpec) -> Path:
    return spec.root / ".impasto-batch" / spec.path.stem


def read_record(spec: BatchSpec, index: int) -> dict | None:
    path = records_folder(spec) / f"{index}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_record(spec: BatchSpec, index: int, record: dict) -> None:
    folder = records_folder(spec)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_output(folder / f"{index}.json", "w") as f:
        json.dump(record, f, indent=1)


def _version() -> str:
    from impasto import __version__

    return __version__


class TaskRunner:
    """Runs tasks of one spec in this process (the op's own run, no protobuf) or on a server (``server``).

    Every op runs through the same path: the task's input fills the op's first image slot,
    the spec's files its other slots, ``[params]`` its options.
    """

    def __init__(self, spec: BatchSpec | str, *, device: str = "cpu", threads: int = 0, server: str | None = None,
                 token: str | None = None, max_side: int = 16384, vgg_weights: str | None = None,
                 repo: str | None = None, backend: str = "auto"):
        self.spec = load_spec(spec) if not isinstance(spec, BatchSpec) else spec
        self.op = get_op(self.spec.op)
        self.server, self.token = server, token
        if threads:
            import torch

            torch.set_num_threads(threads)
        # the parameter files (style, mask, ...) are the same for every task: hashed once, into the params key
        files = {k: _sha256(v) for k, v in self.spec.files.items() if os.path.isfile(v)}
        self.params_key = json.dumps({"op": self.spec.op, "params": self.spec.params, "files": files,
                                      "impasto": _version()}, sort_keys=True)
        self.ctx = RunContext(device=device, max_side=max_side, vgg_weights=vgg_weights)  # its cache outlives tasks
        if self.op.runs_in == "engine" and not server:  # feed-forward ops: the repository's models, loaded once
            use_local_models(self.ctx, repo, backend)
        self._check_params()

    def _check_params(self) -> None:
        """[params] checked with the op's own rules before any work (raises InvalidArgument naming the key)."""
        slot = self.op.images[0].name
        label = f"{self.spec.path}: [params] {{}}".format
        if slot in self.spec.files:
            raise InvalidArgument(label(f"{slot}: the inputs fill this image; remove it from [params]"))
        missing = [s.name for s in self.op.images[1:] if s.missing_from(self.spec.files)]
        if missing:
            raise InvalidArgument(label(f"{missing[0]}: {self.spec.op} needs this image (a file)"))
        for name, path in self.spec.files.items():
            if not os.path.isfile(path):
                raise InvalidArgument(label(f"{name}: '{path}' does not exist"))
        read_options(self.op.options, self.spec.params, label=lambda n: label(n))

    def request(self, task: Task) -> OpRequest:
        images = {self.op.images[0].name: FileImage(task.input)}
        images.update({name: FileImage(path) for name, path in self.spec.files.items()})
        return OpRequest(self.spec.op, images, dict(self.spec.params))

    # --- running ---------------------------------------------------------------------------

    def key(self, task: Task) -> str:
        """What a finished task's record must match: op, params, parameter files and the input's content."""
        digest = hashlib.sha256(self.params_key.encode())
        digest.update(_sha256(task.input).encode() if os.path.isfile(task.input) else b"missing")
        return digest.hexdigest()

    def run(self, task: Task) -> TaskResult:
        key = self.key(task)  # hashes the input once, for the skip check and the new record
        record = read_record(self.spec, task.index)
        if record and record.get("status") == "done" and record.get("key") == key and os.path.isfile(task.output):
            return TaskResult(task.index, task.output, "skipped")
        start = time.perf_counter()
        record = {"index": task.index, "input": task.input, "output": task.output, "run": RUN_ID}
        try:
            if not os.path.isfile(task.input):
                raise FileNotFoundError(f"input '{task.input}' does not exist")
            pngs = self._compute(task)
            Path(task.output).parent.mkdir(parents=True, exist_ok=True)
            for index in sorted(pngs, reverse=True):  # the main file last: it marks the task done
                with atomic_output(series_path(task.output, index)) as f:
                    f.write(pngs[index])
            seconds = time.perf_counter() - start
            _write_record(self.spec, task.index, {**record, "status": "done", "key": key, "seconds": round(seconds, 3),
                                                  "finished": time.time()})
            return TaskResult(task.index, task.output, "done", seconds)
        except Exception as e:  # recorded; the batch goes on
            seconds = time.perf_counter() - start
            message = message_of(e)
            log.warning("task %d (%s) failed: %s", task.index, task.input, message)
            _write_record(self.spec, task.index, {**record, "status": "failed", "error": message, "seconds": round(seconds, 3),
                                                  "finished": time.time()})
            return TaskResult(task.index, task.output, "failed", seconds, message)

    def _compute(self, task: Task) -> dict[int, bytes]:
        """The PNGs of the op's main output for ``task``, by item (1; a series output's 2, 3, ... beside it)."""
        if self.server:
            return self._on_server(task)
        from impasto.runtime.images import encode_png

        outcome = run_op(self.op, self.request(task), self.ctx)
        return {index: encode_png(value) for index, _, value in self.op.primary_output.items_in(outcome.values)}

    def _on_server(self, task: Task) -> dict[int, bytes]:
        from impasto.runtime.client import StudioClient

        request = self.request(task)
        images = {name: Path(source.path).read_bytes() for name, source in request.images.items()}
        with StudioClient(self.server, token=self.token) as client:
            result = client.run(self.spec.op, images, request.options)
        return {index: value.encoded for index, _, value in self.op.primary_output.items_in(result.images)}
