"""The impasto docker: server, operation, options, Run/Cancel, progress; results as new layers."""

from __future__ import annotations

from krita import DockWidget, Krita
from PyQt5.QtCore import Qt
from PyQt5.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QWidget,
)

from . import document
from .impasto_http import ImpastoClient
from .jobs import CallThread, JobThread

SETTINGS = "impasto"


class StyleCombo(QComboBox):
    """'none', 'image file...', then the document's paint layers, refreshed each time it opens."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.addItem("none")
        self.addItem("image file...")
        self.layers = []

    def showPopup(self) -> None:
        self.refresh()
        super().showPopup()

    def refresh(self) -> None:
        current = self.currentIndex()
        while self.count() > 2:
            self.removeItem(2)
        self.layers = document.paint_layers(Krita.instance().activeDocument())
        for layer in self.layers:
            self.addItem(f"layer: {layer.name()}")
        self.setCurrentIndex(min(current, self.count() - 1))

    def layer(self):
        i = self.currentIndex() - 2
        return self.layers[i] if 0 <= i < len(self.layers) else None


def setting(key: str, default: str) -> str:
    return Krita.instance().readSetting(SETTINGS, key, default)


class ImpastoDocker(DockWidget):
    def __init__(self):
        super().__init__()
        self.setWindowTitle("impasto")
        self.capabilities = None
        self.thread = None
        self.inputs = None
        self.source = None
        root = QWidget(self)
        form = QFormLayout(root)

        self.url = QLineEdit(setting("url", "http://127.0.0.1:8000"))
        self.token = QLineEdit(setting("token", ""))
        self.token.setEchoMode(QLineEdit.Password)
        self.token.setPlaceholderText("none")
        connect = QPushButton("Connect")
        connect.clicked.connect(self.connect_server)
        self.status = QLabel("not connected")
        self.status.setWordWrap(True)
        form.addRow("Server", self.url)
        form.addRow("Token", self.token)
        form.addRow(connect, self.status)

        self.op = QComboBox()
        self.op.currentTextChanged.connect(self.update_options)
        form.addRow("Operation", self.op)
        self.brush = QComboBox()
        self.brush.addItems(["oil", "marker", "watercolor", "tape"])
        self.strokes = QSpinBox()
        self.strokes.setRange(1, 20000)
        self.strokes.setValue(500)
        self.levels = QSpinBox()
        self.levels.setRange(1, 16)
        self.levels.setValue(5)
        self.loss = QComboBox()
        self.loss.addItems(["histogram", "gram", "sliced"])
        form.addRow("Brush", self.brush)
        form.addRow("Strokes", self.strokes)
        form.addRow("Detail levels", self.levels)
        form.addRow("Loss", self.loss)

        style_row = QHBoxLayout()
        self.style = StyleCombo()
        self.style_path = ""
        pick = QPushButton("...")
        pick.clicked.connect(self.pick_style_file)
        style_row.addWidget(self.style)
        style_row.addWidget(pick)
        form.addRow("Style", style_row)
        self.selection_only = QCheckBox("Selection only")
        self.vector = QCheckBox("Strokes as a vector layer too")
        form.addRow(self.selection_only)
        form.addRow(self.vector)

        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        form.addRow(buttons)
        self.progress = QProgressBar()
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextSelectableByMouse)
        form.addRow(self.progress)
        form.addRow(self.message)
        self.setWidget(root)
        self.update_options(self.op.currentText())

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
        self.capabilities = capabilities
        ops = [op["name"] for op in capabilities.get("ops", []) if op["name"] in ("paint", "stylize")]
        self.op.clear()
        self.op.addItems(ops)
        brushes = [b["name"] for b in capabilities.get("brushes", [])]
        if brushes:
            self.brush.clear()
            self.brush.addItems(brushes)
        devices = ", ".join(capabilities.get("devices", []))
        self.status.setText(f"connected: impasto {capabilities.get('version', '?')} on {devices}")

    def update_options(self, op: str) -> None:
        paint = op in ("paint", "")
        for widget in (self.brush, self.strokes, self.levels, self.vector):
            widget.setEnabled(paint)
        self.loss.setEnabled(not paint)

    def pick_style_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Style image", "", "Images (*.png *.jpg *.jpeg *.webp)")
        if path:
            self.style_path = path
            self.style.setCurrentIndex(1)
            self.style.setItemText(1, path.rsplit("/", 1)[-1])

    # --- a job ----------------------------------------------------------------------------

    def options(self) -> dict:
        if self.op.currentText() == "stylize":
            return {"loss": self.loss.currentText()}
        return {"brush": self.brush.currentText(), "strokes": self.strokes.value(), "levels": self.levels.value()}

    def run(self) -> None:
        doc = Krita.instance().activeDocument()
        try:
            self.source = doc.activeNode() if doc is not None else None
            self.inputs = document.read_layer(doc, self.source, self.selection_only.isChecked())
        except document.UnsupportedDocument as e:
            self.message.setText(str(e))
            return
        op = self.op.currentText() or "paint"
        options = self.options()
        style = None
        if self.style.currentIndex() == 1 and self.style_path:
            with open(self.style_path, "rb") as f:
                style = f.read()
        elif self.style.layer() is not None:
            style = document.layer_image(doc, self.style.layer())
        inputs, want_svg = self.inputs, self.vector.isChecked()
        if op == "stylize":
            if style is None:
                self.message.setText("stylize needs a style image: pick a file or a layer")
                return

            def start(client):
                return client.stylize_events(inputs.image(), style, options=options)
        else:
            options["size"] = max(inputs.width, inputs.height)

            def start(client):
                return client.paint_events(inputs.image(), options, mask=inputs.mask_image(), style=style, svg=want_svg)

        self.doc, self.job_op, self.job_options = doc, op, options
        self.thread = JobThread(self.client(), start, self)
        self.thread.event.connect(self.on_event)
        self.thread.result.connect(self.on_result)
        self.thread.failed.connect(self.on_failed)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.message.setText(f"{op}: sent")
        self.thread.start()

    def cancel(self) -> None:
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
        try:
            png = self.client().fetch(ref)
            document.update_preview_layer(self.doc, self.source, self.inputs, png)
        except Exception as e:  # a preview is a nicety: report, go on
            self.message.setText(f"running (preview failed: {e})")

    def on_result(self, result: dict) -> None:
        try:
            document.remove_preview_layer(self.doc)
            name = document.layer_name(self.job_op, self.job_options)
            document.add_result_layer(self.doc, self.source, self.inputs, result["image"], name)
            if self.job_op == "paint" and self.vector.isChecked() and result.get("svg"):
                document.add_vector_layer(self.doc, self.source, result["svg"], name + " strokes")
            self.progress.setValue(self.progress.maximum())
            self.message.setText(f"done: layer '{name}' ({float(result.get('seconds', 0)):.0f} s)")
        except document.UnsupportedDocument as e:
            self.message.setText(str(e))
        except Exception as e:  # never leave the docker showing "running" over a half-written result
            self.message.setText(f"could not add the result: {type(e).__name__}: {e}")
        finally:
            self.job_ended()

    def on_failed(self, message: str) -> None:
        try:
            document.remove_preview_layer(self.doc)
        finally:
            self.message.setText(message)
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

    def canvasChanged(self, canvas) -> None:  # Krita calls this when the active view changes
        pass
