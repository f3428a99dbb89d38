"""NVIDIA's own Triton server reads what `impasto export` writes, and export leaves nothing else behind.

The reference is the ``tritonserver`` binary that ships inside PyPI's ``nvidia-pytriton`` wheel.
That wheel pins numpy<2, so it lives in a venv of its own, ``.venv-triton``, which ``.ci/run``
creates (as it does ``.venv-bpy`` for Blender). ``IMPASTO_TRITONSERVER`` may name another binary.
The wheel bundles no onnxruntime backend, so each model stops at "unable to find backend library
for backend 'onnxruntime'": the step after Triton has parsed and validated its config and checked
its folder. That is the only error these tests allow (besides the CUDA notices of a GPU-less host).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from impasto.export.registry import get_model
from impasto.export.repository import CONFIG, ONNX_FP32, list_models, staging_area, write_model

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-triton"

# What a GPU-less host or the missing onnxruntime backend makes tritonserver log as errors; nothing else is allowed.
ALLOWED_ERRORS = (
    re.compile(r"failed to load '[\w-]+' version \d+: Invalid argument: unable to find backend library for backend 'onnxruntime'"),
    re.compile(r"CudaDriverHelper has not been initialized"),
    re.compile(r"failed to load all models"),
)
LOG_LINE = re.compile(r"^([IWE])\d{4} [\d:.]+ +\d+ ([\w.]+:\d+)\] (.*)$")


def find_tritonserver() -> Path | None:
    """The tritonserver binary: $IMPASTO_TRITONSERVER, else the one in .venv-triton's nvidia-pytriton."""
    if os.environ.get("IMPASTO_TRITONSERVER"):
        return Path(os.environ["IMPASTO_TRITONSERVER"])
    found = sorted(VENV.glob("lib/python3*/site-packages/pytriton/tritonserver/bin/tritonserver"))
    return found[0] if found else None


