"""The impasto docker: server, operation, its form, Run/Cancel, progress; results as new layers.

The operations and their forms come from the server's Capabilities (see ``forms.py``):
nothing here knows any operation, so an op the server adds shows up with its form.
A form whose op takes back one of its outputs (warp's flow) gets **Apply the same OP**:
:meth:`ImpastoDocker.apply_same` runs one job for each other selected layer, one after
another, with the kept output.
"""

from __future__ import annotations

import time

from krita import DockWidget, Krita
from PyQt5.QtCore import Qt
from PyQt5.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from . import document
from .forms import OpForm, job_ops, snake_keys
from .impasto_http import ImpastoClient
from .jobs import CallThread, JobThread
from .live import LiveMode

SETTINGS = "impasto"


def setting(key: str, default: str) -> str:
    return Krita.instance().readSetting(SETTINGS, key, default)


class ImpastoDocker(DockWidget):
    def __init__(self):
        super().__init__()
        self.setWindowTitle("impasto")
        self.capabilities = None
        self.thread = None
        self.job = None  # the running job's forms.Request
        self.forms: dict[str, OpForm] = {}
        root = QWidget(self)
        outer = QVBoxLayout(root)
        top = QFormLayout()
        outer.addLayout(top)

        self.url = QLineEdit(setting("url", "http://127.0.0.1:8000"))
        self.token = QLineEdit(setting("token", ""))
        self.token.setEchoMode(QLineEdit.Password)
        self.token.setPlaceholderText("none")
        connect = QPushButton("Connect")
        connect.clicked.connect(self.connect_server)
        self.status = QLabel("not connected")
        self.status.setWordWrap(True)
        top.addRow("Server", self.url)
        top.addRow("Token", self.token)
        top.addRow(connect, self.status)
        self.op = QComboBox()
        self.op.setToolTip("the operations this server offers (Connect to list them)")
        self.op.currentIndexChanged.connect(self.show_form)
        top.addRow("Operation", self.op)

        self.stack = QStackedWidget()  # one form per op: values survive switching between ops
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)  # the form narrows with the docker
        scroll.setMinimumHeight(240)
        scroll.setWidget(self.stack)
        outer.addWidget(scroll, 1)

        bottom = QFormLayout()
        outer.addLayout(bottom)
        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(lambda: self.run())
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        bottom.addRow(buttons)
        self.progress = QProgressBar()
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextSelectableByMouse)
        bottom.addRow(self.progress)
        bottom.addRow(self.message)
        self.setWidget(root)
        self.live = LiveMode(self.run_live, lambda: self.thread is not None, parent=self)
        self.live_form: OpForm | None = None  # the form whose Live box is on
        self.pending: list = []  # layers "Apply the same" has still to run on, after the running one
        self.reuse_form: OpForm | None = None  # the form "Apply the same" runs
        self.batch: list[str] = []  # layers "Apply the same" added so far
        self.batch_size = 0  # how many layers it runs on
        self.batch_started = 0.0  # when it began (the message gives the time for all its layers)
        self.last_seconds = 0.0  # the last job's round trip, from reading the layers to its layers placed

    # --- server ---------------------------------------------------------------------------

    def client(self) -> ImpastoClient:
        return ImpastoClient(self.url.text().strip(), self.token.text().strip() or None)

    def connect_server(self) -> None:
        Krita.instance().writeSetting(SETTINGS, "url", self.url.text().strip())
        Krita.instance().writeSetting(SETTINGS, "token", self.token.text().strip())
        self.status.setText("connecting...")
        call = CallThread(self.client().capabilities, self)
        call.done.connect(self.connected)
        call.failed.connect(lambda message: self.status.setText(f"not connected: {message}"))
        call.start()
        self._call = call

    def connected(self, capabilities: dict) -> None:
        """Build one form per op the server runs as a job (keeping the chosen op if it is still there)."""
        self.capabilities = capabilities = snake_keys(capabilities)
        chosen = self.op.currentText()
        self.stop_live()
        self.op.blockSignals(True)
        self.op.clear()
        for form in self.forms.values():
            self.stack.removeWidget(form)
            form.deleteLater()
        self.forms = {}
        for info in job_ops(capabilities):
            form = self.forms[info["name"]] = OpForm(info, models=capabilities.get("models", []))
            if form.live is not None:
                form.live.toggled.connect(lambda on, f=form: self.live_toggled(f, on))
            if form.apply_button is not None:
                form.apply_button.clicked.connect(lambda *_, f=form: self.apply_same(f))
            self.stack.addWidget(form)
            self.op.addItem(info["name"])
            self.op.setItemData(self.op.count() - 1, info.get("help", ""), Qt.ToolTipRole)
        self.op.blockSignals(False)
        self.choose_op(chosen if chosen in self.forms else self.op.itemText(0))
        devices = ", ".join(capabilities.get("devices", []))
        self.status.setText(f"connected: impasto {capabilities.get('version', '?')} on {devices}")

    # --- the form ---------------------------------------------------------------------------

    @property
    def form(self) -> OpForm | None:
        """The chosen op's form: ``docker.form.set("strokes", 300)``."""
        return self.forms.get(self.op.currentText())

    def ops(self) -> list[str]:
        return [self.op.itemText(i) for i in range(self.op.count())]

    def choose_op(self, name: str) -> OpForm:
        if name not in self.forms:
            raise KeyError(f"the server offers no op '{name}' (it has {', '.join(self.forms) or 'none'})")
        self.op.setCurrentIndex(self.op.findText(name))
        self.show_form()
        return self.forms[name]

    def show_form(self, *_) -> None:
        form = self.form
        if form is not None:
            self.stack.setCurrentWidget(form)
        if self.live_form is not None and self.live_form is not form:
            self.stop_live()  # live mode belongs to the form on show

    # --- live mode (live.py) ------------------------------------------------------------------

    def live_toggled(self, form: OpForm, on: bool) -> None:
        """Live on: watch the active layer of the active document (the source: labels, line art, a picture)
        and the layer chosen for the form's hints slot, if any; off: stop watching."""
        if not on:
            if self.live_form is form:
                self.live.stop()
                self.live_form = None
            return
        doc = Krita.instance().activeDocument()
        node = doc.activeNode() if doc is not None else None
        what = form.live_source()
        if node is None or node.type() != "paintlayer":
            form.live.setChecked(False)
            self.message.setText(f"live: select the paint layer with the {what} first")
            return
        if any(n.uniqueId() == node.uniqueId() for n in form.live_layers()):
            form.live.setChecked(False)
            self.message.setText(f"live: the active layer '{node.name()}' is the {form.live_slot} layer: "
                                 f"select the layer with the {what} first")
            return
        self.live_form = form
        self.live.start(doc, node, form.live_layers)
        more = "".join(f" and '{n.name()}'" for n in self.live.watched()[1:])
        self.message.setText(f"live: watching '{node.name()}'{more}")

    def stop_live(self) -> None:
        form, self.live_form = self.live_form, None
        self.live.stop()
        if form is not None and form.live is not None:
            form.live.blockSignals(True)
            form.live.setChecked(False)
            form.live.blockSignals(False)

    def run_live(self) -> None:
        if self.live_form is not None:
            self.run(self.live_form, self.live.doc, self.live.node, live=True)

    # --- a job ----------------------------------------------------------------------------

    def run(self, form: OpForm | None = None, doc=None, source=None, live: bool = False) -> None:
        """Run ``form`` (the chosen op's) on ``source`` (the active layer) of ``doc`` (the active document).

        ``live``: started by live mode: the op's live settings (its fast settings) go over the form's options,
        and the result replaces the previous live result layer.
        """
        form = form or self.form
        if form is None:
            self.message.setText("press Connect first: the operations come from the server")
            return
        if self.thread is not None:
            self.message.setText("a job is running: wait for it or cancel it")
            return
        doc = doc if doc is not None else Krita.instance().activeDocument()
        try:
            request = form.request(doc, source if source is not None else doc.activeNode() if doc is not None else None,
                                   live=live)
        except document.UnsupportedDocument as e:
            self.message.setText(f"live: {e}" if live else str(e))
            return
        self.launch(doc, request)

    def apply_same(self, form: OpForm | None = None, doc=None, layers: list | None = None) -> None:
        """Run ``form``'s op on each of ``layers`` (the active view's selected layers) but the one the
        kept output (warp's flow) was made from, with that output in its slot: one job a layer, in turn,
        each result in a new layer above its layer."""
        form = form or self.form
        if form is None or form.apply_button is None:
            self.message.setText("this operation has nothing to apply again")
            return
        if self.thread is not None:
            self.message.setText("a job is running: wait for it or cancel it")
            return
        if doc is None:
            doc = Krita.instance().activeDocument()
        if layers is None:
            layers = selected_layers(doc)
        try:
            targets = form.reuse_targets(doc, layers)
        except document.UnsupportedDocument as e:
            self.message.setText(str(e))
            return
        self.pending, self.batch, self.batch_size, self.reuse_form = targets, [], len(targets), form
        self.batch_started = time.monotonic()
        self.next_layer(doc)

    def next_layer(self, doc) -> None:
        """Read the next layer "Apply the same" goes through (now: as it is now) and start its job."""
        node = self.pending.pop(0)
        try:
            request = self.reuse_form.reuse_request(doc, node)
        except document.UnsupportedDocument as e:
            self.message.setText(f"{e} (on '{node.name()}'; {len(self.pending)} more layers not sent)")
            self.pending = []
            return
        self.launch(doc, request)

    def launch(self, doc, request) -> None:
        """Start ``request`` (read on the main thread) on a job thread; results land in ``doc``."""
        self.doc, self.job, self.started = doc, request, time.monotonic()
        self.thread = JobThread(self.client(), request.start, self)
        self.thread.event.connect(self.on_event)
        self.thread.result.connect(self.on_result)
        self.thread.failed.connect(self.on_failed)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        at = self.batch_size - len(self.pending)
        self.message.setText(f"{request.op}: sent" + (f" (layer {at} of {self.batch_size})" if request.reuse else ""))
        self.thread.start()

    def cancel(self) -> None:
        self.pending = []
        if self.thread is not None:
            self.thread.cancel()
            self.message.setText("cancelling...")

    def on_event(self, event: dict) -> None:
        if "queued" in event:
            self.message.setText(f"queued (position {event['queued'].get('position', 1)})")
        elif "started" in event:
            self.message.setText("running")
        elif "progress" in event:
            p = event["progress"]
            total = int(p.get("total", 0)) or 1
            self.progress.setMaximum(total)
            self.progress.setValue(int(p.get("step", 0)))
            preview = p.get("preview")
            if preview and preview.get("ref"):
                self._show_preview(preview["ref"])

    def _show_preview(self, ref: str) -> None:
        """Show a preview; if the result arrives while it is being written (the projection's
        refresh runs a nested event loop), the preview layer is taken away again."""
        job = self.job
        try:
            png = self.client().fetch(ref)
            if self.job is not job or self.thread is None:
                return  # the job ended meanwhile
            document.update_preview_layer(self.doc, job.source, job.inputs, png)
            if self.job is not job or self.thread is None:
                document.remove_preview_layer(self.doc)
        except Exception as e:  # a preview is a nicety: report, go on
            self.message.setText(f"running (preview failed: {e})")

    def on_result(self, result: dict) -> None:
        job = self.job
        try:
            document.remove_preview_layer(self.doc)
            if job.live:  # the new live result takes the place of the previous one
                document.remove_layers_named(self.doc, job.name)
            added = job.place(self.doc, result)
            form = self.forms.get(job.op)
            if job.keep and form is not None:
                form.remember(job, result)
            self.progress.setValue(self.progress.maximum())
            seconds = self.last_seconds = time.monotonic() - self.started  # the round trip: read, run, placed
            if job.reuse:
                self.batch += added
                layers = ", ".join(f"'{a}'" for a in self.batch)
                at = self.batch_size - len(self.pending)
                total = time.monotonic() - self.batch_started
                self.message.setText(f"done: {layers} ({total:.1f} s)" if not self.pending else
                                     f"{job.op}: layer {at} of {self.batch_size} done")
            elif added:
                more = "".join(f", '{a}'" for a in added[1:])
                snapped = f"; {job.snapped} stray label pixels snapped to the palette" if job.snapped else ""
                notes = "".join(f"; {note}" for note in job.notes)
                done = "live: updated" if job.live else "done:"
                self.message.setText(f"{done} layer '{added[0]}'{more} ({seconds:.1f} s{snapped}{notes})")
            else:
                self.message.setText(f"done, but the result has nothing to put in the document ({seconds:.0f} s)")
        except document.UnsupportedDocument as e:
            self.pending = []  # "Apply the same" stops too
            self.message.setText(str(e))
        except Exception as e:  # never leave the docker showing "running" over a half-written result
            self.pending = []
            self.message.setText(f"could not add the result: {type(e).__name__}: {e}")
        finally:
            self.job_ended()

    def on_failed(self, message: str) -> None:
        job, left = self.job, len(self.pending)
        self.pending = []  # "Apply the same" stops at the first failure
        try:
            document.remove_preview_layer(self.doc)
        finally:
            where = f" (on '{job.source.name()}'; {left} more layers not sent)" if job is not None and job.reuse else ""
            self.message.setText(message + where)
            self.job_ended()

    def job_ended(self) -> None:
        """The job is over once its result is in the document, not when its thread stops.

        Writing layers refreshes the projection, which runs a nested event loop; the thread's
        ``finished`` can arrive inside it, so ending the job there would re-enable Run while
        the result is still being written. The thread is freed only here: deleting it earlier
        drops its queued signals (PyQt ties them to the sender).
        """
        thread, self.thread = self.thread, None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if thread is not None:  # it emitted its last signal; let it return, then free it
            thread.wait()
            thread.deleteLater()
        if self.pending:  # "Apply the same": the next layer
            self.next_layer(self.doc)

    def canvasChanged(self, canvas) -> None:  # Krita calls this when the active view changes
        pass


def selected_layers(doc) -> list:
    """The layers selected in the active view (Ctrl+click in the Layers docker) when it shows ``doc``,
    else the active layer."""
    window = Krita.instance().activeWindow()
    view = window.activeView() if window is not None else None
    shown = view.document() if view is not None else None
    if shown is not None and doc is not None and shown.rootNode().uniqueId() == doc.rootNode().uniqueId():
        nodes = list(view.selectedNodes())
        if nodes:
            return nodes
    node = doc.activeNode() if doc is not None else None
    return [node] if node is not None else []
