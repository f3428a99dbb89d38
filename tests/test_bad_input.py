"""Hostile and broken input, for real: decode-time memory bounds, formats, EXIF orientation,
deep JSON, malformed HTTP bodies, long echoed values and late output checks.

Each test sends what a careless or hostile client sends, to a real `impasto serve` on real
sockets (or the real CLI), and checks the status, that the message names the field, and that
the server keeps serving with bounded memory.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from impasto.runtime.api import studio_pb2 as pb
from impasto.runtime.client import StudioClient
from impasto.runtime.errors import MAX_MESSAGE_BYTES, InvalidArgument, message_of
from impasto.runtime.formats.strokes import StrokeFile
from impasto.runtime.images import ImageInputError, decode_image, decode_rgba, image_size
from impasto.runtime.ops.registry import RunContext, get_op
from impasto.runtime.ops.request import FileImage, OpRequest, prepare
from impasto.train.brushes.examples import example_strokes
from serving import RunningServer


def png_bomb(width: int = 16384, height: int = 16384) -> bytes:
    """A valid 1-bit PNG of ``width`` x ``height`` zeros: about 32 kB that decode to gigabytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = zlib.compress(b"\0" * (((width + 7) // 8 + 1) * height), 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def encoded(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def portrait_jpeg() -> bytes:
    """Stored 40 wide x 20 tall with a red top-left quarter, EXIF Orientation 6 (shown turned a quarter clockwise)."""
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:10, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encoded(stored, "JPEG", exif=exif, quality=95)


STROKES_JSON = json.dumps(StrokeFile("oil", example_strokes("oil", 6, 0), 64, 48).to_dict())
DEEP = "[" * 100_000 + "]" * 100_000


def peak_rss_mb(pid: int) -> float:
    """The peak resident memory of a live process (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


def http(server, path: str, body: bytes, content_type: str = "application/json") -> tuple[int, dict]:
    request = urllib.request.Request(server.http + path, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, {}
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def multipart(parts: list[tuple[str | None, bytes]], boundary: str = "b0undary") -> bytes:
    out = b""
    for name, data in parts:
        disposition = f'form-data; name="{name}"' if name else "form-data"
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = RunningServer("--repo", str(tmp_path_factory.mktemp("no-models")))
    yield s
    s.stop()


# --- decoding: limits from the header, formats, orientation ------------------------------------


def test_a_small_file_declaring_a_huge_image_is_refused_before_decoding():
    bomb = png_bomb()
    assert len(bomb) < 64_000
    start = time.perf_counter()
    for read in (image_size, decode_image, decode_rgba):
        with pytest.raises(ImageInputError, match=r"canvas_image declares 268\.4 megapixels; the limit is 67\.1"):
            read(bomb, what="canvas_image")
    with pytest.raises(ImageInputError, match=r"image is 9000x9000 \(81\.0 megapixels\); the limit is 67\.1"):
        decode_image(png_bomb(9000, 9000))
    with pytest.raises(ImageInputError, match=r"image is 500x600; the limit is 512 px a side"):
        decode_image(png_bomb(500, 600), max_side=512)
    assert time.perf_counter() - start < 5  # nothing was decoded
    assert decode_image(png_bomb(64, 32)).shape == (3, 32, 64)


@pytest.mark.parametrize("fmt, array, what", [
    ("TIFF", np.zeros((8, 8), np.float32), "a TIFF image of mode F"),
    ("TIFF", np.zeros((8, 8, 3), np.uint8), "a TIFF image of mode RGB"),
    ("BMP", np.zeros((8, 8, 3), np.uint8), "a BMP image"),
    ("GIF", np.zeros((8, 8), np.uint8), "a GIF image"),
])
def test_formats_the_docs_do_not_name_are_refused_with_the_accepted_list(fmt, array, what):
    with pytest.raises(ImageInputError) as info:
        decode_image(encoded(array, fmt), what="style")
    assert str(info.value).startswith(f"style is {what}") and "accepted: PNG, JPEG or WebP" in str(info.value)


def test_documented_formats_and_16_bit_grey_decode():
    grey16 = np.full((4, 6), 32896, np.uint16)  # 0x8080: mid grey
    assert decode_image(encoded(grey16, "PNG"))[:, 0, 0].tolist() == pytest.approx([128 / 255] * 3)
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 1] = 200
    for fmt in ("PNG", "JPEG", "WEBP", "MPO"):  # MPO: how PIL opens many camera JPEGs
        t = decode_image(encoded(rgb, fmt, **({"lossless": True} if fmt == "WEBP" else {})))
        assert t.shape == (3, 4, 6) and abs(float(t[1].mean()) - 200 / 255) < 0.02, fmt


def test_a_portrait_jpeg_is_decoded_upright_and_sized_as_shown(tmp_path):
    data = portrait_jpeg()
    assert image_size(data) == (20, 40)  # (width, height) as shown, from the header
    t = decode_image(data)
    assert t.shape == (3, 40, 20)
    assert t[:, 2, -3].tolist() == pytest.approx([1, 0, 0], abs=0.05)  # red is now top-right
    assert t[:, 2, 2].tolist() == pytest.approx([0, 0, 0], abs=0.05)
    assert decode_rgba(data).shape == (4, 40, 20)
    # same_size_as compares shown sizes: a mask as large as the upright photo fits, the stored size does not
    photo = tmp_path / "portrait.jpg"
    photo.write_bytes(data)
    spec, ctx = get_op("paint"), RunContext(max_side=16384)
    for mask_wh, fits in (((20, 40), True), ((40, 20), False)):
        mask = tmp_path / f"mask{mask_wh}.png"
        Image.new("L", mask_wh, 255).save(mask)
        request = OpRequest("paint", {"image": FileImage(str(photo)), "mask": FileImage(str(mask))})
        if fits:
            assert prepare(spec, request, ctx)[1]["image"] == (40, 20)
        else:
            with pytest.raises(InvalidArgument, match="images.mask is 40x20, images.image is 20x40"):
                prepare(spec, request, ctx)


# --- the server ------------------------------------------------------------------------------


def test_render_decodes_only_in_the_sidecar_and_huge_or_odd_pictures_cost_nothing(server):
    bomb, tiff = png_bomb(), encoded(np.zeros((8, 8), np.float32), "TIFF")
    with StudioClient(server.grpc) as client:
        for image, text in ((bomb, "canvas_image declares 268.4 megapixels"), (tiff, "canvas_image is a TIFF image of mode F")):
            with pytest.raises(grpc.RpcError) as info:
                client.stub.Render(pb.RenderRequest(strokes_json=STROKES_JSON, canvas_image=pb.Image(encoded=image)))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and text in info.value.details()
            run = pb.OpRequest(op="paint")
            run.images["image"].encoded = image
            with pytest.raises(grpc.RpcError) as info:
                list(client.stub.Run(run))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "images.image" in info.value.details()
        # a picture the server accepts is decoded (upright) and rendered over by the sidecar
        reply = client.stub.Render(pb.RenderRequest(strokes_json=STROKES_JSON, size=40,
                                                    canvas_image=pb.Image(encoded=portrait_jpeg())))
        assert (reply.width, reply.height) == (40, 30)
        with pytest.raises(grpc.RpcError) as info:
            client.stub.Render(pb.RenderRequest(strokes_json=STROKES_JSON, canvas="#+1+2+3"))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "canvas '#+1+2+3' is not a colour" in info.value.details()
    status, body = http(server, "/v1/render", multipart([("request", json.dumps(
        {"strokesJson": STROKES_JSON, "canvasImage": {"ref": "bg"}}).encode()), ("bg", bomb)]), "multipart/form-data; boundary=b0undary")
    assert status == 400 and "canvas_image declares 268.4 megapixels" in body["error"]
    assert peak_rss_mb(server.process.pid) < 1500, "the server decoded a picture"
    assert peak_rss_mb(server.sidecar_pid) < 1500, "the sidecar decoded the bomb"


def test_deeply_nested_json_is_refused_naming_the_field(server, tmp_path):
    with StudioClient(server.grpc) as client:
        with pytest.raises(grpc.RpcError) as info:
            client.render(DEEP)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == "strokes_json is nested too deeply; the limit is 4 levels"
        run = pb.OpRequest(op="paint")
        run.images["image"].encoded = encoded(np.zeros((16, 16, 3), np.uint8), "PNG")
        nested: object = "oil"
        for _ in range(40):  # deeper than the limit (32), within what gRPC's protobuf decoder takes (about 45)
            nested = [nested]
        run.options.update({"brush": nested})
        with pytest.raises(grpc.RpcError) as info:
            list(client.stub.Run(run))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "options: nested too deeply" in info.value.details()
        for _ in range(30):  # 70 levels: past protobuf's own decoding limit, so the server cannot even read the request
            nested = [nested]
        run.options.update({"brush": nested})
        with pytest.raises(grpc.RpcError) as info:
            list(client.stub.Run(run))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
        assert info.value.details().startswith("the Run request could not be decoded: a message or a Struct value "
                                               "(such as options) nests deeper than protobuf's limit of 100 levels")
        raw = client.channel.unary_unary("/impasto.v1.Studio/GetJob", request_serializer=bytes)
        with pytest.raises(grpc.RpcError) as info:
            raw(b"\x0a\xff\xff\xff\xff\xff")  # field 1, length-delimited, with a length past the end
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "GetJob request could not be decoded" in info.value.details()
        assert client.capabilities().ops, "the server kept serving"
    for path, body, field in (("/v1/render", DEEP.encode(), "request body"),
                              ("/v1/render", json.dumps({"strokesJson": DEEP}).encode(), "strokes_json"),
                              ("/v1/ops/paint", b'{"options": {"a": ' + b"{\"b\": " * 300 + b"1" + b"}" * 301 + b"}",
                               "request body")):
        status, reply = http(server, path, body)
        assert (status, reply["code"]) == (400, "INVALID_ARGUMENT") and reply["error"].startswith(f"{field} is nested too deeply")
    deep = tmp_path / "deep.json"
    deep.write_text(DEEP)
    run = subprocess.run([sys.executable, "-m", "impasto.runtime.cli", "render", str(deep), "-o", str(tmp_path / "r.png")],
                         capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.strip().count("\n") == 0, run.stderr
    assert "deep.json' is nested too deeply" in run.stderr


def test_malformed_http_bodies_get_400_naming_what_is_wrong(server):
    good = multipart([("request", json.dumps({"strokesJson": STROKES_JSON}).encode()), ("bg", b"x" * 5000)])
    form = "multipart/form-data; boundary=b0undary"
    cases = [
        (b'{"strokesJson": "\xff\xfe"}', "application/json", "request body is not UTF-8 text (byte 17"),
        (b"[1, 2, 3]", "application/json", "request body must be a JSON object, got a JSON array"),
        (b"5", "application/json", "request body must be a JSON object, got a number"),
        (b'{"size": -5}', "application/json", "request body is not a valid RenderRequest in JSON"),
        (b"{", "application/json", "request body is not valid JSON"),
        (good[:-3000], form, "request body is not valid multipart/form-data"),  # cut inside a part
        (good, "multipart/form-data; boundary=other", "request body is not valid multipart/form-data"),
        (good, "multipart/form-data", "request body is not valid multipart/form-data"),
        (multipart([(None, b"abc")]), form, "multipart part #1 has no name"),
        (multipart([("request", b"{}"), ("request", b"{}")]), form, "multipart part 'request' is given twice"),
        (multipart([("request", b"\x80")]), form, "multipart part 'request' is not UTF-8 text"),
    ]
    for body, content_type, text in cases:
        status, reply = http(server, "/v1/render", body, content_type)
        assert (status, reply.get("code")) == (400, "INVALID_ARGUMENT"), (text, status, reply)
        assert reply["error"].startswith(text), (text, reply)
    with StudioClient(server.grpc) as client:
        assert client.render(STROKES_JSON, size=32).width == 32  # still serving


def test_long_echoed_values_are_shortened_so_the_status_arrives(server):
    with StudioClient(server.grpc) as client:
        run = pb.OpRequest(op="paint")
        run.images["image"].encoded = encoded(np.zeros((16, 16, 3), np.uint8), "PNG")
        run.options.update({"brush": "x" * 10_000})
        with pytest.raises(grpc.RpcError) as info:
            list(client.stub.Run(run))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "options.brush" in info.value.details() and len(info.value.details()) < 600
        with pytest.raises(grpc.RpcError) as info:
            client.get_job("j" * 10_000)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND and len(info.value.details()) < 600
        with pytest.raises(grpc.RpcError) as info:
            client.stub.Render(pb.RenderRequest(strokes_json=STROKES_JSON, canvas="#" + "é" * 10_000))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and len(info.value.details()) < 600
    # the start (the field) and the end (the limit) of a message survive; its size is bounded in bytes
    text = message_of(InvalidArgument("options.brush '" + "\u00e9 " * 20_000 + "' is not one of oil, ink"))
    assert text.startswith("options.brush") and text.endswith("is not one of oil, ink")
    assert len(text.encode()) <= MAX_MESSAGE_BYTES


# --- the command line ------------------------------------------------------------------------


@pytest.mark.parametrize("output, text", [("outdir", "is a folder"), ("r.txt", "must end with .png or .jpg or .jpeg"),
                                          ("missing/r.png", "output folder does not exist")])
def test_render_checks_its_output_before_any_work(tmp_path, output, text):
    strokes = tmp_path / "s.json"
    strokes.write_text(json.dumps(StrokeFile("oil", example_strokes("oil", 400, 0), 64, 48).to_dict()))
    (tmp_path / "outdir").mkdir()
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "impasto.runtime.cli", "render", str(strokes), "-o", str(tmp_path / output),
                          "--size", "8000"], capture_output=True, text=True)
    assert run.returncode == 2 and text in run.stderr and run.stderr.strip().count("\n") == 0, run.stderr
    assert time.perf_counter() - start < 20  # the 8000 px render (minutes) never started
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outdir", "s.json"]
