"""The server, for real: `impasto serve` subprocesses on real sockets, its sidecar, real clients."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
import tritonclient.grpc as triton
from PIL import Image

from impasto.runtime.api import studio_pb2 as pb
from impasto.runtime.client import JobFailed, StudioClient, paint_request
from impasto.runtime.images import load_image, save_image
from serving import RunningServer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "addons" / "common"))
from impasto_http import ImpastoClient, ImpastoError  # noqa: E402

SMALL = dict(strokes=14, levels=2, size=128, seed=1)  # about a second on a CPU
LONG = dict(strokes=3000, levels=3, size=128, iterations=200, seed=0)  # minutes: cancelled or killed long before


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("served") / "models"
    run = subprocess.run([sys.executable, "-m", "impasto.runtime.cli", "export", "renderer_oil", "--repo", str(path),
                          "--no-fp16", "--seed", "0"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return path


@pytest.fixture(scope="module")
def server(repo):
    s = RunningServer("--repo", str(repo), "--max-message-mb", "8")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("images") / "coffee.png"
    save_image(load_image("example:coffee"), path)
    return path


def decode(png: bytes) -> np.ndarray:
    import io

    return np.array(Image.open(io.BytesIO(png)).convert("RGB"))


def test_generated_code_is_reproducible_from_the_protos():
    run = subprocess.run([sys.executable, str(ROOT / "proto" / "generate.py"), "--check"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_capabilities_list_ops_options_brushes_models_and_limits(server):
    with StudioClient(server.grpc) as client:
        caps = client.capabilities()
    paint = next(op for op in caps.ops if op.name == "paint")
    options = {o.name: o for o in paint.options}
    assert options["strokes"].default == "500" and options["brush"].choices == ["oil", "marker", "watercolor", "tape"]
    assert {b.name for b in caps.brushes} == {"oil", "marker", "watercolor", "tape"}
    assert [m.name for m in caps.models] == ["renderer_oil"] and caps.models[0].backend == "onnxruntime"
    assert caps.devices == ["cpu"] and caps.limits.max_message_bytes == 8 << 20


def test_paint_over_grpc_matches_a_local_paint_with_the_same_seed(server, photo, tmp_path):
    args = ["--strokes", "14", "--levels", "2", "--size", "128", "--seed", "1"]
    local = subprocess.run([sys.executable, "-m", "impasto.runtime.cli", "paint", str(photo), "-o", str(tmp_path / "local.png"),
                            "--json", str(tmp_path / "local.json"), *args], capture_output=True, text=True)
    assert local.returncode == 0, local.stderr
    remote = subprocess.run([sys.executable, "-m", "impasto.runtime.cli", "client", "paint", str(photo), "-o",
                             str(tmp_path / "remote.png"), "--json", str(tmp_path / "remote.json"), "--svg",
                             str(tmp_path / "remote.svg"), "--server", server.grpc, *args], capture_output=True, text=True)
    assert remote.returncode == 0, remote.stderr
    a, b = (np.array(Image.open(tmp_path / n)) for n in ("local.png", "remote.png"))
    assert a.shape == b.shape == (85, 128, 3)
    assert np.array_equal(a, b)
    assert json.loads((tmp_path / "local.json").read_text())["strokes"] == json.loads((tmp_path / "remote.json").read_text())["strokes"]
    assert (tmp_path / "remote.svg").read_text().count("<path") + (tmp_path / "remote.svg").read_text().count("<polygon") >= 1


def test_paint_events_arrive_in_order_with_progress_and_a_result(server, photo):
    events = []
    with StudioClient(server.grpc) as client:
        result = client.paint(paint_request(photo, animation=True, **SMALL), events.append)
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "queued" and kinds[1] == "started" and kinds[-1] == "result"
    assert "progress" in kinds and [e.seq for e in events] == list(range(1, len(events) + 1))
    last = [e.progress for e in events if e.HasField("progress")][-1]
    assert last.step == last.total > 0
    assert decode(result.image.encoded).shape == (85, 128, 3)
    assert result.animation.encoded[:6] == b"GIF89a"


def test_paint_over_http_with_the_standard_library_client(server, photo):
    client = ImpastoClient(server.http)
    kinds = []
    result = client.paint(photo.read_bytes(), SMALL, svg=True, on_event=lambda e: kinds.append(e))
    assert "queued" in kinds[0] and "result" in kinds[-1]
    assert decode(result["image"]).shape == (85, 128, 3)
    assert result["svg"].startswith("<svg") and json.loads(result["strokes_json"])["format"] == "impasto.strokes"
    png = client.render(result["strokes_json"], size=256)
    assert decode(png).shape == (170, 256, 3)
    assert client.job(result["job_id"])["state"] == "SUCCEEDED"


def test_tritonclient_infers_a_renderer_as_torch_does(server):
    from impasto.train.models.weights_io import load_shipped_renderer

    client = triton.InferenceServerClient(server.grpc)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("renderer_oil")
    assert client.get_model_config("renderer_oil").config.max_batch_size == 64
    params = np.random.default_rng(0).random((5, 12), dtype=np.float32)
    tensor = triton.InferInput("params", [5, 12], "FP32")
    tensor.set_data_from_numpy(params)
    result = client.infer("renderer_oil", [tensor])
    with torch.inference_mode():
        fg, alpha = load_shipped_renderer("oil")(torch.from_numpy(params))
    assert np.abs(result.as_numpy("foreground") - fg.numpy()).max() < 1e-4
    assert np.abs(result.as_numpy("alpha") - alpha.numpy()).max() < 1e-4
    stats = client.get_inference_statistics("renderer_oil").model_stats[0]
    assert stats.inference_count >= 5
    with pytest.raises(triton.InferenceServerException, match="axis 1 must be 12"):
        bad = triton.InferInput("params", [2, 11], "FP32")
        bad.set_data_from_numpy(np.zeros((2, 11), np.float32))
        client.infer("renderer_oil", [bad])
    with pytest.raises(triton.InferenceServerException, match="unknown model"):
        client.get_model_metadata("renderer_nope")
    # the bidirectional stream: results and errors come back per request
    import queue

    replies: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: replies.put((result, error)))
    client.async_stream_infer("renderer_oil", [tensor], request_id="a")
    client.async_stream_infer("renderer_nope", [tensor], request_id="b")
    got = [replies.get(timeout=30) for _ in range(2)]
    client.stop_stream()
    ok = [r for r, e in got if e is None]
    failed = [e for r, e in got if e is not None]
    assert len(ok) == 1 and np.abs(ok[0].as_numpy("alpha") - alpha.numpy()).max() < 1e-4
    assert len(failed) == 1 and "renderer_nope" in str(failed[0])


def test_requests_waiting_together_are_run_as_one_batch(repo):
    from impasto.runtime.backends import load_backend
    from impasto.runtime.server.batching import DynamicBatcher

    backend = load_backend(repo, "renderer_oil", "onnxruntime")
    sizes = []
    batcher = DynamicBatcher(backend, max_batch=64, max_delay_s=0.05, observe=lambda q, n: sizes.append(n))
    requests = [{"params": np.random.default_rng(i).random((i + 1, 12), dtype=np.float32)} for i in range(5)]

    async def main():
        return await asyncio.gather(*(batcher.infer(r) for r in requests))

    outputs = asyncio.run(main())
    assert sizes and set(sizes) == {15} and batcher.stats.runs == 1  # 1+2+3+4+5 items, one backend run
    for r, o in zip(requests, outputs):
        assert np.allclose(o["alpha"], backend.infer(r)["alpha"], atol=1e-5)


def test_a_job_survives_its_client_disconnecting_and_can_be_watched(server, photo):
    with StudioClient(server.grpc) as client:
        stream = client.paint_events(paint_request(photo, **SMALL))
        first = next(stream)
        stream.cancel()  # the client goes away
        events = list(client.watch(first.job_id))
    assert events[0].seq == 1 and events[0].HasField("queued")
    assert events[-1].HasField("result") and decode(events[-1].result.image.encoded).shape == (85, 128, 3)


def test_cancel_stops_a_running_job(server, photo):
    with StudioClient(server.grpc) as client:
        stream = client.paint_events(paint_request(photo, **LONG))
        for event in stream:
            if event.HasField("progress"):
                break
        job = client.cancel_job(event.job_id)
        assert job.state in (pb.RUNNING, pb.CANCELLED)
        rest = [e.WhichOneof("event") for e in stream]
        assert rest[-1] == "cancelled"
        assert client.get_job(event.job_id).state == pb.CANCELLED
        assert client.get_job(event.job_id).has_result is False


def test_bad_requests_get_clear_statuses_and_the_server_keeps_serving(server, photo):
    def raw(w, h, c, dtype=pb.DTYPE_U8, data=None, itemsize=1):
        return pb.Image(raw=pb.RawImage(width=w, height=h, channels=c, dtype=dtype,
                                        data=data if data is not None else bytes(w * h * c * itemsize)))

    cases = [
        (pb.PaintRequest(image=pb.Image(encoded=b"not a png")), grpc.StatusCode.INVALID_ARGUMENT, "image is not a readable image"),
        (pb.PaintRequest(image=raw(0, 4, 3)), grpc.StatusCode.INVALID_ARGUMENT, "empty"),
        (pb.PaintRequest(image=raw(20000, 1, 1)), grpc.StatusCode.INVALID_ARGUMENT, "limit is 16384"),
        (pb.PaintRequest(image=raw(4, 4, 2)), grpc.StatusCode.INVALID_ARGUMENT, "2 channels"),
        (pb.PaintRequest(image=raw(2, 2, 3, pb.DTYPE_F32, np.full(12, np.nan, np.float32).tobytes())),
         grpc.StatusCode.INVALID_ARGUMENT, "NaN"),
        (pb.PaintRequest(image=raw(4, 4, 3), options=pb.PaintOptions(brush="crayon")), grpc.StatusCode.INVALID_ARGUMENT, "options.brush"),
        (pb.PaintRequest(image=raw(4, 4, 3), options=pb.PaintOptions(strokes=0)), grpc.StatusCode.INVALID_ARGUMENT, "options.strokes"),
        (pb.PaintRequest(image=raw(4, 4, 3), mask=raw(5, 4, 1)), grpc.StatusCode.INVALID_ARGUMENT, "mask is 5x4"),
        (pb.PaintRequest(image=pb.Image(encoded=bytes(9 << 20))), grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
    ]
    with StudioClient(server.grpc) as client:
        for request, code, text in cases:
            with pytest.raises(grpc.RpcError) as info:
                list(client.paint_events(request))
            assert info.value.code() == code, (text, info.value.details())
            assert text in (info.value.details() or ""), info.value.details()
        nan_strokes = json.dumps({"format": "impasto.strokes", "version": 1, "brush": "oil",
                                  "canvas": {"width": 8, "height": 8}, "strokes": [[float("nan")] * 12]})
        for strokes_json, text in ((nan_strokes, "field 'xc' = nan"), ("{", "not valid JSON")):
            with pytest.raises(grpc.RpcError) as info:
                client.render(strokes_json)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and text in info.value.details()
        huge = json.dumps({"format": "impasto.strokes", "version": 1, "brush": "oil",
                           "canvas": {"width": 8, "height": 8}, "strokes": []})
        with pytest.raises(grpc.RpcError) as info:
            client.render(huge, size=16000)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "megapixels" in info.value.details()
        for call in (client.get_job, client.cancel_job):
            with pytest.raises(grpc.RpcError) as info:
                call("no-such-job")
            assert info.value.code() == grpc.StatusCode.NOT_FOUND and "no-such-job" in info.value.details()
        assert client.capabilities().version  # still serving
    with pytest.raises(ImpastoError) as http_error:
        ImpastoClient(server.http).paint(b"garbage")
    assert http_error.value.status == 400 and http_error.value.code == "INVALID_ARGUMENT"


def test_metrics_count_requests_jobs_and_batches(server, photo):
    import urllib.request

    # its own traffic, so that it passes when run alone: a paint job and a KServe inference
    with StudioClient(server.grpc) as client:
        client.paint(paint_request(photo, **SMALL))
    body = {"inputs": [{"name": "params", "datatype": "FP32", "shape": [1, 12], "data": [0.5] * 12}]}
    urllib.request.urlopen(urllib.request.Request(server.http + "/v2/models/renderer_oil/infer",
                                                  data=json.dumps(body).encode(), method="POST")).read()
    text = urllib.request.urlopen(server.http + "/metrics").read().decode()
    assert re.search(r'impasto_requests_total\{code="OK",method="/impasto.v1.Studio/Paint",transport="grpc"\} [1-9]', text)
    assert re.search(r'impasto_jobs\{state="succeeded"\} [1-9]', text)
    assert 'impasto_batch_size_count{model="renderer_oil"}' in text
    assert "impasto_sidecar_restarts_total 0.0" in text


def test_a_killed_sidecar_fails_its_job_clearly_and_the_next_job_runs(server, photo):
    with StudioClient(server.grpc) as client:
        stream = client.paint_events(paint_request(photo, **LONG))
        for event in stream:
            if event.HasField("progress"):
                break
        os.kill(server.sidecar_pid, signal.SIGKILL)
        with pytest.raises(JobFailed) as failure:
            client.wait(stream)
        assert failure.value.code == "UNAVAILABLE" and "died" in failure.value.message
        assert client.get_job(event.job_id).state == pb.FAILED
        result = client.paint(paint_request(photo, **SMALL))  # a new sidecar runs it
        assert decode(result.image.encoded).shape == (85, 128, 3)
    import urllib.request

    assert "impasto_sidecar_restarts_total 1.0" in urllib.request.urlopen(server.http + "/metrics").read().decode()


# --- a server that requires a token -----------------------------------------------------------


def test_token_is_enforced_on_grpc_and_http_but_health_stays_open(photo):
    s = RunningServer(env={"IMPASTO_TOKEN": "s3cret"})
    try:
        with StudioClient(s.grpc) as anonymous:
            with pytest.raises(grpc.RpcError) as info:
                anonymous.capabilities()
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with StudioClient(s.grpc, token="wrong") as wrong:
            with pytest.raises(grpc.RpcError):
                wrong.capabilities()
        with StudioClient(s.grpc, token="s3cret") as client:
            assert client.capabilities().ops
        assert triton.InferenceServerClient(s.grpc).is_server_live()  # health probes need no token
        with pytest.raises(ImpastoError) as http_error:
            ImpastoClient(s.http).capabilities()
        assert http_error.value.status == 401
        assert ImpastoClient(s.http, token="s3cret").capabilities()["ops"]
        import urllib.request

        assert json.loads(urllib.request.urlopen(s.http + "/v2/health/live").read())["live"] is True
    finally:
        s.stop()


def test_listening_beyond_loopback_needs_a_token_tls_or_insecure():
    run = subprocess.run([sys.executable, "-m", "impasto.runtime.cli", "serve", "--host", "0.0.0.0", "--port", "0"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "--token" in run.stderr and "--insecure" in run.stderr


def test_raw_images_in_every_dtype_order_and_transfer_decode_alike():
    from impasto.runtime.api.convert import WireError, image_to_tensor, mask_to_tensor, srgb_to_linear

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (3, 5, 3), dtype=np.uint8)  # H=3, W=5
    expected = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255

    def raw(array, **kw):
        h, w, c = array.shape
        dtype = {np.uint8: pb.DTYPE_U8, np.float16: pb.DTYPE_F16, np.float32: pb.DTYPE_F32}[array.dtype.type]
        return pb.Image(raw=pb.RawImage(width=w, height=h, channels=c, dtype=dtype, data=array.tobytes(), **kw))

    bgra = np.concatenate([rgb[..., ::-1], np.full((3, 5, 1), 255, np.uint8)], axis=2)  # Krita's bytes
    assert torch.allclose(image_to_tensor(raw(bgra, order=pb.ORDER_BGR), "image", 64), expected)
    linear = srgb_to_linear(expected).permute(1, 2, 0).numpy()[::-1].astype(np.float32)  # Blender: linear, bottom-up
    decoded = image_to_tensor(raw(np.ascontiguousarray(linear), transfer=pb.TRANSFER_LINEAR, bottom_up=True), "image", 64)
    assert torch.allclose(decoded, expected, atol=1e-4)
    half = image_to_tensor(raw(rgb.astype(np.float16) / 255), "image", 64)
    assert torch.allclose(half, expected, atol=2e-3)
    alpha = np.zeros((3, 5, 4), np.uint8)
    alpha[..., 3] = 255
    alpha[0, :, 3] = 0  # a transparent top row: outside the selection
    mask = mask_to_tensor(raw(alpha), "mask", 64)
    assert mask[0, 0].eq(0).all() and mask[0, 1:].eq(1).all()
    with pytest.raises(WireError, match="raw data is 10 bytes"):
        image_to_tensor(pb.Image(raw=pb.RawImage(width=2, height=2, channels=3, data=bytes(10))), "style", 64)


def test_an_external_sidecar_serves_jobs_and_the_job_limit_holds(photo, tmp_path):
    socket = tmp_path / "sidecar.sock"
    sidecar = subprocess.Popen([sys.executable, "-m", "impasto.runtime.sidecar", "--listen", f"unix:{socket}"],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert "ready" in sidecar.stdout.readline()
        s = RunningServer("--sidecar", f"unix:{socket}", "--max-jobs", "1")
        try:
            from grpc_health.v1 import health_pb2, health_pb2_grpc

            with grpc.insecure_channel(s.grpc) as channel:
                health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="impasto.v1.Studio"))
                assert health.status == health_pb2.HealthCheckResponse.SERVING
            with StudioClient(s.grpc) as client:
                long_job = client.paint_events(paint_request(photo, **LONG))
                first = next(long_job)
                with pytest.raises(grpc.RpcError) as info:
                    list(client.paint_events(paint_request(photo, **SMALL)))
                assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit 1" in info.value.details()
                client.cancel_job(first.job_id)
                assert [e.WhichOneof("event") for e in long_job][-1] == "cancelled"
                result = client.paint(paint_request(photo, **SMALL))  # run by the external sidecar
                assert result.width == 128
        finally:
            s.stop()
        assert sidecar.poll() is None  # the server does not own an external sidecar
    finally:
        sidecar.kill()


def test_tls_server_accepts_clients_that_trust_its_certificate(photo, tmp_path):
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                           "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"openssl could not make a test certificate: {made.stderr.strip()[:200]}")
    s = RunningServer("--tls-cert", str(cert), "--tls-key", str(key))
    try:
        with StudioClient(s.grpc, tls_ca=str(cert)) as client:
            assert client.capabilities().ops
        with StudioClient(s.grpc) as plaintext:  # a client that does not speak TLS is refused
            with pytest.raises(grpc.RpcError):
                plaintext.capabilities()
    finally:
        s.stop()


def test_texture_and_stylize_jobs_run_on_the_server(server, photo):
    options = pb.SynthesisOptions(features="random", iterations=2, scales=1)
    request = pb.TextureRequest(exemplar=pb.Image(encoded=photo.read_bytes()), width=96, height=64, tileable=True, options=options)
    with StudioClient(server.grpc) as client:
        kinds = {o.name for o in client.capabilities().ops}
        assert {"paint", "render", "texture", "stylize"} <= kinds
        events = []
        result = client.texture(request, events.append)
        assert decode(result.image.encoded).shape == (64, 96, 3) and result.width == 96
        assert [e.WhichOneof("event") for e in events][:2] == ["queued", "started"]
        small = pb.Image(encoded=photo.read_bytes())
        styled = client.stylize(pb.StylizeRequest(content=small, style=small, options=options))
        assert decode(styled.image.encoded).shape == decode(photo.read_bytes()).shape
        with pytest.raises(grpc.RpcError) as info:
            list(client.texture_events(pb.TextureRequest(exemplar=small, width=99999, options=options)))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "options.width must be between 64 and 16384, got 99999" in info.value.details()
        with pytest.raises(grpc.RpcError) as info:
            list(client.stylize_events(pb.StylizeRequest(content=small, style=small, content_labels=small, options=options)))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "both" in info.value.details()
    http = ImpastoClient(server.http).texture(photo.read_bytes(), 64, 64, options={"features": "random", "iterations": 1, "scales": 1})
    assert decode(http["image"]).shape == (64, 64, 3)


def test_requests_whose_callers_are_gone_are_not_run(repo):
    from impasto.runtime.backends import load_backend
    from impasto.runtime.server.batching import DynamicBatcher

    backend = load_backend(repo, "renderer_oil", "onnxruntime")
    batcher = DynamicBatcher(backend, max_batch=64, max_delay_s=0.05)

    async def main():
        live = asyncio.ensure_future(batcher.infer({"params": np.zeros((2, 12), np.float32)}))
        gone = asyncio.ensure_future(batcher.infer({"params": np.zeros((3, 12), np.float32)}))
        await asyncio.sleep(0)  # both queued
        gone.cancel()  # its deadline passed / its client hung up
        return await live

    out = asyncio.run(main())
    assert out["alpha"].shape == (2, 1, 128, 128)
    assert batcher.stats.items == 2 and batcher.stats.runs == 1  # the cancelled request never ran
