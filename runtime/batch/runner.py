"""Running batch tasks: one :class:`TaskRunner` per worker, resumable through per-task records.

A worker builds its runner once (feature networks and settings loaded once) and runs many
tasks. Each finished task leaves a record (``<spec folder>/.impasto-batch/<spec>/<index>.json``)
with a key made of the op, its parameters, the input file's hash and impasto's version; a
task whose output exists and whose record has the same key is skipped on a re-run. Every
write (output, record) goes through a temp file and a rename. A failing task is recorded
and the others go on.
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

from google.protobuf import json_format

from impasto.runtime.api import convert
from impasto.runtime.api import studio_pb2 as pb
from impasto.runtime.atomic import atomic_output
from impasto.runtime.batch.spec import BatchSpec, Task, load_spec

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
    from impasto.runtime.server.studio import version

    return version()


class TaskRunner:
    """Runs tasks of one spec in this process, in-process (torch) or on a server (``server``)."""

    def __init__(self, spec: BatchSpec | str, *, device: str = "cpu", threads: int = 0, server: str | None = None,
                 token: str | None = None, max_side: int = 16384, vgg_weights: str | None = None):
        self.spec = load_spec(spec) if not isinstance(spec, BatchSpec) else spec
        self.device, self.server, self.token, self.max_side, self.vgg_weights = device, server, token, max_side, vgg_weights
        if threads:
            import torch

            torch.set_num_threads(threads)
        # the parameter files (style, mask, ...) are the same for every task: hashed once, into the params key
        files = {k: _sha256(v) for k, v in self.spec.params.items()
                 if k in ("style", "mask", "canvas", "content_labels", "style_labels") and isinstance(v, str) and os.path.isfile(v)}
        self.params_key = json.dumps({"op": self.spec.op, "params": self.spec.params, "files": files,
                                      "impasto": _version()}, sort_keys=True)
        self._check_params()
        self.net = None  # feature network for texture/stylize, built on first use and kept

    # --- parameters, checked once with the server's own rules ----------------------------

    def _check_params(self) -> None:
        """Parse and range-check [params] with the server's own rules (raises convert.WireError)."""
        message = self._message()
        if self.spec.op == "paint":
            convert.paint_options(message.options, self.device, self.vgg_weights)
        else:
            convert.synthesis_options(message.options, self.device, self.vgg_weights)

    def _message(self, task: Task | None = None):
        p = dict(self.spec.params)
        files = {}
        for key in ("style", "mask", "canvas", "content_labels", "style_labels"):
            if key in p and not (key == "canvas" and str(p[key]).startswith(("#", "black", "white"))):
                files[key] = p.pop(key)
        try:
            if self.spec.op == "paint":
                options = json_format.ParseDict(p, pb.PaintOptions())
                msg = pb.PaintRequest(options=options)
                for key, wire in (("style", "style"), ("mask", "mask"), ("canvas", "canvas_image")):
                    if key in files and task is not None:
                        getattr(msg, wire).encoded = Path(files[key]).read_bytes()
                if task is not None:
                    msg.image.encoded = Path(task.input).read_bytes()
                return msg
            size = str(p.pop("size", "512x512"))
            tileable = bool(p.pop("tileable", False))
            options = json_format.ParseDict(p, pb.SynthesisOptions())
            if self.spec.op == "texture":
                w, _, h = size.lower().partition("x")
                msg = pb.TextureRequest(width=int(w), height=int(h or w), tileable=tileable, options=options)
                if task is not None:
                    msg.exemplar.encoded = Path(task.input).read_bytes()
                return msg
            if "style" not in files:
                raise convert.WireError("stylize needs params.style (the style image)")
            msg = pb.StylizeRequest(options=options)
            if task is not None:
                msg.content.encoded = Path(task.input).read_bytes()
                msg.style.encoded = Path(files["style"]).read_bytes()
                for key in ("content_labels", "style_labels"):
                    if key in files:
                        getattr(msg, key).encoded = Path(files[key]).read_bytes()
            return msg
        except json_format.ParseError as e:
            raise convert.WireError(f"{self.spec.path}: [params] {e}") from None
        except ValueError as e:
            raise convert.WireError(f"{self.spec.path}: [params] {e}") from None

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
            png = self._compute(task)
            Path(task.output).parent.mkdir(parents=True, exist_ok=True)
            with atomic_output(task.output) as f:
                f.write(png)
            seconds = time.perf_counter() - start
            _write_record(self.spec, task.index, {**record, "status": "done", "key": key, "seconds": round(seconds, 3),
                                                  "finished": time.time()})
            return TaskResult(task.index, task.output, "done", seconds)
        except Exception as e:  # recorded; the batch goes on
            seconds = time.perf_counter() - start
            message = f"{type(e).__name__}: {e}"
            log.warning("task %d (%s) failed: %s", task.index, task.input, message)
            _write_record(self.spec, task.index, {**record, "status": "failed", "error": message, "seconds": round(seconds, 3),
                                                  "finished": time.time()})
            return TaskResult(task.index, task.output, "failed", seconds, message)

    def _compute(self, task: Task) -> bytes:
        message = self._message(task)
        if self.server:
            return self._on_server(message)
        if self.spec.op == "paint":
            from impasto.runtime.ops.paint_job import run_paint_job

            job = convert.paint_job(message, self.max_side, self.device, self.vgg_weights)
            return convert.paint_result(run_paint_job(job, self.max_side)).image.encoded
        from impasto.runtime.images import encode_png
        from impasto.runtime.ops.synthesis import VGGFeatureNet

        if self.spec.op == "texture":
            from impasto.runtime.ops.texture import texture

            exemplar, size, options = convert.texture_inputs(message, self.max_side, self.device, self.vgg_weights)
            self.net = self.net or VGGFeatureNet(options.features, options.vgg_weights, self.device)
            return encode_png(texture(exemplar, size, options, max_side=self.max_side, net=self.net))
        from impasto.runtime.ops.stylize import stylize

        content, style, labels, options = convert.stylize_inputs(message, self.max_side, self.device, self.vgg_weights)
        self.net = self.net or VGGFeatureNet(options.features, options.vgg_weights, self.device)
        return encode_png(stylize(content, style, options, net=self.net, **labels))

    def _on_server(self, message) -> bytes:
        from impasto.runtime.client import StudioClient

        with StudioClient(self.server, token=self.token) as client:
            events = {"paint": client.paint_events, "texture": client.texture_events,
                      "stylize": client.stylize_events}[self.spec.op](message)
            return client.wait(events).image.encoded

