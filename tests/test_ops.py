"""The op registry: one definition per op, and every layer derived from it agrees with it.

A real server (with the ``tint`` test engine op loaded as a plugin) answers Capabilities,
the generic Run RPC and ``/v1/ops/{op}``; the CLI's generated parser, batch specs and the
wire are checked against each op's definition. The add-ons' generated forms are checked
against Capabilities in test_krita.py and test_blender.py.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from serving import RunningServer

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "addons" / "common"))
PLUGIN_ENV = {"IMPASTO_OPS": "ops_tint", "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}

from impasto.runtime.api import studio_pb2 as pb  # noqa: E402
from impasto.runtime.client import JobFailed, StudioClient  # noqa: E402
from impasto.runtime.images import encode_png, load_image, resize  # noqa: E402
from impasto.export import registry as export_registry  # noqa: E402
from impasto.runtime.ops import registry  # noqa: E402
from impasto.runtime.ops.registry import get_op, list_ops  # noqa: E402
from impasto_http import ImpastoClient, ImpastoError  # noqa: E402

SMALL = {"strokes": 14, "levels": 2, "size": 128, "seed": 1}


@pytest.fixture(scope="module", autouse=True)
def tint():
    """The plugin op in this process too (as IMPASTO_OPS loads it in the server's), removed afterwards
    so that the other test modules' subprocesses, which do not load it, see the same ops as they do."""
    list_ops()  # the built-ins first
    import ops_tint  # noqa: F401  (registers the op and its exportable model)

    yield
    registry._REGISTRY.pop("tint", None)
    export_registry._REGISTRY.pop("tint", None)
    sys.modules.pop("ops_tint", None)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ops") / "models"
    run = subprocess.run([sys.executable, "-c", "import ops_tint; from impasto.export.pipeline import export_model; "
                          f"export_model('tint', {str(path)!r}, fp16=False, seed=0)"],
                         capture_output=True, text=True, env={**os.environ, **PLUGIN_ENV})
    assert run.returncode == 0, run.stderr
    return path


@pytest.fixture(scope="module")
def server(repo):
    s = RunningServer("--repo", str(repo), env=PLUGIN_ENV)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def photo() -> bytes:
    return encode_png(resize(load_image("example:coffee"), 64, 96))


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.float32) / 255


def _expected_info(spec) -> dict:
    """What Capabilities must say about ``spec``: every option, slot and output of its definition."""
    return {
        "options": [(o.name, o.type_name, str(o.default), list(o.choice_list), o.min or 0.0, o.max or 0.0, o.help)
                    for o in spec.option_specs()],
        "images": [(s.name, s.role, s.required and s.unless is None, s.same_size_as or "", s.together_with or "",
                    s.min_side, s.unless or "") for s in spec.images],
        "outputs": [(o.name, o.kind, o.filename, o.mime, o.on_request, o.place) for o in spec.outputs],
        "runs_in": spec.runs_in,
        "live": {n: json.dumps(v) for n, v in spec.live},
    }


def test_capabilities_over_grpc_and_http_describe_every_op_as_its_definition(server):
    with StudioClient(server.grpc) as client:
        caps = client.capabilities()
    http = json.loads(urllib.request.urlopen(server.http + "/v1/capabilities").read())
    assert list_ops() == ["colorize", "paint", "semantic", "sketch", "sketchify", "stylize", "texture", "tint", "warp"]
    assert sorted(op.name for op in caps.ops if op.job) == list_ops()
    for name in list_ops():
        spec = get_op(name)
        info = next(op for op in caps.ops if op.name == name)
        got = {
            "options": [(o.name, o.type, o.default, list(o.choices), o.min, o.max, o.help) for o in info.options],
            "images": [(s.name, s.role, s.required, s.same_size_as, s.together_with, s.min_side, s.unless)
                       for s in info.images],
            "outputs": [(o.name, o.kind, o.filename, o.mime, o.on_request, o.place) for o in info.outputs],
            "runs_in": info.runs_in,
            "live": dict(info.live),
        }
        assert got == _expected_info(spec), name
        web = next(op for op in http["ops"] if op["name"] == name)
        assert [o["name"] for o in web["options"]] == [o.name for o in spec.option_specs()]
        assert [o.get("default", "") for o in web["options"]] == [str(o.default) for o in spec.option_specs()]
    texture = {o.name: o for o in next(op for op in caps.ops if op.name == "texture").options}
    assert texture["iterations"].default == "100"  # once 100 in the CLI and 200 on the server


