"""A job's life, off Krita's UI thread: the HTTP calls run in a QThread, results come back as signals.

Krita's API is only touched on the main thread: the docker reads the layer before starting a
:class:`JobThread` and writes layers from the slots connected to its signals.
"""

from __future__ import annotations

import threading

from PyQt5.QtCore import QThread, pyqtSignal

from .impasto_http import ImpastoClient, ImpastoError


class JobThread(QThread):
    """Runs ``start(client)`` (which yields job events) and reports each event, the result or the error."""

    event = pyqtSignal(dict)
    result = pyqtSignal(dict)
    failed = pyqtSignal(str)

    def __init__(self, client: ImpastoClient, start, parent=None):
        super().__init__(parent)
        self.client = client
        self.start_job = start
        self.job_id = None
        self._cancel = threading.Event()

    def run(self) -> None:
        try:
            events = self.start_job(self.client)
            result = self.client.finish(self._watch(events))
            self.result.emit(result)
        except ImpastoError as e:
            self.failed.emit(str(e))
        except Exception as e:  # never let an exception escape into Krita
            self.failed.emit(f"{type(e).__name__}: {e}")

    def _watch(self, events):
        for event in events:
            if self.job_id is None:
                self.job_id = event.get("job_id")
                if self._cancel.is_set():
                    self._send_cancel()
            self.event.emit(event)
            yield event

    def cancel(self) -> None:
        self._cancel.set()
        if self.job_id:
            threading.Thread(target=self._send_cancel, daemon=True).start()

    def _send_cancel(self) -> None:
        try:
            self.client.cancel(self.job_id)
        except ImpastoError:
            pass  # the job ends anyway or the server is gone: the stream reports it


class CallThread(QThread):
    """One blocking call (e.g. capabilities) off the UI thread."""

    done = pyqtSignal(object)
    failed = pyqtSignal(str)

    def __init__(self, call, parent=None):
        super().__init__(parent)
        self.call = call

    def run(self) -> None:
        try:
            self.done.emit(self.call())
        except ImpastoError as e:
            self.failed.emit(str(e))
        except Exception as e:
            self.failed.emit(f"{type(e).__name__}: {e}")
