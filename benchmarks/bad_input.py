"""Bad input against a real server: every case's status, whether the server kept serving, its memory.

Starts ``impasto serve`` (and so its sidecar) as a subprocess on free loopback ports, sends
a table of malformed and hostile requests over gRPC and HTTP (corrupt, truncated and
decompression-bomb images, formats the docs do not name, wrong types, negative and huge
sizes, deeply nested JSON, broken multipart bodies, unknown ops and options, 10 kB echoed
values), and prints one row per case: the status, whether it was refused cleanly (the
expected status, a message of bounded size, no INTERNAL/UNKNOWN/500), and whether the server
still answered afterwards. Then the peak resident memory of the server and the sidecar.

    python benchmarks/bad_input.py [--json results.json]
"""

from __future__ import annotations

import argparse
import io
import json
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from PIL import Image


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of zeros: a few kB that decode to width x height pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = zlib.compress(b"\0" * (((width + 7) // 8 + 1) * height), 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def encoded(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process, MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


@dataclass
class Case:
    transport: str  # grpc | http
    name: str
    expected: str  # the status name a clean refusal has
    send: Callable[[], tuple[str, str]]  # -> (status name, message)


class Target:
    """The server under test and the calls the cases make on it."""

    def __init__(self, grpc_address: str, http_base: str):
        from impasto.runtime.api import studio_pb2_grpc

        self.channel = grpc.insecure_channel(grpc_address, options=[("grpc.max_receive_message_length", 64 << 20)])
        self.stub = studio_pb2_grpc.StudioStub(self.channel)
        self.http_base = http_base

    def call(self, method: str, request, stream: bool = False) -> tuple[str, str]:
        """A gRPC call's status name and message; a job's final error event counts as its status."""
        try:
            reply = getattr(self.stub, method)(request, timeout=120)
            if stream:
                for event in reply:
                    if event.HasField("error"):
                        return event.error.code, event.error.message
                return "OK", "job finished"
            return "OK", ""
        except grpc.RpcError as e:
            return e.code().name, e.details() or ""

    def post(self, path: str, body: bytes, content_type: str = "application/json", method: str = "POST") -> tuple[str, str]:
        request = urllib.request.Request(self.http_base + path, data=body if method == "POST" else None,
                                         headers={"Content-Type": content_type}, method=method)
        try:
            with urllib.request.urlopen(request, timeout=120) as reply:
                return f"HTTP {reply.status}", ""
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", "replace")
            try:
                error = json.loads(text)
                return f"HTTP {e.code} {error.get('code', '')}".strip(), str(error.get("error", ""))
            except ValueError:
                return f"HTTP {e.code} (not JSON)", text[:200]

    def alive(self) -> bool:
        from impasto.runtime.api import studio_pb2 as pb

        try:
            self.stub.Capabilities(pb.CapabilitiesRequest(), timeout=30)
            with urllib.request.urlopen(self.http_base + "/v1/capabilities", timeout=30) as reply:
                return reply.status == 200
        except Exception:
            return False


def multipart(parts: list[tuple[str | None, bytes]], boundary: str = "b0undary") -> bytes:
    out = b""
    for name, data in parts:
        disposition = f'form-data; name="{name}"' if name else "form-data"
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def cases(t: Target) -> list[Case]:
    from impasto.runtime.api import studio_pb2 as pb
    from impasto.runtime.formats.strokes import StrokeFile
    from impasto.train.brushes.examples import example_strokes

    png = encoded(np.full((64, 64, 3), 128, np.uint8), "PNG")
    strokes = json.dumps(StrokeFile("oil", example_strokes("oil", 4, 0), 64, 48).to_dict())
    exif = Image.Exif()
    exif[0x0112] = 6
    portrait = encoded(np.zeros((40, 80, 3), np.uint8), "JPEG", exif=exif)  # shown 40 x 80
    bad_images = {
        "not an image": b"not a png at all",
        "truncated PNG": png[: len(png) // 2],
        "PNG header only": png[:33],
        "16384x16384 1-bit PNG (32 kB)": png_bomb(16384, 16384),
        "9000x9000 1-bit PNG": png_bomb(9000, 9000),
        "20000x2 PNG": png_bomb(20000, 2),
        "float TIFF": encoded(np.zeros((8, 8), np.float32), "TIFF"),
        "BMP": encoded(np.zeros((8, 8, 3), np.uint8), "BMP"),
        "GIF": encoded(np.zeros((8, 8), np.uint8), "GIF"),
        "empty bytes": b"",
    }

    def run(image: bytes | None = None, options: dict | None = None, op: str = "paint", mask: bytes | None = None,
            **raw) -> pb.OpRequest:
        m = pb.OpRequest(op=op)
        if image is not None:
            m.images["image"].encoded = image
        if mask is not None:
            m.images["mask"].encoded = mask
        if raw:
            m.images["image"].raw.CopyFrom(pb.RawImage(**raw))
        if options:
            m.options.update(options)
        return m

    def nested(depth: int) -> object:
        value: object = "oil"
        for _ in range(depth):
            value = [value]
        return value

    def edited(change: Callable[[dict], None]) -> str:
        data = json.loads(strokes)
        change(data)
        return json.dumps(data)

    def render(**kw) -> pb.RenderRequest:
        return pb.RenderRequest(**{"strokes_json": strokes, **kw})

    g: list[Case] = []
    for name, data in bad_images.items():
        g.append(Case("grpc", f"Run paint: image = {name}", "INVALID_ARGUMENT", lambda d=data: t.call("Run", run(d), True)))
        g.append(Case("grpc", f"Render: canvas_image = {name}", "INVALID_ARGUMENT",
                      lambda d=data: t.call("Render", render(canvas_image=pb.Image(encoded=d)))))
    nan = np.full(12, np.nan, np.float32).tobytes()
    g += [
        Case("grpc", "Run paint: portrait JPEG (EXIF 6) with a mask of its stored size", "INVALID_ARGUMENT",
             lambda: t.call("Run", run(portrait, mask=encoded(np.zeros((40, 80), np.uint8), "PNG")), True)),
        Case("grpc", "Run paint: raw image of the wrong length", "INVALID_ARGUMENT",
             lambda: t.call("Run", run(width=4, height=4, channels=3, data=b"\0" * 47), True)),
        Case("grpc", "Run paint: raw f32 NaN pixels", "INVALID_ARGUMENT",
             lambda: t.call("Run", run(width=2, height=2, channels=3, dtype=pb.DTYPE_F32, data=nan), True)),
        Case("grpc", "Run paint: raw 2 channels", "INVALID_ARGUMENT",
             lambda: t.call("Run", run(width=2, height=2, channels=2, data=b"\0" * 8), True)),
        Case("grpc", "Run paint: raw 0x4", "INVALID_ARGUMENT", lambda: t.call("Run", run(width=0, height=4, channels=3), True)),
        Case("grpc", "Run paint: no image", "INVALID_ARGUMENT", lambda: t.call("Run", run(), True)),
        Case("grpc", "Run paint: unknown option", "INVALID_ARGUMENT", lambda: t.call("Run", run(png, {"strokez": 3}), True)),
        Case("grpc", "Run paint: strokes = 'ten'", "INVALID_ARGUMENT", lambda: t.call("Run", run(png, {"strokes": "ten"}), True)),
        Case("grpc", "Run paint: strokes = -5", "INVALID_ARGUMENT", lambda: t.call("Run", run(png, {"strokes": -5}), True)),
        Case("grpc", "Run paint: size = -1", "INVALID_ARGUMENT", lambda: t.call("Run", run(png, {"size": -1}), True)),
        Case("grpc", "Run paint: lr = 1e308", "INVALID_ARGUMENT", lambda: t.call("Run", run(png, {"lr": 1e308}), True)),
        Case("grpc", "Run paint: canvas = '#+1+2+3'", "INVALID_ARGUMENT",
             lambda: t.call("Run", run(png, {"canvas": "#+1+2+3"}), True)),
        Case("grpc", "Run paint: 10 kB brush name", "INVALID_ARGUMENT", lambda: t.call("Run", run(png, {"brush": "x" * 10_000}), True)),
        Case("grpc", "Run paint: options nested 40 deep", "INVALID_ARGUMENT",
             lambda: t.call("Run", run(png, {"brush": nested(40)}), True)),
        Case("grpc", "Run paint: options nested 60 deep (protobuf decode limit)", "INVALID_ARGUMENT",
             lambda: t.call("Run", run(png, {"brush": nested(60)}), True)),
        Case("grpc", "Run: unknown op", "NOT_FOUND", lambda: t.call("Run", run(png, op="sculpt"), True)),
        Case("grpc", "Run: 10 kB op name", "NOT_FOUND", lambda: t.call("Run", run(png, op="o" * 10_000), True)),
        Case("grpc", "GetJob: unknown id", "NOT_FOUND", lambda: t.call("GetJob", pb.JobRef(id="no-such-job"))),
        Case("grpc", "GetJob: 10 kB id", "NOT_FOUND", lambda: t.call("GetJob", pb.JobRef(id="j" * 10_000))),
        Case("grpc", "CancelJob: 10 kB id", "NOT_FOUND", lambda: t.call("CancelJob", pb.JobRef(id="j" * 10_000))),
        Case("grpc", "Render: strokes JSON nested 100000 deep", "INVALID_ARGUMENT",
             lambda: t.call("Render", render(strokes_json="[" * 100_000 + "]" * 100_000))),
        Case("grpc", "Render: strokes JSON invalid", "INVALID_ARGUMENT", lambda: t.call("Render", render(strokes_json="{"))),
        Case("grpc", "Render: strokes JSON empty", "INVALID_ARGUMENT", lambda: t.call("Render", render(strokes_json=""))),
        Case("grpc", "Render: NaN stroke", "INVALID_ARGUMENT",
             lambda: t.call("Render", render(strokes_json=edited(lambda d: d["strokes"][0].__setitem__(0, float("nan")))))),
        Case("grpc", "Render: canvas background NaN", "INVALID_ARGUMENT",
             lambda: t.call("Render", render(strokes_json=edited(lambda d: d["canvas"].__setitem__("background", [float("nan")] * 3))))),
        Case("grpc", "Render: levels = 5 (a number)", "INVALID_ARGUMENT",
             lambda: t.call("Render", render(strokes_json=edited(lambda d: d.__setitem__("levels", 5))))),
        Case("grpc", "Render: canvas width -4", "INVALID_ARGUMENT",
             lambda: t.call("Render", render(strokes_json=edited(lambda d: d["canvas"].__setitem__("width", -4))))),
        Case("grpc", "Render: size 16000 (192 megapixels)", "INVALID_ARGUMENT", lambda: t.call("Render", render(size=16000))),
        Case("grpc", "Render: size 99999 (over max_side)", "INVALID_ARGUMENT", lambda: t.call("Render", render(size=99999))),
        Case("grpc", "Render: canvas = '#+1+2+3'", "INVALID_ARGUMENT", lambda: t.call("Render", render(canvas="#+1+2+3"))),
        Case("grpc", "Render: 10 kB canvas colour", "INVALID_ARGUMENT", lambda: t.call("Render", render(canvas="#" + "é" * 10_000))),
        Case("grpc", "Render: canvas_image ref unresolved", "INVALID_ARGUMENT",
             lambda: t.call("Render", render(canvas_image=pb.Image(ref="bg")))),
    ]
    form = "multipart/form-data; boundary=b0undary"
    good_form = multipart([("request", json.dumps({"strokesJson": strokes, "canvasImage": {"ref": "bg"}}).encode()),
                           ("bg", png)])
    h: list[Case] = [
        Case("http", "POST /v1/render: JSON nested 100000 deep", "HTTP 400 INVALID_ARGUMENT",
             lambda: t.post("/v1/render", b"[" * 100_000 + b"]" * 100_000)),
        Case("http", "POST /v1/render: strokesJson nested 100000 deep", "HTTP 400 INVALID_ARGUMENT",
             lambda: t.post("/v1/render", json.dumps({"strokesJson": "[" * 100_000 + "]" * 100_000}).encode())),
        Case("http", "POST /v1/render: objects nested 300 deep", "HTTP 400 INVALID_ARGUMENT",
             lambda: t.post("/v1/render", b'{"a":' * 300 + b"1" + b"}" * 300)),
        Case("http", "POST /v1/render: not UTF-8", "HTTP 400 INVALID_ARGUMENT",
             lambda: t.post("/v1/render", b'{"strokesJson": "\xff\xfe"}')),
        Case("http", "POST /v1/render: [1,2,3]", "HTTP 400 INVALID_ARGUMENT", lambda: t.post("/v1/render", b"[1,2,3]")),
        Case("http", "POST /v1/render: 5", "HTTP 400 INVALID_ARGUMENT", lambda: t.post("/v1/render", b"5")),
        Case("http", "POST /v1/render: invalid JSON", "HTTP 400 INVALID_ARGUMENT", lambda: t.post("/v1/render", b"{")),
        Case("http", "POST /v1/render: size -5", "HTTP 400 INVALID_ARGUMENT", lambda: t.post("/v1/render", b'{"size": -5}')),
        Case("http", "POST /v1/render: size 'big'", "HTTP 400 INVALID_ARGUMENT", lambda: t.post("/v1/render", b'{"size": "big"}')),
        Case("http", "POST /v1/render: unknown field", "HTTP 400 INVALID_ARGUMENT", lambda: t.post("/v1/render", b'{"nope": 1}')),
        Case("http", "POST /v1/render: multipart truncated", "HTTP 400 INVALID_ARGUMENT",
             lambda: t.post("/v1/render", good_form[: len(good_form) - 60], form)),
        Case("http", "POST /v1/render: multipart wrong boundary", "HTTP 400 INVALID_ARGUMENT",
             lambda: t.post("/v1/render", good_form, "multipart/form-data; boundary=other")),
        Case("http", "POST /v1/render: multipart no boundary", "HTTP 400 INVALID_ARGUMENT",
             lambda: t.post("/v1/render", good_form, "multipart/form-data")),
        Case("http", "POST /v1/render: multipart part without a name", "HTTP 400 INVALID_ARGUMENT",
             lambda: t.post("/v1/render", multipart([(None, b"{}")]), form)),
        Case("http", "POST /v1/render: multipart part twice", "HTTP 400 INVALID_ARGUMENT",
             lambda: t.post("/v1/render", multipart([("request", b"{}"), ("request", b"{}")]), form)),
        Case("http", "POST /v1/render: multipart ref to a missing part", "HTTP 400 INVALID_ARGUMENT",
             lambda: t.post("/v1/render", multipart([("request", json.dumps(
                 {"strokesJson": strokes, "canvasImage": {"ref": "nope"}}).encode())]), form)),
        Case("http", "POST /v1/render: 16384x16384 1-bit PNG canvas", "HTTP 400 INVALID_ARGUMENT",
             lambda: t.post("/v1/render", multipart([("request", json.dumps(
                 {"strokesJson": strokes, "canvasImage": {"ref": "bg"}}).encode()), ("bg", png_bomb(16384, 16384))]), form)),
        Case("http", "POST /v1/ops/paint: images = 5", "HTTP 400 INVALID_ARGUMENT",
             lambda: t.post("/v1/ops/paint", b'{"images": 5}')),
        Case("http", "POST /v1/ops/paint: options nested 50 deep", "HTTP 400 INVALID_ARGUMENT",
             lambda: t.post("/v1/ops/paint", b'{"options": {"a": ' + b"[" * 50 + b"]" * 50 + b"}}")),
        Case("http", "POST /v1/ops/paint: float TIFF image", "HTTP 400 INVALID_ARGUMENT",
             lambda: t.post("/v1/ops/paint?detach=1", multipart([("request", b'{"images": {"image": {"ref": "i"}}}'),
                                                                  ("i", bad_images["float TIFF"])]), form)),
        Case("http", "POST /v1/ops/sculpt (unknown op)", "HTTP 404 NOT_FOUND", lambda: t.post("/v1/ops/sculpt", b"{}")),
        Case("http", "GET /v1/jobs/<4 kB id>", "HTTP 404 NOT_FOUND", lambda: t.post("/v1/jobs/" + "j" * 4_000, b"", method="GET")),
        # aiohttp's HTTP parser refuses request lines over 8190 bytes itself, before any route
        Case("http", "GET /v1/jobs/<10 kB id> (over aiohttp's line limit)", "HTTP 400 (not JSON)",
             lambda: t.post("/v1/jobs/" + "j" * 10_000, b"", method="GET")),
        Case("http", "POST /v2/models/nope/infer", "HTTP 404 NOT_FOUND", lambda: t.post("/v2/models/nope/infer", b"{}")),
    ]
    return g + h


def start_server(*extra: str) -> tuple[subprocess.Popen, str, str, int]:
    models = tempfile.mkdtemp(prefix="impasto-bad-input-")
    proc = subprocess.Popen([sys.executable, "-m", "impasto.runtime.cli", "serve", "--port", "0", "--http-port", "0",
                             "--repo", models, *extra], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    match = re.search(r"gRPC on ([\d.]+:\d+), HTTP on ([\d.]+:\d+) \(sidecar pid (\d+)", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"server did not start: {line}")
    return proc, match[1], f"http://{match[2]}", int(match[3])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args()
    proc, grpc_address, http_base, sidecar = start_server()
    try:
        target = Target(grpc_address, http_base)
        assert target.alive()
        before = {"server": rss_mb(proc.pid), "sidecar": rss_mb(sidecar)}
        rows = []
        print("| transport | case | status | clean | serving after |\n|---|---|---|---|---|")
        for case in cases(target):
            start = time.perf_counter()
            status, message = case.send()
            seconds = time.perf_counter() - start
            clean = status == case.expected and 0 < len(message.encode()) <= 1500
            up = target.alive()
            rows.append({"transport": case.transport, "case": case.name, "status": status, "expected": case.expected,
                         "clean": clean, "serving": up, "seconds": round(seconds, 3), "message": message[:300]})
            print(f"| {case.transport} | {case.name} | {status} | {'yes' if clean else 'NO'} | {'yes' if up else 'NO'} |")
            if not clean:
                print(f"|   | expected {case.expected}: {message[:200]!r} | | | |")
        after = {"server": rss_mb(proc.pid), "sidecar": rss_mb(sidecar)}
        # the largest picture accepted (8192 x 8192, 1-bit: 8 kB), rendered over: what decoding may cost at most
        from impasto.runtime.api import studio_pb2 as pb
        from impasto.runtime.formats.strokes import StrokeFile
        from impasto.train.brushes.examples import example_strokes

        strokes = json.dumps(StrokeFile("oil", example_strokes("oil", 4, 0), 64, 64).to_dict())
        start = time.perf_counter()
        status, _ = target.call("Render", pb.RenderRequest(strokes_json=strokes, size=256,
                                                             canvas_image=pb.Image(encoded=png_bomb(8192, 8192))))
        largest = {"status": status, "seconds": time.perf_counter() - start,
                   "server": rss_mb(proc.pid), "sidecar": rss_mb(sidecar)}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    clean = sum(r["clean"] for r in rows)
    print(f"\n{len(rows)} cases, {clean} refused cleanly, server serving after {sum(r['serving'] for r in rows)}")
    for who in ("server", "sidecar"):
        print(f"{who}: RSS {before[who][0]:.0f} MB before, {after[who][0]:.0f} MB after, peak {after[who][1]:.0f} MB")
    print(f"largest accepted picture (8192x8192) as a Render canvas: {largest['status']} in {largest['seconds']:.1f} s; "
          f"peak RSS server {largest['server'][1]:.0f} MB, sidecar {largest['sidecar'][1]:.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "before": before, "after": after, "largest": largest},
                                              indent=1))


if __name__ == "__main__":
    main()