def test_the_cli_offers_every_op_with_the_definitions_flags_and_defaults():
    from impasto.runtime.cli import build_parser
    from impasto.runtime.cli.flags import default_text

    parser = build_parser()
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    client = next(a for a in commands["client"]._actions if a.__class__.__name__ == "_SubParsersAction").choices
    for name in list_ops():
        spec = get_op(name)
        for sub in (commands[name], client[name]):
            flags = {f: a for a in sub._actions for f in a.option_strings}
            for o in spec.option_specs():
                action = flags[o.cli_flag()]
                assert not default_text(o) or f"default: {default_text(o)}" in action.help, (name, o.name)
                for choice in o.choice_list:
                    assert choice in f"{action.help} {action.metavar}", (name, o.name, choice)
            for slot in spec.images:
                if not slot.required:
                    assert slot.cli_flag in flags, (name, slot.name)


def test_batch_specs_take_exactly_the_ops_options_and_images(tmp_path):
    from impasto.runtime.batch.runner import TaskRunner
    from impasto.runtime.errors import code_of

    Image.new("RGB", (96, 64), "white").save(tmp_path / "a.png")
    for name in ("paint", "texture"):
        spec = get_op(name)
        params = "\n".join(f"{o.name} = {json.dumps(o.default)}" for o in spec.option_specs())
        path = tmp_path / f"{name}.toml"
        path.write_text(f'op = "{name}"\ninputs = "*.png"\noutput = "out/{{stem}}.png"\n[params]\n{params}\n')
        runner = TaskRunner(path)
        assert runner.spec.params == {o.name: o.default for o in spec.option_specs()}
        path.write_text(f'op = "{name}"\ninputs = "*.png"\noutput = "out/{{stem}}.png"\n[params]\ncolour = 3\n')
        with pytest.raises(Exception) as info:
            TaskRunner(path)
        assert code_of(info.value) == "INVALID_ARGUMENT" and "colour is not an option" in str(info.value)


def test_run_gives_every_output_and_the_typed_rpc_the_same_painting(server, photo):
    with StudioClient(server.grpc) as client:
        result = client.run("paint", {"image": photo}, SMALL, outputs=["svg", "animation"])
        typed = client.paint(pb.PaintRequest(image=pb.Image(encoded=photo), options=pb.PaintOptions(**SMALL)))
    assert decode(result.images["image"].encoded).shape == (85, 128, 3)
    assert json.loads(result.texts["strokes"])["format"] == "impasto.strokes"
    assert result.texts["svg"].startswith("<svg") and result.files["animation"].encoded[:6] == b"GIF89a"
    assert result.numbers["strokes"] == typed.strokes > 0 and result.numbers["seconds"] > 0
    assert result.images["image"].encoded == typed.image.encoded  # one job path, whichever RPC started it


def test_bad_op_requests_name_the_field(server, photo):
    cases = [
        (("sing", {"image": photo}, {}), grpc.StatusCode.NOT_FOUND, "unknown op 'sing'"),
        (("paint", {"picture": photo}, {}), grpc.StatusCode.INVALID_ARGUMENT, "images.picture"),
        (("paint", {}, {}), grpc.StatusCode.INVALID_ARGUMENT, "images.image: paint needs this image"),
        (("paint", {"image": photo}, {"lr": 1e30}), grpc.StatusCode.INVALID_ARGUMENT, "options.lr must be between"),
        (("paint", {"image": photo}, {"brush": "crayon"}), grpc.StatusCode.INVALID_ARGUMENT, "options.brush 'crayon'"),
        (("paint", {"image": photo}, {"colour": 1}), grpc.StatusCode.INVALID_ARGUMENT, "options.colour is not an option"),
        (("paint", {"image": photo, "mask": encode_png(np.zeros((5, 5, 3), np.uint8))}, {}),
         grpc.StatusCode.INVALID_ARGUMENT, "images.mask is 5x5, images.image is 96x64"),
        (("stylize", {"content": photo, "style": photo, "content_labels": photo}, {}),
         grpc.StatusCode.INVALID_ARGUMENT, "give both images.content_labels and images.style_labels"),
        (("tint", {"image": photo}, {"strength": 2}), grpc.StatusCode.INVALID_ARGUMENT, "options.strength must be between 0 and 1"),
    ]
    with StudioClient(server.grpc) as client:
        for args, code, message in cases:
            with pytest.raises(grpc.RpcError) as info:
                client.run(*args)
            assert info.value.code() == code and message in info.value.details(), args
        with pytest.raises(grpc.RpcError) as info:
            client.run("paint", {"image": photo}, SMALL, outputs=["movie"])
        assert "outputs: 'movie' is not an optional output of paint" in info.value.details()
        assert client.run("tint", {"image": photo}, {"strength": 0.0}).numbers["width"] == 96  # still serving
    with pytest.raises(ImpastoError) as http_error:
        ImpastoClient(server.http).run("paint", {"image": photo}, {"strokes": -5})
    assert http_error.value.status == 400 and "options.strokes must be between 1 and 20000" in str(http_error.value)


