"""``warp`` on a real server: the warper on the engine, its ``--style`` step on the sidecar (chain.py).

A real ``impasto serve`` (its own sidecar subprocess) serves the tiny random-weight warper of
tests/warp_repo.py. A styled warp is one job whose stylize step runs on the sidecar: its
progress arrives as the job's, its result is the warp restyled, a cancel stops the step on the
sidecar, and the server keeps serving after each of these. A saved field travels back as the
``apply`` slot's bytes and warps another picture without the model.
"""

from __future__ import annotations

import io
import os
import signal
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from impasto.runtime.api import studio_pb2 as pb
from impasto.runtime.client import JobFailed, StudioClient
from serving import RunningServer


def _png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def _picture(seed: int, side: int = 96) -> np.ndarray:
    """Smooth colour blobs and an edge: features the random VGG and the stylize step both see."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    channels = [np.sin(x * rng.uniform(3, 9) + rng.uniform(0, 6)) * np.cos(y * rng.uniform(3, 9)) for _ in range(3)]
    picture = (np.stack(channels, -1) * 0.4 + 0.5) * 255
    picture[side // 3: side // 2, side // 4:] = rng.uniform(0, 255, 3)
    return picture.clip(0, 255).astype(np.uint8)


def _decoded(image: pb.Image) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image.encoded)).convert("RGB")).astype(np.int16)


@pytest.fixture(scope="module")
def server():
    from warp_repo import shared_warp_repo

    s = RunningServer("--repo", str(shared_warp_repo()))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def images() -> dict[str, pb.Image]:
    return {name: pb.Image(encoded=_png(_picture(seed))) for seed, name in enumerate(("content", "geometry", "style"))}


STYLE = {"features": "random", "content_weight": 0.0, "style_iterations": 40, "seed": 0}


def test_a_styled_warp_runs_its_stylize_step_on_the_sidecar(server, images):
    with StudioClient(server.grpc) as client:
        plain = client.run("warp", {"content": images["content"], "geometry": images["geometry"]},
                           outputs=["flow"])
        events: list[pb.JobEvent] = []
        styled = client.run("warp", images, STYLE, outputs=["warped"], on_event=events.append)
        kinds = [e.WhichOneof("event") for e in events]
        assert "progress" in kinds and kinds[-1] == "op_result"  # the sidecar step's progress, forwarded
        steps = [e.progress for e in events if e.WhichOneof("event") == "progress"]
        assert max(p.total for p in steps) > 0 and styled.numbers["style_seconds"] > 0
        np.testing.assert_array_equal(_decoded(styled.images["warped"]), _decoded(plain.images["image"]))
        assert np.abs(_decoded(styled.images["image"]) - _decoded(plain.images["image"])).mean() > 2  # restyled
        # the saved field warps another picture the same way, without the model
        again = client.run("warp", {"content": images["content"], "apply": plain.files["flow"]})
        np.testing.assert_array_equal(_decoded(again.images["image"]), _decoded(plain.images["image"]))
        # ... and the server checks only the models a request runs: --apply needs none, so naming a model this
        # server does not serve is no error there, while a new warp with it is refused with the model's name
        elsewhere = client.run("warp", {"content": images["content"], "apply": plain.files["flow"]},
                               {"model": "warp_not_served"})
        np.testing.assert_array_equal(_decoded(elsewhere.images["image"]), _decoded(plain.images["image"]))
        with pytest.raises(grpc.RpcError) as refused:
            client.run("warp", {"content": images["content"], "geometry": images["geometry"]},
                       {"model": "warp_not_served"})
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "warp_not_served" in refused.value.details()


def test_cancelling_a_styled_warp_stops_its_step_and_the_server_goes_on(server, images):
    slow = {**STYLE, "style_iterations": 5000}
    with StudioClient(server.grpc) as client:
        events = client.run_events(pb.OpRequest(op="warp", images=images, options=_struct(slow)))
        job_id, cancelled = None, threading.Event()
        with pytest.raises(JobFailed) as failed:
            def on_event(event: pb.JobEvent) -> None:
                nonlocal job_id
                job_id = event.job_id
                if event.WhichOneof("event") == "progress" and not cancelled.is_set():
                    cancelled.set()
                    client.cancel_job(job_id)
            client.wait(events, on_event)
        assert failed.value.code == "CANCELLED"
        assert client.get_job(job_id).state == pb.CANCELLED
        done = client.run("warp", {"content": images["content"], "geometry": images["geometry"]})
        assert done.numbers["width"] == 96


def test_a_sidecar_that_dies_under_the_step_fails_the_job_and_a_new_one_takes_the_next(server, images):
    slow = {**STYLE, "style_iterations": 5000}
    with StudioClient(server.grpc) as client:
        killed = threading.Event()

        def on_event(event: pb.JobEvent) -> None:
            if event.WhichOneof("event") == "progress" and not killed.is_set():
                killed.set()
                os.kill(sidecar_pid(server), signal.SIGKILL)

        with pytest.raises(JobFailed) as failed:
            client.run("warp", images, slow, on_event=on_event)
        assert failed.value.code == "UNAVAILABLE" and "sidecar" in failed.value.message
        assert client.run("warp", {"content": images["content"], "geometry": images["geometry"]}).images["image"]
        styled = client.run("warp", images, {**STYLE, "style_iterations": 5})  # on the restarted sidecar
        assert styled.numbers["style_seconds"] > 0


def sidecar_pid(server) -> int:
    """The sidecar's pid now (the server starts a new one after a crash): its child running impasto.runtime.sidecar."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue  # a process that ended meanwhile
        if ppid == server.process.pid and b"impasto.runtime.sidecar" in command:
            return int(stat.parent.name)
    raise AssertionError("the server has no sidecar child")


def _struct(options: dict):
    from google.protobuf import json_format, struct_pb2

    struct = struct_pb2.Struct()
    json_format.ParseDict(options, struct)
    return struct
