"""Faults a long-running server must survive, for real: `impasto serve` subprocesses, their
sidecar subprocesses, `kill -9`, ports already taken, and the memory finished jobs hold.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from impasto.runtime.api import studio_pb2 as pb
from impasto.runtime.client import JobFailed, StudioClient, op_request, paint_request
from impasto.runtime.images import load_image, save_image
from serving import RunningServer

SMALL = dict(strokes=14, levels=2, size=128, seed=1)  # about a second on a CPU
LONG = dict(strokes=3000, levels=3, size=128, iterations=200, seed=0)  # minutes: killed long before


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("images") / "coffee.png"
    save_image(load_image("example:coffee"), path)
    return path


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting to be reaped is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _sidecars_of(server_pid: int) -> list[int]:
    """Live sidecar processes whose parent is ``server_pid``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[1]) == server_pid and b"impasto.runtime.sidecar" in cmdline:
            pids.append(int(entry.name))
    return pids


def _with_marker(marker: str) -> list[int]:
    """Live processes whose environment carries ``marker`` (a server and every child it started)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "environ").read_bytes() and _alive(int(entry.name)):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _wait_for(predicate, timeout: float, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


def _health(server: RunningServer) -> tuple[int, int, int]:
    """gRPC health of "" and impasto.v1.Studio, and the HTTP status of /v2/health/ready."""
    with grpc.insecure_channel(server.grpc) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        states = [stub.Check(health_pb2.HealthCheckRequest(service=s), timeout=5).status for s in ("", "impasto.v1.Studio")]
    try:
        http = urllib.request.urlopen(server.http + "/v2/health/ready", timeout=5).status
    except urllib.error.HTTPError as e:
        http = e.code
    return states[0], states[1], http


SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def test_sidecar_deaths_fail_only_the_running_job_and_a_sidecar_killed_while_starting_is_replaced(photo):
    server = RunningServer()
    try:
        assert _health(server) == (SERVING, SERVING, 200)
        with StudioClient(server.grpc) as client:
            running = client.paint_events(paint_request(photo, **LONG))
            for event in running:
                if event.HasField("progress"):
                    break
            queued = next(client.run_events(op_request("paint", {"image": photo}, SMALL)))
            assert client.get_job(queued.job_id).state == pb.QUEUED

            os.kill(server.sidecar_pid, signal.SIGKILL)
            with pytest.raises(JobFailed) as failure:
                client.wait(running)
            assert failure.value.code == "UNAVAILABLE" and "died" in failure.value.message
            # no sidecar now: health says so at once, on both transports
            assert _wait_for(lambda: _health(server) == (NOT_SERVING, NOT_SERVING, 503), 5), _health(server)
            # its replacement is killed while it starts (before it can answer)
            second = _wait_for(lambda: [p for p in _sidecars_of(server.process.pid) if p != server.sidecar_pid], 10)
            assert second, "no replacement sidecar was started"
            os.kill(second[0], signal.SIGKILL)
            assert _health(server)[:2] == (NOT_SERVING, NOT_SERVING)

            # supervision converges: a third sidecar comes up, health is SERVING again, the queued job runs on it
            assert _wait_for(lambda: _health(server) == (SERVING, SERVING, 200), 90, step=0.5), _health(server)
            third = _sidecars_of(server.process.pid)
            assert len(third) == 1 and third[0] not in (server.sidecar_pid, second[0])
            events = list(client.watch(queued.job_id))
            assert events[-1].HasField("op_result"), events[-1]
            assert client.get_job(queued.job_id).state == pb.SUCCEEDED
    finally:
        server.stop()


def test_a_killed_server_takes_its_sidecar_along_and_the_next_server_removes_its_folder():
    server = RunningServer()
    folders = [p for p in Path(tempfile.gettempdir()).glob("impasto-sidecar-*")
               if (p / "owner.pid").is_file() and (p / "owner.pid").read_text() == str(server.process.pid)]
    assert len(folders) == 1 and any(folders[0].glob("*.sock"))
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(10)
    assert _wait_for(lambda: not _alive(server.sidecar_pid), 10), "the sidecar outlived its server"
    assert folders[0].exists()
    following = RunningServer()
    try:
        assert not folders[0].exists(), "the stale socket folder was not removed"
    finally:
        following.stop()


def test_a_sidecar_whose_parent_is_already_gone_exits_at_once():
    not_parent = subprocess.Popen([sys.executable, "-c", "pass"])
    not_parent.wait()
    run = subprocess.run([sys.executable, "-m", "impasto.runtime.sidecar", "--listen", "127.0.0.1:0",
                          "--parent-pid", str(not_parent.pid)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "ready" not in run.stdout


def _serve_on_busy_port(args: list[str]) -> tuple[subprocess.CompletedProcess, list[int], float]:
    marker = f"impasto-test-{uuid.uuid4().hex}"
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "impasto.runtime.cli", "serve", *args], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "IMPASTO_TEST_MARKER": marker})
    return run, _with_marker(marker), time.monotonic() - start


def test_serve_refuses_a_busy_http_port_in_one_line_and_leaves_nothing_behind():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run, left, seconds = _serve_on_busy_port(["--port", "0", "--http-port", str(port)])
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines() == [f"impasto: error: HTTP port {port} is in use (on 127.0.0.1); stop what "
                                               "holds it or choose another (--http-port)"]
    assert left == [] and seconds < 60  # refused before a sidecar was started


def test_serve_refuses_a_busy_grpc_port_instead_of_sharing_it():
    other = grpc.server(futures.ThreadPoolExecutor(1))  # another gRPC server, with gRPC's default port reuse
    port = other.add_insecure_port("127.0.0.1:0")
    other.start()
    try:
        run, left, _ = _serve_on_busy_port(["--port", str(port), "--http-port", "0"])
    finally:
        other.stop(None)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("impasto: error: gRPC port") and f"port {port} is in use" in lines[0]
    assert left == []


def test_finished_jobs_are_bounded_by_count_and_bytes_oldest_first(photo):
    cap = 0.03  # MiB: two small paintings (about 14 kB of events and result each), fewer than --max-results
    server = RunningServer("--max-results", "3", "--max-result-mb", str(cap))
    try:
        with StudioClient(server.grpc) as client:
            ids = []
            for seed in range(5):
                request = op_request("paint", {"image": photo}, {**SMALL, "seed": seed})
                # no preview: a job slower than a second (a loaded machine) keeps its newest preview in the log,
                # which alone outgrows this cap; the sizes here are the events and the result
                request.preview_interval_ms = 10**9
                events = list(client.run_events(request))
                assert events[-1].HasField("op_result")
                ids.append(events[-1].job_id)
            kept = [j.id for j in client.list_jobs()]
            assert 1 <= len(kept) <= 2 and kept == ids[-len(kept):]  # the newest: the byte cap evicted the oldest
            retained = sum(e.ByteSize() for job_id in kept for e in client.watch(job_id))
            assert retained <= cap * (1 << 20)
            with pytest.raises(grpc.RpcError) as info:
                client.get_job(ids[0])
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            assert "evicted" in info.value.details() and "--max-results" in info.value.details()
            with pytest.raises(grpc.RpcError) as never:
                client.get_job("f" * 32)
            assert never.value.code() == grpc.StatusCode.NOT_FOUND and "evicted" not in never.value.details()
    finally:
        server.stop()
