"""impasto's HTTP/JSON client, standard library only: shared by the Krita and Blender add-ons.

The add-ons' build copies this file into each package (their host applications bring
their own Python, with nothing but the standard library to rely on). It speaks the server's
HTTP port (docs/server.md): JSON messages, images as binary multipart parts and binary
replies, job events as newline-delimited JSON. Calls block: run them off the UI thread.

    client = ImpastoClient("http://127.0.0.1:8000", token=None)
    caps = client.capabilities()        # every op: its image slots, options and outputs
    result = client.run("paint", {"image": png_bytes}, {"strokes": 300}, on_event=print)
    result["images"]["image"]           # PNG bytes of the painting
    result["texts"]["strokes"]          # the strokes JSON

``run`` is the one call both add-ons make, for any op the server offers; ``paint``,
``texture`` and ``stylize`` are the typed routes kept for older scripts.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid

__all__ = ["ImpastoClient", "ImpastoError", "RawImage"]


class RawImage:
    """Uncompressed pixels to send as they are (the server converts): row-major H x W x C.

    Krita: 8-bit BGRA, ``order="ORDER_BGR"``. Blender: float32 RGBA, ``dtype="DTYPE_F32"``,
    ``transfer="TRANSFER_LINEAR"`` for linear colour, ``bottom_up=True``.
    """

    def __init__(self, data: bytes, width: int, height: int, channels: int = 4, *, dtype: str = "DTYPE_U8",
                 order: str = "ORDER_RGB", transfer: str = "TRANSFER_SRGB", bottom_up: bool = False):
        self.data = bytes(data)
        self.fields = {"width": width, "height": height, "channels": channels, "dtype": dtype, "order": order,
                       "transfer": transfer, "bottom_up": bottom_up}


def _image(name: str, value, files: dict[str, bytes]) -> dict:
    """The JSON of an Image field; its bytes go to ``files`` as a multipart part."""
    files[name] = value.data if isinstance(value, RawImage) else bytes(value)
    if isinstance(value, RawImage):
        return {"raw": dict(value.fields, data_ref=name)}
    return {"ref": name}


def series_items(values: dict, name: str, series: bool) -> list[tuple[int, object]]:
    """(index from 1, value) of each item of output ``name`` in a result's ``values``, in order.

    A plain output has one item (its name); a series output (``OutputInfo.series``) goes on
    with ``name.2``, ``name.3``, ... while they are there (the wire's maps keep no order).
    """
    found = []
    while True:
        key = name if not found else f"{name}.{len(found) + 1}"
        if key not in values or (found and not series):
            return found
        found.append((len(found) + 1, values[key]))


class ImpastoError(Exception):
    """The server refused or failed a request, or could not be reached; ``str()`` is for the user."""

    def __init__(self, message: str, code: str = "UNAVAILABLE", status: int = 0):
        super().__init__(message)
        self.code, self.status = code, status


def _multipart(request: dict, files: dict[str, bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    chunks = []
    for name, data, ctype in [("request", json.dumps(request).encode(), "application/json")] + [
        (n, d, "application/octet-stream") for n, d in files.items()
    ]:
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}"\r\n'
            f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n"
        )
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


class ImpastoClient:
    def __init__(self, url: str = "http://127.0.0.1:8000", token: str | None = None, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _open(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None, timeout=None):
        headers = {"Accept": "*/*"}
        if content_type:
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url + path, data=body, headers=headers, method=method)
        try:
            return urllib.request.urlopen(request, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as e:
            try:
                body = json.loads(e.read())  # {"error": "<message>", "code": "<gRPC status name>"}
                raise ImpastoError(str(body["error"]), str(body.get("code", "UNKNOWN")), e.code) from None
            except (ValueError, KeyError, TypeError):
                raise ImpastoError(f"HTTP {e.code} from {self.url}{path}", "UNKNOWN", e.code) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ImpastoError(f"cannot reach the impasto server at {self.url}: {reason}") from None

    def _json(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        with self._open(method, path, data, "application/json" if data else None) as r:
            return json.loads(r.read())

    def capabilities(self) -> dict:
        return self._json("GET", "/v1/capabilities")

    def fetch(self, path: str) -> bytes:
        with self._open("GET", path) as r:
            return r.read()

    def _events(self, response, on_event):
        with response:
            for line in response:
                if line.strip():
                    event = json.loads(line)
                    if on_event:
                        on_event(event)
                    yield event

    def run_events(self, op: str, images: dict, options: dict | None = None, outputs=(), on_event=None):
        """Start ``op`` as a job; yields its events (dicts in protobuf's JSON mapping) until it ends.

        ``images`` maps the op's image slots to encoded file bytes (PNG, JPEG) or :class:`RawImage` pixels.
        """
        files: dict[str, bytes] = {}
        request = {"images": {name: _image(name, data, files) for name, data in images.items() if data is not None},
                   "options": options or {}, "outputs": list(outputs)}
        return self._start(f"/v1/ops/{op}", request, files, on_event)

    def run(self, op: str, images: dict, options: dict | None = None, outputs=(), on_event=None) -> dict:
        """Run ``op`` to its end: ``{"images": {name: PNG bytes}, "texts": {name: str}, "files": {name: bytes},
        "numbers": {name: float}, "job_id": ...}``; raises :class:`ImpastoError`."""
        return self.finish(self.run_events(op, images, options, outputs, on_event))

    def paint_events(self, image, options: dict | None = None, *, mask=None, style=None, canvas=None, svg: bool = False,
                     animation: bool = False, on_event=None):
        """Start a paint job; yields its events (dicts in protobuf's JSON mapping) until it ends.

        Images are encoded file bytes (PNG, JPEG) or :class:`RawImage` pixels.
        """
        files: dict[str, bytes] = {}
        request: dict = {"image": _image("image", image, files), "options": options or {}, "svg": svg, "animation": animation}
        for name, data in (("mask", mask), ("style", style), ("canvas_image", canvas)):
            if data is not None:
                request[name] = _image(name, data, files)
        return self._start("/v1/paint", request, files, on_event)

    def _start(self, route: str, request: dict, files: dict[str, bytes], on_event):
        body, ctype = _multipart(request, files)
        return self._events(self._open("POST", route, body, ctype, timeout=3600), on_event)

    def texture_events(self, exemplar: "bytes | RawImage", width: int = 512, height: int = 512, *, tileable: bool = False,
                       options: dict | None = None, on_event=None):
        """Start a texture job; yields its events until it ends (follow them with ``finish``)."""
        files: dict[str, bytes] = {}
        request = {"exemplar": _image("exemplar", exemplar, files), "width": width, "height": height,
                   "tileable": tileable, "options": options or {}}
        return self._start("/v1/texture", request, files, on_event)

    def stylize_events(self, content: "bytes | RawImage", style: "bytes | RawImage", *, content_labels=None,
                       style_labels=None, options: dict | None = None, on_event=None):
        files: dict[str, bytes] = {}
        request: dict = {"content": _image("content", content, files), "style": _image("style", style, files),
                         "options": options or {}}
        for name, data in (("content_labels", content_labels), ("style_labels", style_labels)):
            if data is not None:
                request[name] = _image(name, data, files)
        return self._start("/v1/stylize", request, files, on_event)

    def texture(self, exemplar: bytes, width: int = 512, height: int = 512, **kwargs) -> dict:
        return self.finish(self.texture_events(exemplar, width, height, **kwargs))

    def stylize(self, content: bytes, style: bytes, **kwargs) -> dict:
        return self.finish(self.stylize_events(content, style, **kwargs))

    def watch(self, job_id: str, on_event=None):
        return self._events(self._open("GET", f"/v1/jobs/{job_id}/events", timeout=3600), on_event)

    def finish(self, events) -> dict:
        """Follow ``events`` to the end: the result with its files fetched, or :class:`ImpastoError`."""
        for event in events:
            if "op_result" in event:  # a job started with run(): outputs by kind, files as URLs to fetch
                result = {"job_id": event["job_id"], "texts": event["op_result"].get("texts", {}),
                          "numbers": event["op_result"].get("numbers", {})}
                for kind in ("images", "files"):
                    result[kind] = {name: self.fetch(image["ref"]) for name, image in event["op_result"].get(kind, {}).items()}
                return result
            kind = next((k for k in ("result", "image_result") if k in event), None)  # paint / texture, stylize
            if kind is not None:
                result = dict(event[kind], job_id=event["job_id"])
                for name in ("image", "animation"):  # files come as URLs: fetch the bytes
                    if name in result:
                        result[name] = self.fetch(result[name]["ref"])
                return result
            if "error" in event:
                raise ImpastoError(event["error"]["message"], event["error"]["code"])
            if "cancelled" in event:
                raise ImpastoError("the job was cancelled", "CANCELLED")
        raise ImpastoError("the server closed the event stream before the job ended")

    def paint(self, image: bytes, options: dict | None = None, **kwargs) -> dict:
        return self.finish(self.paint_events(image, options, **kwargs))

    def render(self, strokes_json: str, size: int = 0, canvas: str = "") -> bytes:
        with self._open("POST", "/v1/render", json.dumps({"strokes_json": strokes_json, "size": size, "canvas": canvas}).encode(),
                        "application/json") as r:
            return r.read()

    def job(self, job_id: str) -> dict:
        return self._json("GET", f"/v1/jobs/{job_id}")

    def cancel(self, job_id: str) -> dict:
        return self._json("POST", f"/v1/jobs/{job_id}/cancel")