@pytest.fixture(scope="module")
def tritonserver() -> Path:
    binary = find_tritonserver()
    if binary is None or not binary.is_file():
        pytest.skip("no tritonserver: .ci/run installs nvidia-pytriton into .venv-triton (see docs/export.md)")
    return binary


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """Every shipped model exported once through the real command line, fp16 variants included."""
    repo = tmp_path_factory.mktemp("triton") / "models"
    run = subprocess.run([sys.executable, "-m", "impasto.runtime.cli", "export", "--all", "--repo", str(repo),
                          "--seed", "3", "--json"], check=False, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert {m["model"] for m in json.loads(run.stdout)["models"]} == set(list_models(repo))
    return repo


def run_tritonserver(binary: Path, repo: Path) -> tuple[int, list[tuple[str, str, str]], str]:
    """tritonserver on ``repo``, no endpoints, configs taken as written; (exit code, log records, raw log).

    With --exit-on-error left on, it exits as soon as loading is over, so this takes well under a second.
    """
    run = subprocess.run(
        [str(binary), f"--model-repository={repo}", f"--backend-directory={binary.parents[1] / 'backends'}",
         "--allow-http=false", "--allow-grpc=false", "--allow-metrics=false",
         "--disable-auto-complete-config", "--log-verbose=1"],
        check=False, capture_output=True, text=True, timeout=120,
    )
    text = run.stdout + run.stderr
    records = [m.groups() for m in map(LOG_LINE.match, text.splitlines()) if m]
    return run.returncode, records, text


def parsed_configs(text: str) -> dict[str, model_config_pb2.ModelConfig]:
    """The model configs tritonserver logs (verbose) after parsing each config.pbtxt, by model name."""
    configs = {}
    for block in re.split(r"^[IWE]\d{4} .*$", text, flags=re.MULTILINE):
        if block.lstrip().startswith("name:"):
            config = text_format.Parse(block, model_config_pb2.ModelConfig())
            configs[config.name] = config
    return configs


def test_tritonserver_parses_every_exported_model_and_only_misses_its_onnxruntime_backend(tritonserver, exported):
    models = list_models(exported)
    assert sorted(p.name for p in exported.iterdir()) == models  # nothing in the root but model folders
    code, records, text = run_tritonserver(tritonserver, exported)
    errors = [message for level, _, message in records if level == "E"]
    unexpected = [e for e in errors if not any(p.search(e) for p in ALLOWED_ERRORS)]
    assert not unexpected, f"tritonserver errors besides the missing onnxruntime backend: {unexpected}\n{text[-4000:]}"
    for name in models:  # each model got as far as looking up its backend: config parsed and validated
        assert any(f"failed to load '{name}' version 1" in e and "'onnxruntime'" in e for e in errors), text[-4000:]
    assert code != 0  # it exits: the backend is missing, as expected
    configs = parsed_configs(text)
    assert sorted(configs) == models
    for name in models:
        ours = text_format.Parse((exported / name / CONFIG).read_text(), model_config_pb2.ModelConfig())
        theirs = configs[name]
        assert theirs.platform == ours.platform == "onnxruntime_onnx"
        assert theirs.max_batch_size == ours.max_batch_size > 0
        assert list(theirs.input) == list(ours.input) and list(theirs.output) == list(ours.output)
        assert theirs.dynamic_batching == ours.dynamic_batching
        assert dict(theirs.parameters) == dict(ours.parameters)


def test_tritonserver_refuses_what_old_exports_left_in_the_root(tritonserver, exported, tmp_path):
    """The reference check can fail: a staging folder in the root is what made Triton refuse to start."""
    repo = tmp_path / "models"
    (repo / ".renderer_oil.staging-1" / "1").mkdir(parents=True)
    (repo / ".renderer_oil.staging-1" / CONFIG).write_text((exported / "renderer_oil" / CONFIG).read_text())
    _, records, text = run_tritonserver(tritonserver, repo)
    assert any("directory name must equal model name" in m for level, _, m in records if level == "E"), text[-4000:]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_an_interrupted_export_leaves_nothing_in_the_root_and_the_next_one_cleans_up(exported, tmp_path):
    repo = tmp_path / "models"
    repo.mkdir()
    source = exported / "renderer_oil" / "1" / ONNX_FP32
    # a real export process that dies (kill -9 alike) after staging the model, before installing it
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "import impasto.export.repository as r\n"
        "from impasto.export.registry import get_model\n"
        "r.read_model_folder = lambda *a, **k: os._exit(9)\n"
        "r.write_model(Path(sys.argv[1]), get_model('renderer_oil'), {'model.onnx': Path(sys.argv[2])}, {})\n"
    )
    died = subprocess.Popen([sys.executable, "-c", script, str(repo), str(source)], stderr=subprocess.PIPE, text=True)
    assert died.wait(120) == 9, died.stderr.read()
    area = staging_area(repo)
    assert area.parent == repo.parent and area.name.startswith(".")
    leftovers = list(area.iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith(f"renderer_oil.{died.pid}.")
    assert (leftovers[0] / "renderer_oil" / "1" / ONNX_FP32).is_file()
    assert list(repo.iterdir()) == []  # the repository root never saw the half-staged model
    # what exports before this layout left inside the root, by processes that are gone
    legacy = [repo / f".renderer_oil.staging-{_dead_pid()}", repo / f".renderer_oil.old-{_dead_pid()}"]
    for folder in legacy:
        (folder / "1").mkdir(parents=True)
    live = repo.parent / "unrelated.staging-1"  # not ours: outside the patterns, must survive
    live.mkdir()

    folder = write_model(repo, get_model("renderer_oil"), {ONNX_FP32: source}, {})
    assert folder == repo / "renderer_oil"
    assert [p.name for p in repo.iterdir()] == ["renderer_oil"]
    assert not area.exists()  # the staging area goes once it is empty
    assert live.is_dir()
    write_model(repo, get_model("renderer_oil"), {ONNX_FP32: source}, {})  # replacing an export: same result
    assert [p.name for p in repo.iterdir()] == ["renderer_oil"] and not area.exists()


def test_a_running_exports_staging_folder_is_left_alone(tmp_path, exported):
    """Clean-up removes only what dead processes left: a concurrent export keeps its folder."""
    repo = tmp_path / "models"
    repo.mkdir()
    area = staging_area(repo)
    mine = area / f"renderer_marker.{os.getpid()}.abc123"  # this process is alive
    mine.mkdir()
    write_model(repo, get_model("renderer_oil"), {ONNX_FP32: exported / "renderer_oil" / "1" / ONNX_FP32}, {})
    assert mine.is_dir() and [p.name for p in repo.iterdir()] == ["renderer_oil"]
