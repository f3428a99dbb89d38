"""KServe v2 conformance, with Triton as the reference: real tritonclient (HTTP and gRPC, defaults),
real perf_analyzer, raw HTTP and gRPC requests against a real `impasto serve` on a real exported repository.

The repository holds every shipped model, each with a 20 s ``max_queue_delay``, so any request that
waited out its queue delay instead of being dispatched at once would show up as a timeout; and one
model folder that cannot load, for the repository index.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.grpc import service_pb2 as kpb
from tritonclient.grpc import service_pb2_grpc

from impasto.export.repository import list_models
from impasto.runtime.backends import load_backend
from serving import RunningServer

DELAY_US = 20_000_000  # every model's max_queue_delay: a lone request that waited it out would time out below
TIMEOUT_S = 10  # client timeout of single requests (they take milliseconds)
# models with a VGG-19 inside: the slowest to export, and nothing here needs them (the protocol is the same)
SKIP = ("--skip", "colorize_demo_style", "--skip", "warp_demo")
PERF_ANALYZER_WHEEL = "2.51.0"  # the newest tritonclient wheel with a perf_analyzer that runs on glibc 2.36 (2.52+ need 2.38)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("kserve") / "models"
    run = subprocess.run([sys.executable, "-m", "impasto.runtime.cli", "export", "--all", "--repo", str(path), "--no-fp16",
                          "--seed", "0", *SKIP], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    for name in list_models(path):
        config = path / name / "config.pbtxt"
        text, n = re.subn(r"max_queue_delay_microseconds: \d+", f"max_queue_delay_microseconds: {DELAY_US}", config.read_text())
        assert n == 1
        config.write_text(text)
    (path / "broken").mkdir()
    (path / "broken" / "config.pbtxt").write_text('name: "broken"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n')
    return path


@pytest.fixture(scope="module")
def server(repo):
    s = RunningServer("--repo", str(repo), "--max-message-mb", "8")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def models(repo) -> list[str]:
    """The served models, the stroke renderers first: the tests drive ``models[0]`` through its one ``params`` tensor."""
    from impasto.export.repository import read_model

    def renderer(name: str) -> bool:
        return [t.name for t in read_model(repo, name).inputs] == ["params"]

    return sorted((n for n in list_models(repo) if n != "broken"), key=lambda n: (not renderer(n), n))


def http_client(server) -> thttp.InferenceServerClient:
    return thttp.InferenceServerClient(server.http.removeprefix("http://"), network_timeout=TIMEOUT_S)


def inputs_for(metadata: dict, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs of the model's shapes: dynamic sides (-1) as 64, INT32 inputs (label maps) as small class indices."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for t in metadata["inputs"]:
        shape = (batch, *(64 if d == -1 else d for d in t["shape"][1:]))
        assert t["datatype"] in ("FP32", "INT32"), t
        arrays[t["name"]] = (rng.integers(0, 4, shape, dtype=np.int32) if t["datatype"] == "INT32"
                             else rng.random(shape, dtype=np.float32))
    return arrays


DATATYPES = {np.dtype(np.float32): "FP32", np.dtype(np.int32): "INT32"}


def post(server, path: str, body: bytes, headers: dict | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(server.http + path, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def get(server, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(server.http + path, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_tritonclient_with_its_defaults_infers_every_model_over_http_and_grpc(server, repo, models):
    http, grpc_client = http_client(server), tgrpc.InferenceServerClient(server.grpc)
    for name in models:
        metadata = http.get_model_metadata(name)
        arrays = inputs_for(metadata, batch=3)
        expected = load_backend(repo, name, "onnxruntime").infer(arrays)
        results = []
        for module, client in ((thttp, http), (tgrpc, grpc_client)):
            tensors = []
            for k, a in arrays.items():
                tensors.append(module.InferInput(k, list(a.shape), DATATYPES[a.dtype]))
                tensors[-1].set_data_from_numpy(a)  # HTTP: binary data, tritonclient's default
            results.append(client.infer(name, tensors, client_timeout=TIMEOUT_S) if module is tgrpc else
                           client.infer(name, tensors))  # HTTP: no outputs named -> binary_data_output
        # HTTP in JSON both ways, one output only, compressed both ways; the version routes
        tensors = [thttp.InferInput(k, list(a.shape), DATATYPES[a.dtype]) for k, a in arrays.items()]
        for t, a in zip(tensors, arrays.values()):
            t.set_data_from_numpy(a, binary_data=False)
        first = metadata["outputs"][0]["name"]
        json_result = http.infer(name, tensors, model_version="1", outputs=[thttp.InferRequestedOutput(first, binary_data=False)],
                                 request_compression_algorithm="gzip", response_compression_algorithm="gzip")
        outputs = json_result.get_response()["outputs"]
        assert [o["name"] for o in outputs] == [first] and outputs[0].get("data") is not None  # JSON data, not binary
        assert np.abs(json_result.as_numpy(first) - expected[first]).max() < 1e-5
        for result in results:
            for out, want in expected.items():
                assert np.abs(result.as_numpy(out) - want).max() < 1e-5, (name, out)
        # config and metadata: dims are JSON numbers; the versioned routes answer the same
        config = http.get_model_config(name)
        assert all(isinstance(d, int) for t in config["input"] + config["output"] for d in t["dims"])
        assert isinstance(config["max_batch_size"], int) and config["max_batch_size"] > 1
        assert config == http.get_model_config(name, model_version="1")
        assert metadata == http.get_model_metadata(name, model_version="1")
        assert http.is_model_ready(name) and http.is_model_ready(name, "1") and not http.is_model_ready(name, "7")
        assert grpc_client.is_model_ready(name, "1") and not grpc_client.is_model_ready(name, "7")
        assert grpc_client.get_model_config(name).config.input[0].dims == config["input"][0]["dims"]
    meta = http.get_server_metadata()
    assert "binary_tensor_data" in meta["extensions"] and "statistics" in meta["extensions"]
    assert "model_repository" not in meta["extensions"]  # no load/unload, so not claimed
    assert grpc_client.get_server_metadata().extensions == meta["extensions"]


def test_statistics_count_requests_items_and_runs_as_triton_does(server, models):
    name = models[0]
    http, grpc_client = http_client(server), tgrpc.InferenceServerClient(server.grpc)
    arrays = inputs_for(http.get_model_metadata(name), batch=4)

    def stats() -> dict:
        return http.get_inference_statistics(name)["model_stats"][0]

    before = stats()
    for _ in range(5):  # one at a time: each runs at once, alone (despite the 20 s queue delay)
        tensor = tgrpc.InferInput(*[(k, list(a.shape), "FP32") for k, a in arrays.items()][0])
        tensor.set_data_from_numpy(next(iter(arrays.values())))
        grpc_client.infer(name, [tensor], client_timeout=TIMEOUT_S)
    after = stats()
    delta = {k: after["inference_stats"][k]["count"] - before["inference_stats"][k]["count"] for k in after["inference_stats"]}
    assert delta["success"] == 5 and delta["fail"] == 0  # requests, not items
    assert delta["queue"] == delta["compute_input"] == delta["compute_infer"] == delta["compute_output"] == 5
    assert after["inference_count"] - before["inference_count"] == 20  # items
    assert after["execution_count"] - before["execution_count"] == 5  # backend runs
    runs4 = {b["batch_size"]: b["compute_infer"]["count"] for b in after["batch_stats"]}[4]
    assert runs4 - {b["batch_size"]: b["compute_infer"]["count"] for b in before["batch_stats"]}.get(4, 0) == 5
    phases = after["inference_stats"]
    assert phases["compute_infer"]["ns"] > 0 and phases["compute_input"]["ns"] > 0 and phases["compute_output"]["ns"] > 0
    assert phases["success"]["ns"] >= phases["compute_infer"]["ns"]  # a request's whole time includes its run
    # the same numbers over gRPC, and per-version and all-model routes over HTTP
    g = grpc_client.get_inference_statistics(name).model_stats[0]
    assert g.inference_stats.success.count == phases["success"]["count"] and g.execution_count == after["execution_count"]
    assert http.get_inference_statistics(name, "1")["model_stats"][0]["inference_count"] == after["inference_count"]
    every = http.get_inference_statistics()["model_stats"]
    assert {m["name"] for m in every} == set(models)
    # a failed request counts as fail, not success
    bad = tgrpc.InferInput(next(iter(arrays)), [4, 5], "FP32")
    bad.set_data_from_numpy(np.zeros((4, 5), np.float32))
    with pytest.raises(tgrpc.InferenceServerException):
        grpc_client.infer(name, [bad])
    last = stats()["inference_stats"]
    assert last["fail"]["count"] == phases["fail"]["count"] + 1 and last["success"]["count"] == phases["success"]["count"]


def test_the_repository_index_names_every_model_and_why_one_failed(server, models):
    http, grpc_client = http_client(server), tgrpc.InferenceServerClient(server.grpc)
    index = http.get_model_repository_index()
    assert [m["name"] for m in index] == sorted([*models, "broken"])
    states = {m["name"]: m for m in index}
    assert all(states[n]["state"] == "READY" and states[n]["version"] == "1" for n in models)
    assert states["broken"]["state"] == "UNAVAILABLE" and "no version folder" in states["broken"]["reason"]
    g = grpc_client.get_model_repository_index()
    assert [(m.name, m.state, m.reason) for m in g.models] == [(m["name"], m["state"], m["reason"]) for m in index]
    status, _, ready_only = post(server, "/v2/repository/index", b'{"ready": true}')
    assert status == 200 and [m["name"] for m in json.loads(ready_only)] == sorted(models)
    with pytest.raises(thttp.InferenceServerException, match="broken.*failed to load.*no version folder"):
        http.get_model_metadata("broken")


def test_unknown_routes_versions_and_models_answer_json_errors(server, models):
    name = models[0]
    status, body = get(server, "/v2/models/stats")  # every model's statistics, not a model called "stats"
    assert status == 200 and {m["name"] for m in body["model_stats"]} == set(models)
    for path, code, text in [
        ("/v2/nothing/here", 404, "no KServe route GET /v2/nothing/here"),
        (f"/v2/models/{name}/versions/7", 404, f"model '{name}' has no version '7' (served version: 1)"),
        (f"/v2/models/{name}/versions/7/config", 404, "no version '7'"),
        (f"/v2/models/{name}/versions/7/stats", 404, "no version '7'"),
        (f"/v2/models/{name}/infer", 404, f"no KServe route GET /v2/models/{name}/infer"),  # GET on a POST route
        ("/v2/models/nope/stats", 404, "unknown model 'nope'"),
    ]:
        status, body = get(server, path)
        assert status == code and text in body["error"], (path, body)
    status, _, body = post(server, f"/v2/models/{name}/versions/7/infer", b"{}")
    assert status == 404 and "no version '7'" in json.loads(body)["error"]
    # tritonclient formats the errors (no TypeError), over both transports
    http = http_client(server)
    with pytest.raises(thttp.InferenceServerException, match="no version '7'") as info:
        http.get_model_metadata(name, model_version="7")
    assert info.value.status() == "404"
    with pytest.raises(tgrpc.InferenceServerException, match="no version '7'"):
        tgrpc.InferenceServerClient(server.grpc).get_model_metadata(name, model_version="7")


def _body(inputs, **extra) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


def test_bad_rest_infer_bodies_get_400_naming_the_field(server, models):
    name = models[0]
    ok = {"name": "params", "datatype": "FP32", "shape": [1, 12], "data": [0.5] * 12}
    deep = b'{"inputs": [{"name": "params", "datatype": "FP32", "shape": [1, 12], "data": ' + b"[" * 100000 + b"]" * 100000 + b"}]}"
    nested = dict(ok, data=json.loads("[" * 50 + "0.5" + "]" * 50))
    header = json.dumps({"inputs": [dict(ok, data=None, parameters={"binary_data_size": 48})]}).encode()
    cases = [
        (b"[1,2,3]", {}, "must be a JSON object, got list"),
        (b'{"inputs":5}', {}, "inputs must be a non-empty list"),
        (_body([5]), {}, "inputs[0] must be an object"),
        (_body([dict(ok, name=["x"])]), {}, "inputs[0].name must be a string"),
        (b'{"inputs": "\xff\xfe\xfa"}', {}, "not valid JSON"),
        (deep, {}, "not valid JSON: it is nested too deeply"),
        (_body([nested]), {}, "input 'params': data is nested deeper than its shape's 2 dimensions"),
        (_body([dict(ok, shape=[-1, 12])]), {}, "input 'params': shape [-1, 12] has a negative dimension"),
        (_body([dict(ok, shape=[2**32, 2**32], data=[])]), {}, "input 'params': shape [4294967296, 4294967296] FP32 is"),
        (_body([dict(ok, shape=[2**32, 2**32], data=[])]), {}, "over the server's message limit of 8388608 bytes"),
        (_body([dict(ok, datatype="FP64")]), {}, "input 'params': unexpected datatype FP64, model '" + name + "' expects FP32"),
        (_body([dict(ok, datatype="BYTES")]), {}, "datatype 'BYTES' is not supported"),
        (_body([dict(ok, data=["0.5"] * 12)]), {}, "input 'params': data[0] is '0.5'; FP32 data must be numbers"),
        (_body([dict(ok, data=[0.5] * 11)]), {}, "input 'params': 11 values for shape [1, 12], which needs 12"),
        (_body([dict(ok, shape="1x12")]), {}, "input 'params': shape must be a list of integers"),
        (_body([dict(ok, name="nope")]), {}, f"model '{name}' has no input 'nope'"),
        (_body([ok, ok]), {}, "input 'params' is sent twice"),
        (_body([ok], outputs=[{"name": "nope"}]), {}, f"model '{name}' has no output 'nope'"),
        (_body([ok], id=5), {}, "id must be a string"),
        (_body([ok], parameters={"binary_data_output": "yes"}), {}, "parameters.binary_data_output must be true or false"),
        (header + bytes(40), {"Inference-Header-Content-Length": str(len(header))}, "binary_data_size 48 runs past the end"),
        (header + bytes(52), {"Inference-Header-Content-Length": str(len(header))}, "4 bytes of binary data after the last input"),
        (header + bytes(48), {"Inference-Header-Content-Length": "99999"}, "Inference-Header-Content-Length is '99999'"),
    ]
    for body, headers, text in cases:
        status, _, reply = post(server, f"/v2/models/{name}/infer", body, headers)
        error = json.loads(reply)["error"]
        assert status == 400 and text in error, (text, status, error)
    status, _, reply = post(server, f"/v2/models/{name}/infer", header + bytes((8 << 20) + 1), {"Inference-Header-Content-Length": "0"})
    assert status == 429 and "over the server's message limit of 8388608 bytes" in json.loads(reply)["error"]
    status, headers, reply = post(server, f"/v2/models/{name}/infer", header + np.full(12, 0.5, np.float32).tobytes(),
                                  {"Inference-Header-Content-Length": str(len(header))})
    assert status == 200 and json.loads(reply)["outputs"][0]["data"]  # still serving; binary in, JSON out


def test_bad_grpc_infer_requests_get_invalid_argument_naming_the_field(server, models):
    name = models[0]
    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.grpc))
    T = kpb.ModelInferRequest.InferInputTensor
    ok_raw = np.zeros((1, 12), np.float32).tobytes()

    def request(tensors, raw=(), **kw) -> kpb.ModelInferRequest:
        return kpb.ModelInferRequest(model_name=name, inputs=tensors, raw_input_contents=list(raw), **kw)

    cases = [
        (request([T(name="params", datatype="FP32", shape=[2**32, 2**32])]), "over the server's message limit of 8388608 bytes"),
        (request([T(name="params", datatype="FP32", shape=[1, -12])]), "shape [1, -12] has a negative dimension"),
        (request([T(name="params", datatype="FP64", shape=[1, 12])], [bytes(96)]), "unexpected datatype FP64, model"),
        (request([T(name="params", datatype="FP32", shape=[1, 12])], [bytes(40)]), "40 bytes of data for shape [1, 12] FP32, which needs 48"),
        (request([T(name="params", datatype="FP32", shape=[1, 12], contents=kpb.InferTensorContents(fp32_contents=[0.5] * 12))],
                 [ok_raw]), "send contents or raw_input_contents, not both"),
        (request([T(name="params", datatype="FP32", shape=[1, 12], contents=kpb.InferTensorContents(int_contents=[1] * 12))]),
         "0 values in contents.fp32_contents for shape [1, 12], which needs 12"),
        (request([T(name="params", datatype="FP32", shape=[1, 12])] * 2, [ok_raw] * 2), "input 'params' is sent twice"),
        (request([T(name="params", datatype="FP32", shape=[1, 12])], [ok_raw, ok_raw]), "2 entries for 1 inputs"),
        (request([T(name="params", datatype="FP32", shape=[1, 12])], [ok_raw],
                 outputs=[kpb.ModelInferRequest.InferRequestedOutputTensor(name="nope")]), "has no output 'nope'"),
    ]
    for req, text in cases:
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(req, timeout=TIMEOUT_S)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and text in info.value.details(), (text, info.value.details())
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request([T(name="params", datatype="FP32", shape=[1, 12])], [ok_raw], model_version="3"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "no version '3'" in info.value.details()
    reply = stub.ModelInfer(request([T(name="params", datatype="FP32", shape=[1, 12])], [ok_raw]), timeout=TIMEOUT_S)
    assert len(reply.raw_output_contents) == len(reply.outputs) > 0  # still serving


def test_a_lone_request_runs_at_once_and_waiting_ones_share_a_run(repo, models):
    """The batcher, on a real ONNX Runtime backend, with a 60 s queue delay that nothing may wait out."""
    from impasto.runtime.server.batching import DynamicBatcher

    backend = load_backend(repo, models[0], "onnxruntime")
    batcher = DynamicBatcher(backend, max_batch=64, max_delay_s=60.0)
    a, b, c, d = ({"params": np.random.default_rng(i).random((i + 1, 12), dtype=np.float32)} for i in range(4))

    async def main():
        alone = await asyncio.wait_for(batcher.infer(a), 30)  # would take 60 s if it waited out the delay
        together = await asyncio.wait_for(asyncio.gather(batcher.infer(b), batcher.infer(c)), 30)
        # a request still arriving (an HTTP body being read) is waited for, and joins the batch
        with batcher.arriving():
            first = asyncio.ensure_future(batcher.infer(a))
            for _ in range(20):
                await asyncio.sleep(0)
            held = not first.done()
            late = asyncio.ensure_future(batcher.infer(d))
            await asyncio.sleep(0)
        return alone, together, held, await asyncio.wait_for(asyncio.gather(first, late), 30)

    alone, together, held, joined = asyncio.run(main())
    assert held
    assert {size: runs[0] for size, runs in batcher.stats.by_size.items()} == {1: 1, 5: 2}  # a alone, then b+c, then a+d
    assert batcher.stats.runs == 3 and batcher.stats.items == 1 + 5 + 5
    for request, out in ((a, alone), (b, together[0]), (c, together[1]), (a, joined[0]), (d, joined[1])):
        assert np.allclose(out["alpha"], backend.infer(request)["alpha"], atol=1e-5)


def find_perf_analyzer(cache: Path) -> tuple[Path, dict]:
    """perf_analyzer from tritonclient's 2.51 wheel (fetched once with pip into ``cache``) and the env it runs in.

    Newer tritonclient wheels no longer carry it (2.73's ``perf-analyzer`` dependency is an empty
    placeholder); it needs Debian's libb64-0d and libcudart from PyPI's nvidia-cuda-runtime-cu12.
    """
    binary = Path(os.environ.get("IMPASTO_PERF_ANALYZER", cache / f"perf_analyzer-{PERF_ANALYZER_WHEEL}"))
    if not binary.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        run = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(cache),
                              f"tritonclient=={PERF_ANALYZER_WHEEL}"], capture_output=True, text=True)
        assert run.returncode == 0, f"cannot fetch tritonclient {PERF_ANALYZER_WHEEL} for perf_analyzer: {run.stderr[-500:]}"
        wheel = next(cache.glob(f"tritonclient-{PERF_ANALYZER_WHEEL}-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            binary.write_bytes(z.read(f"tritonclient-{PERF_ANALYZER_WHEEL}.data/data/bin/perf_analyzer"))
        binary.chmod(0o755)
        wheel.unlink()
    try:
        import nvidia.cuda_runtime
    except ImportError:
        pytest.fail("perf_analyzer needs libcudart: pip install nvidia-cuda-runtime-cu12 (in the test extra)")
    lib = Path(list(nvidia.cuda_runtime.__path__)[0]) / "lib"
    return binary, {**os.environ, "LD_LIBRARY_PATH": f"{lib}:{os.environ.get('LD_LIBRARY_PATH', '')}"}


def test_perf_analyzer_runs_over_grpc_and_http_without_errors(server, models):
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "impasto"
    binary, env = find_perf_analyzer(cache)
    name = models[0]
    http = http_client(server)
    for protocol, address in (("grpc", server.grpc), ("http", server.http.removeprefix("http://"))):
        before = http.get_inference_statistics(name)["model_stats"][0]["inference_stats"]
        run = subprocess.run([str(binary), "-m", name, "-u", address, "-i", protocol, "-b", "4", "--concurrency-range", "2",
                              # errors are what is checked, not speed: any three windows count as stable on a busy machine
                              "--measurement-interval", "1000", "--max-trials", "3", "--stability-percentage", "1000"],
                             capture_output=True, text=True, env=env, timeout=120)
        assert run.returncode == 0, (protocol, run.stdout[-2000:], run.stderr[-2000:])
        served = int(re.search(r"Successful request count: (\d+)", run.stdout)[1])
        assert served > 0 and "compute infer" in run.stdout, run.stdout
        after = http.get_inference_statistics(name)["model_stats"][0]["inference_stats"]
        assert after["fail"]["count"] == before["fail"]["count"], protocol  # zero errors
        assert after["success"]["count"] - before["success"]["count"] >= served
