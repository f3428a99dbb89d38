"""Batch runs: specs, resume after SIGKILL, failures, Ray, the OpenJD template, a server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from impasto.runtime.batch.spec import SpecError, expand, load_spec, select
from impasto.runtime.images import load_image, resize, save_image

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "addons" / "farm" / "openjd" / "impasto-batch.template.yaml"


def impasto(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "impasto.runtime.cli", *args], capture_output=True, text=True, **kw)


def make_job(folder: Path, items: int = 20, params: str = "strokes = 20\nlevels = 2\nsize = 64\nseed = 3\n") -> Path:
    frames = folder / "frames"
    frames.mkdir(parents=True)
    image = resize(load_image("example:coffee"), 48, 64)
    for i in range(items):
        save_image(torch.roll(image, shifts=3 * i, dims=2), frames / f"f{i:03d}.png")
    spec = folder / "job.toml"
    spec.write_text(f'op = "paint"\ninputs = "frames/*.png"\noutput = "out/{{stem}}.png"\n[params]\n{params}')
    return spec


def records(folder: Path) -> dict[int, dict]:
    found = {}
    for p in (folder / ".impasto-batch" / "job").glob("*.json"):
        found[int(p.stem)] = json.loads(p.read_text())
    return found


def test_specs_expand_into_stable_numbered_tasks(tmp_path):
    spec = load_spec(make_job(tmp_path, items=5))
    tasks = expand(spec)
    assert [t.index for t in tasks] == [0, 1, 2, 3, 4]
    assert [Path(t.input).name for t in tasks] == [f"f{i:03d}.png" for i in range(5)]
    assert tasks[2].output == str(tmp_path / "out" / "f002.png")
    assert [t.index for t in select(tasks, "1-3")] == [1, 2, 3] and [t.index for t in select(tasks, "4")] == [4]
    frames = tmp_path / "frames.toml"
    frames.write_text('op = "paint"\noutput = "o/{frame:03d}.png"\n[inputs]\nframes = "2-4"\npattern = "frames/f{frame:03d}.png"\n')
    assert [(t.frame, Path(t.output).name) for t in expand(load_spec(frames))] == [(2, "002.png"), (3, "003.png"), (4, "004.png")]
    (tmp_path / "list.txt").write_text("frames/f004.png\nframes/f001.png\n")
    manifest = tmp_path / "manifest.toml"
    manifest.write_text('op = "paint"\ninputs = "list.txt"\noutput = "m/{index}.png"\n')
    assert [Path(t.input).name for t in expand(load_spec(manifest))] == ["f004.png", "f001.png"]
    folder = tmp_path / "folder.toml"
    folder.write_text('op = "paint"\ninputs = "frames"\noutput = "x/{name}"\n')
    assert len(expand(load_spec(folder))) == 5


@pytest.mark.parametrize("text, message", [
    ('op = "sing"\ninputs = "*.png"\noutput = "o.png"\n', "op 'sing' is not one of"),
    ('op = "paint"\ninputs = "nothing/*.png"\noutput = "o/{stem}.png"\n', "match no images"),
    ('op = "paint"\ninputs = "frames/*.png"\noutput = "same.png"\n', "would both write"),
    ('op = "paint"\ninputs = "frames/*.png"\noutput = "o/{colour}.png"\n', "unknown field"),
    ('op = "paint"\noutput = "o.png"\n', "'inputs' is missing"),
])
def test_bad_specs_are_refused_with_one_line(tmp_path, text, message):
    make_job(tmp_path, items=2)
    (tmp_path / "bad.toml").write_text(text)
    run = impasto("batch", str(tmp_path / "bad.toml"))
    assert run.returncode == 2 and message in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_bad_params_fail_before_any_work(tmp_path):
    spec = make_job(tmp_path, items=2, params="strokes = 0\n")
    run = impasto("batch", str(spec))
    assert run.returncode == 2 and "[params] strokes must be between 1 and 20000" in run.stderr
    spec.write_text(spec.read_text().replace("strokes = 0", "brushh = 'oil'"))
    run = impasto("batch", str(spec))
    assert run.returncode == 2 and "brushh" in run.stderr
    assert not (tmp_path / "out").exists()


def test_killed_batch_resumes_without_recomputing_finished_items(tmp_path):
    spec = make_job(tmp_path, items=20)
    proc = subprocess.Popen([sys.executable, "-m", "impasto.runtime.cli", "batch", str(spec), "--workers", "2", "--threads", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while len([r for r in records(tmp_path).values() if r["status"] == "done"]) < 5 and time.time() < deadline:
        assert proc.poll() is None, "the batch ended before it could be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {i: r for i, r in records(tmp_path).items() if r["status"] == "done"}
    assert 5 <= len(before) < 20
    mtimes = {i: os.stat(r["output"]).st_mtime_ns for i, r in before.items()}
    run = impasto("batch", str(spec), "--workers", "2", "--threads", "1", "--json")
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["skipped"] == len(before) and summary["done"] == 20 - len(before) and summary["failed"] == 0
    after = records(tmp_path)
    assert len(after) == 20 and all(r["status"] == "done" for r in after.values())
    for i, r in before.items():
        assert after[i]["run"] == r["run"] and os.stat(r["output"]).st_mtime_ns == mtimes[i]  # not recomputed
    for out in sorted((tmp_path / "out").glob("*.png")):
        with Image.open(out) as im:
            im.load()
            assert im.size == (64, 48)
    assert len(list((tmp_path / "out").glob("*.png"))) == 20
    # a third run has nothing to do; a changed parameter makes everything stale
    again = json.loads(impasto("batch", str(spec), "--json").stdout)
    assert again["skipped"] == 20 and again["done"] == 0
    spec.write_text(spec.read_text().replace("seed = 3", "seed = 4"))
    changed = json.loads(impasto("batch", str(spec), "--items", "0-1", "--json").stdout)
    assert changed["done"] == 2 and changed["tasks"] == 2


def test_a_failing_item_is_recorded_and_the_rest_go_on(tmp_path):
    spec = make_job(tmp_path, items=3)
    (tmp_path / "frames" / "f001.png").write_bytes(b"not a png")
    run = impasto("batch", str(spec), "--json")
    assert run.returncode == 1
    summary = json.loads(run.stdout)
    assert summary["done"] == 2 and summary["failed"] == 1 and summary["failures"][0]["index"] == 1
    assert "not a readable image" in summary["failures"][0]["error"]
    assert records(tmp_path)[1]["status"] == "failed" and not (tmp_path / "out" / "f001.png").exists()


def test_ray_gives_the_same_outputs_as_the_local_pool(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'impasto[ray]')")
    a, b = tmp_path / "pool", tmp_path / "ray"
    spec_a, spec_b = make_job(a, items=4), make_job(b, items=4)
    assert impasto("batch", str(spec_a), "--workers", "2", "--threads", "1").returncode == 0
    run = impasto("batch", str(spec_b), "--ray", "--workers", "2", "--threads", "1", "--json", timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout[run.stdout.index("{\n"):])["done"] == 4  # Ray may print before the summary
    for out in sorted((a / "out").glob("*.png")):
        assert out.read_bytes() == (b / "out" / out.name).read_bytes(), out.name


def test_openjd_template_checks_and_runs_two_chunked_tasks(tmp_path):
    openjd = shutil.which("openjd")
    if openjd is None:
        pytest.skip("openjd-cli is not installed (pip install openjd-cli)")
    check = subprocess.run([openjd, "check", str(TEMPLATE)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    spec = make_job(tmp_path, items=4)
    command = shutil.which("impasto") or pytest.skip("the impasto command is not on PATH")
    run = subprocess.run([openjd, "run", str(TEMPLATE), "--step", "Batch", "-p", f"SpecFile={spec}", "-p", "Items=0-3",
                          "-p", "ChunkSize=2", "-p", f"Impasto={command}"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert run.stdout.count("--items") >= 2 or "0-1" in run.stdout  # two tasks: items 0-1 and 2-3
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == [f"f{i:03d}.png" for i in range(4)]
    runs = {r["run"] for r in records(tmp_path).values()}
    assert len(runs) == 2  # two separate impasto processes, one per chunk


def test_batch_can_send_its_tasks_to_a_server(tmp_path):
    from serving import RunningServer

    spec = make_job(tmp_path, items=2)
    server = RunningServer()
    try:
        run = impasto("batch", str(spec), "--server", server.grpc, "--json")
    finally:
        server.stop()
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["done"] == 2
    local = tmp_path / "local"
    spec_local = make_job(local, items=2)
    assert impasto("batch", str(spec_local)).returncode == 0
    for name in ("f000.png", "f001.png"):
        assert (tmp_path / "out" / name).read_bytes() == (local / "out" / name).read_bytes()


def test_spec_errors_name_the_file(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "none.toml")
