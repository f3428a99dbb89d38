"""Named tokens: each principal sees, watches, fetches and cancels only its own jobs, on both
transports, and is told another's job does not exist. A real `impasto serve` with a token file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from impasto.runtime.api import studio_pb2 as pb
from impasto.runtime.client import StudioClient, op_request
from impasto.runtime.images import load_image, save_image
from serving import RunningServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "addons" / "common"))
from impasto_http import ImpastoClient, ImpastoError  # noqa: E402

SMALL = dict(strokes=14, levels=2, size=128, seed=1)
ALICE, BOB = "alice-token-0123", "bob-token-4567"


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("images") / "coffee.png"
    save_image(load_image("example:coffee"), path)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tokens = tmp_path_factory.mktemp("auth") / "tokens"
    tokens.write_text(f"# principal token\nalice {ALICE}\n\nbob   {BOB}\n")
    s = RunningServer(env={"IMPASTO_TOKEN_FILE": str(tokens)})
    yield s
    s.stop()


def http(server, method: str, path: str, token: str | None) -> tuple[int, bytes]:
    request = urllib.request.Request(server.http + path, method=method, data=b"" if method == "POST" else None,
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_a_principal_sees_only_its_own_jobs_over_grpc_and_http(server, photo):
    with StudioClient(server.grpc, token=ALICE) as alice, StudioClient(server.grpc, token=BOB) as bob:
        events = list(alice.run_events(op_request("paint", {"image": photo}, SMALL)))
        job_id = events[-1].job_id
        assert events[-1].HasField("op_result")
        assert job_id in [j.id for j in alice.list_jobs()]
        assert alice.get_job(job_id).state == pb.SUCCEEDED
        assert job_id not in [j.id for j in bob.list_jobs()]

        with pytest.raises(grpc.RpcError) as unknown:
            bob.get_job("0" * 32)
        for call in (bob.get_job, bob.cancel_job, lambda i: list(bob.watch(i))):
            with pytest.raises(grpc.RpcError) as info:
                call(job_id)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            # the same answer as for a job that never existed: nothing says it is someone else's
            assert info.value.details() == unknown.value.details().replace("0" * 32, job_id)

    status, body = http(server, "GET", "/v1/jobs", ALICE)
    assert status == 200 and job_id in [j["id"] for j in json.loads(body)["jobs"]]
    status, body = http(server, "GET", "/v1/jobs", BOB)
    assert status == 200 and job_id not in [j["id"] for j in json.loads(body).get("jobs", [])]
    status, body = http(server, "GET", f"/v1/jobs/{job_id}/files/image.png", ALICE)
    assert status == 200 and body.startswith(b"\x89PNG")
    for method, path in (("GET", f"/v1/jobs/{job_id}"), ("GET", f"/v1/jobs/{job_id}/events"),
                         ("GET", f"/v1/jobs/{job_id}/files/image.png"), ("POST", f"/v1/jobs/{job_id}/cancel")):
        status, body = http(server, method, path, BOB)
        assert status == 404 and json.loads(body)["code"] == "NOT_FOUND", (path, body)
    assert http(server, "GET", f"/v1/jobs/{job_id}", None)[0] == 401


def test_jobs_submitted_over_http_belong_to_their_principal_and_health_stays_open(server, photo):
    result = ImpastoClient(server.http, token=BOB).run("paint", {"image": photo.read_bytes()}, SMALL)
    job_id = result["job_id"]
    with StudioClient(server.grpc, token=BOB) as bob, StudioClient(server.grpc, token=ALICE) as alice:
        assert bob.get_job(job_id).state == pb.SUCCEEDED and job_id in [j.id for j in bob.list_jobs()]
        assert job_id not in [j.id for j in alice.list_jobs()]
        with pytest.raises(grpc.RpcError) as info:
            alice.get_job(job_id)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(ImpastoError) as http_error:
        ImpastoClient(server.http, token=ALICE).fetch(f"/v1/jobs/{job_id}/files/image.png")
    assert http_error.value.status == 404
    assert http(server, "GET", "/v1/jobs", "not-a-token")[0] == 401
    # health needs no token
    assert urllib.request.urlopen(server.http + "/v2/health/ready", timeout=10).status == 200
    with grpc.insecure_channel(server.grpc) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="impasto.v1.Studio"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("content, says", [
    ("alice\n", "line 1: expected 'NAME TOKEN'"),
    ("alice short\n", "at least 8"),
    ("alice aaaaaaaaaa\nalice bbbbbbbbbb\n", "line 2: principal 'alice' is listed twice"),
    ("# nothing\n", "no 'NAME TOKEN' lines"),
])
def test_a_bad_token_file_is_refused_in_one_line_naming_the_line(tmp_path, content, says):
    tokens = tmp_path / "tokens"
    tokens.write_text(content)
    run = subprocess.run([sys.executable, "-m", "impasto.runtime.cli", "serve", "--port", "0", "--http-port", "0",
                          "--token-file", str(tokens)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tokens) in lines[0] and says in lines[0], run.stderr
