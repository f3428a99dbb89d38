"""Jobs off Blender's main thread: HTTP in a worker thread, results applied by a timer on the main thread.

Blender's data may only be touched on the main thread. A :class:`Job` runs its requests in a
``threading.Thread`` and puts what happens on a queue; :func:`poll`, registered with
``bpy.app.timers``, drains the queue on the main thread: it updates the panel's progress and
message, and hands the result to the job's ``apply`` callback (which makes the image).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import bpy

from .impasto_http import ImpastoClient, ImpastoError

POLL_SECONDS = 0.2


class Job:
    def __init__(self, label: str, client: ImpastoClient, start: Callable, apply: Callable[[dict], str],
                 fail: Callable[[str], None] | None = None):
        self.label = label
        self.fail = fail  # error message -> None; runs on the main thread
        self.client = client
        self.start_job = start  # client -> events (or, for a plain call, -> result dict)
        self.apply = apply  # result -> message; runs on the main thread
        self.queue: queue.Queue = queue.Queue()
        self.job_id: str | None = None
        self.cancelled = threading.Event()
        self.done = False

    def run(self) -> None:
        """The worker thread's body (also callable directly, for scripts that wait)."""
        try:
            outcome = self.start_job(self.client)
            if not isinstance(outcome, dict):
                outcome = self.client.finish(self._follow(outcome))
            self.queue.put(("result", outcome))
        except ImpastoError as e:
            self.queue.put(("error", str(e)))
        except Exception as e:  # never let a worker die silently
            self.queue.put(("error", f"{type(e).__name__}: {e}"))

    def _follow(self, events):
        for event in events:
            self.job_id = self.job_id or event.get("job_id")
            if "progress" in event:
                p = event["progress"]
                self.queue.put(("progress", (int(p.get("step", 0)), int(p.get("total", 0)) or 1)))
            elif "started" in event:
                self.queue.put(("message", f"{self.label}: running"))
            elif "queued" in event:
                self.queue.put(("message", f"{self.label}: queued"))
            if self.cancelled.is_set() and self.job_id:
                self._cancel_on_server()
            yield event

    def cancel(self) -> None:
        self.cancelled.set()
        if self.job_id:
            threading.Thread(target=self._cancel_on_server, daemon=True).start()

    def _cancel_on_server(self) -> None:
        try:
            self.client.cancel(self.job_id)
        except ImpastoError:
            pass


_current: Job | None = None


def current() -> Job | None:
    return _current


def start(job: Job, wait: bool = False) -> None:
    """Run ``job`` in a worker thread and watch it from a timer; ``wait`` runs it here and applies it now."""
    global _current
    _current = job
    state = bpy.context.scene.impasto
    state.running = True
    state.progress = 0.0
    state.message = f"{job.label}: sent"
    if wait:
        job.run()
        poll()
        return
    threading.Thread(target=job.run, daemon=True, name=f"impasto-{job.label}").start()
    if not bpy.app.timers.is_registered(poll):
        bpy.app.timers.register(poll, first_interval=POLL_SECONDS)


def poll() -> float | None:
    """Timer callback on the main thread: apply what the worker reported; None stops the timer."""
    global _current
    job = _current
    if job is None:
        return None
    state = bpy.context.scene.impasto
    while True:
        try:
            kind, value = job.queue.get_nowait()
        except queue.Empty:
            break
        if kind == "progress":
            step, total = value
            state.progress = 100.0 * step / total
            _status(f"impasto {job.label}: {state.progress:.0f}%")
        elif kind == "message":
            state.message = value
        elif kind == "result":
            try:
                state.message = job.apply(value)
                state.progress = 100.0
            except Exception as e:  # e.g. the result does not fit the image any more
                state.message = f"{job.label} failed: {e}"
            job.done = True
        elif kind == "error":
            state.message = f"{job.label} failed: {value}"
            if job.fail is not None:
                job.fail(value)
            job.done = True
    _redraw()
    if job.done:
        state.running = False
        _current = None
        _status(None)
        return None
    return POLL_SECONDS


def _status(text: str | None) -> None:
    workspace = getattr(bpy.context, "workspace", None)
    if workspace is not None:
        try:
            workspace.status_text_set(text)
        except (AttributeError, RuntimeError):
            pass  # no window (background mode)


def _redraw() -> None:
    wm = getattr(bpy.context, "window_manager", None)
    for window in getattr(wm, "windows", []):
        for area in window.screen.areas:
            if area.type in ("IMAGE_EDITOR", "NODE_EDITOR"):
                area.tag_redraw()