def test_an_engine_op_runs_on_the_server_over_grpc_and_http_and_locally_alike(server, repo, photo, tmp_path):
    source = decode(photo)
    expected = source * 0.75 + np.array([1.0, 0.5, 0.0], np.float32) * 0.25
    with StudioClient(server.grpc) as client:
        events = []
        result = client.run("tint", {"image": photo}, {"strength": 0.25}, on_event=events.append)
    assert [e.WhichOneof("event") for e in events] == ["queued", "started", "op_result"]
    assert np.abs(decode(result.images["image"].encoded) - expected).max() <= 1 / 255 + 1e-6
    web = ImpastoClient(server.http).run("tint", {"image": photo}, {"strength": 0.25})
    assert web["images"]["image"] == result.images["image"].encoded
    (tmp_path / "in.png").write_bytes(photo)
    env = {**os.environ, **PLUGIN_ENV}
    local = subprocess.run([sys.executable, "-m", "impasto.runtime.cli", "tint", str(tmp_path / "in.png"), "-o",
                            str(tmp_path / "out.png"), "--strength", "0.25", "--repo", str(repo)],
                           capture_output=True, text=True, env=env)
    assert local.returncode == 0, local.stderr
    assert (tmp_path / "out.png").read_bytes() == result.images["image"].encoded
    bad = subprocess.run([sys.executable, "-m", "impasto.runtime.cli", "tint", str(tmp_path / "in.png"), "-o",
                          str(tmp_path / "bad.png"), "--strength", "2", "--repo", str(repo)],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == ["impasto: error: --strength must be between 0 and 1, got 2"]
    assert not (tmp_path / "bad.png").exists()


def test_http_ops_route_streams_events_and_serves_every_output_file(server, photo):
    client = ImpastoClient(server.http)
    kinds = []
    result = client.run("paint", {"image": photo}, SMALL, outputs=["svg"], on_event=lambda e: kinds.append(e))
    assert "queued" in kinds[0] and "op_result" in kinds[-1]
    assert decode(result["images"]["image"]).shape == (85, 128, 3)
    assert result["texts"]["svg"].startswith("<svg") and json.loads(result["texts"]["strokes"])["strokes"]
    for name in ("strokes.json", "strokes.svg", "image.png"):
        assert client.fetch(f"/v1/jobs/{result['job_id']}/files/{name}")
    with pytest.raises(ImpastoError) as missing:
        client.fetch(f"/v1/jobs/{result['job_id']}/files/animation.gif")  # not asked for
    assert missing.value.status == 404
    with pytest.raises(urllib.error.HTTPError) as not_found:
        urllib.request.urlopen(urllib.request.Request(server.http + "/v1/ops/sing", data=b"{}", method="POST"))
    assert not_found.value.code == 404 and "unknown op 'sing'" in json.loads(not_found.value.read())["error"]


def test_cancelling_a_job_started_with_run(server, photo):
    with StudioClient(server.grpc) as client:
        events = client.run_events(__import__("impasto.runtime.client", fromlist=["op_request"]).op_request(
            "paint", {"image": photo}, {"strokes": 3000, "levels": 3, "size": 128, "iterations": 200}))
        first = next(events)
        client.cancel_job(first.job_id)
        with pytest.raises(JobFailed) as info:
            client.wait(events)
    assert info.value.code == "CANCELLED"


def test_every_watcher_gets_every_event_in_order_while_a_job_ends(server, photo):
    from concurrent.futures import ThreadPoolExecutor

    from impasto.runtime.client import op_request

    with StudioClient(server.grpc) as client:
        events = client.run_events(op_request("paint", {"image": photo}, {**SMALL, "strokes": 40}))
        job_id = next(events).job_id

        def watch(delay: float) -> list:
            __import__("time").sleep(delay)
            return list(client.watch(job_id))

        with ThreadPoolExecutor(8) as pool:
            streams = list(pool.map(watch, [i * 0.15 for i in range(8)]))
        list(events)
    for stream in streams:
        assert [e.seq for e in stream] == list(range(1, len(stream) + 1))
        assert stream[-1].WhichOneof("event") == "op_result"
