"""What a new user meets first: the quick start, progress on a busy machine, small options, the docs.

Each test runs the real ``impasto`` command as a subprocess (stderr piped, so not a terminal)
or the real library, and checks one thing issue 14 found broken.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serving import RunningServer

ROOT = Path(__file__).resolve().parents[1]


def impasto(*args: str, cwd=None, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``impasto ARGS`` with stdout and stderr piped; ``env`` adds variables (None removes one)."""
    environ = {**os.environ, **(env or {})}
    environ = {k: v for k, v in environ.items() if v is not None}
    return subprocess.run([sys.executable, "-m", "impasto.runtime.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=environ, timeout=timeout, check=False)


def one_line_error(run: subprocess.CompletedProcess, text: str) -> None:
    assert run.returncode == 2, run.stderr
    assert text in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr


# -- threads and progress on a busy machine -----------------------------------------------------------------------

def test_thread_choice_leaves_busy_cores_alone():
    from impasto.runtime.config import MAX_AUTO_THREADS, available_cpus, choose_threads

    assert choose_threads(0, cpus=2, busy=0.3) == 2  # an idle machine: every core
    assert choose_threads(0, cpus=2, busy=1.2) == 1  # one core busy with other work: the other one
    assert choose_threads(0, cpus=2, busy=7.0) == 1  # all busy: one thread, never zero
    assert choose_threads(0, cpus=64, busy=0.0) == MAX_AUTO_THREADS
    assert choose_threads(0, cpus=16, busy=10.0) == 6
    assert choose_threads(3, cpus=2, busy=7.0) == 3  # the threads setting always wins
    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))


def test_busy_cpus_sees_other_work():
    from impasto.runtime.config import busy_cpus

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        busy = busy_cpus(0.5)
    finally:
        spinner.kill()
        spinner.wait(10)
    assert 0.7 <= busy <= len(os.sched_getaffinity(0)) + 0.01  # the spinner holds a whole core


def test_progress_lines_appear_without_a_terminal(tmp_path):
    run = impasto("paint", "example:coffee", "--strokes", "10", "--levels", "2", "--size", "64", "-o", "p.png", "-v",
                  cwd=tmp_path, env={"IMPASTO_PROGRESS_SECONDS": "0.2", "IMPASTO_THREADS": None})
    assert run.returncode == 0, run.stderr
    lines = [x for x in run.stderr.splitlines() if x.startswith("impasto paint:")]
    steps = [x for x in lines if re.match(r"impasto paint: stage [12]/2, step \d+/\d+ \(\d+%\), loss [\d.e-]+, \d+ s", x)]
    assert steps, run.stderr  # a line every 0.2 s of a run of a few seconds
    # -v after the subcommand works, and says how many torch threads it chose
    assert re.search(r"torch threads: \d+ \(\d+ CPUs available; threads setting automatic\)", run.stderr), run.stderr
    assert (tmp_path / "p.png").is_file() and run.stdout.startswith("wrote p.png")


def test_a_slow_style_pass_is_announced_before_it_runs(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "impasto.runtime.cli", "paint", "example:coffee", "--style",
                             "example:astronaut", "--features", "random", "--patch", "128", "-o", "p.png"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, warning = time.monotonic() + 120, None
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            if "the style pass" in line:
                warning = line
                break
        assert warning is not None, "no warning before the style pass"
        assert re.search(r"will take about \d+ (s|min) more on cpu", warning), warning
        assert "random-weight" in warning and "fewer levels or a smaller patch" in warning
        assert proc.poll() is None  # said before the work, not after
    finally:
        proc.kill()
        proc.wait(30)
    assert not (tmp_path / "p.png").exists()


# -- options that used to fail late --------------------------------------------------------------------------------

def test_style_painting_works_at_the_smallest_patch(tmp_path):
    # documented range 8-512: VGG-19's pooling used to fail below 16 px ("Output size is too small")
    run = impasto("-v", "paint", "example:coffee", "--style", "example:astronaut", "--features", "random", "--patch",
                  "8", "--levels", "1", "--strokes", "2", "--iterations", "2", "--size", "32", "-o", "p.png",
                  cwd=tmp_path, env={"IMPASTO_THREADS": "1", "IMPASTO_PROGRESS_SECONDS": "0"})
    assert run.returncode == 0, run.stderr
    with Image.open(tmp_path / "p.png") as im:
        assert im.size == (32, 21)
    # the threads setting wins over the automatic choice; progress_seconds 0: no progress lines
    assert "torch threads: 1 (" in run.stderr and "impasto paint:" not in run.stderr, run.stderr


def test_style_loss_upsamples_patches_below_vggs_smallest_side():
    import torch
    from impasto.runtime.ops.paint import PaintOptions, _Stylist

    style = torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(0))
    stylist = _Stylist(style, PaintOptions(patch=12, features="random"), torch.device("cpu"))
    assert stylist.side == 16  # 2 ** 4 poolings before relu5_1
    pred = torch.rand(2, 3, 12, 12, requires_grad=True)
    loss = stylist.loss(pred)
    loss.backward()
    assert torch.isfinite(loss) and pred.grad.abs().sum() > 0  # the upsampling passes the gradient back


def test_colours_with_signs_or_spaces_are_refused(tmp_path):
    from impasto.runtime.ops.paint_op import PaintRequestError, parse_colour

    for bad in ("#+1+2+3", "#-1-2-3", "# 1 2 3", "#12345g", "#1234567", "red", "#_1_2_3"):
        with pytest.raises(PaintRequestError, match=r"'.*' is not a colour: use #rrggbb, black or white"):
            parse_colour(bad)
    assert parse_colour("#ff8000") == (1.0, 128 / 255, 0.0)
    one_line_error(impasto("paint", "example:coffee", "-o", "p.png", "--canvas", "#+1+2+3", cwd=tmp_path),
                   "--canvas '#+1+2+3' is not a colour")


def test_a_folder_as_the_input_image_is_called_a_folder(tmp_path):
    (tmp_path / "photos").mkdir()
    one_line_error(impasto("paint", "photos", "-o", "p.png", cwd=tmp_path), "'photos' is a folder, not an image file")


# -- the client and batch against a real server ------------------------------------------------------------------

@pytest.fixture(scope="module")
def bare_server(tmp_path_factory):
    s = RunningServer("--repo", str(tmp_path_factory.mktemp("no-models")))
    yield s
    s.stop()


def test_the_client_takes_example_images_like_paint(bare_server, tmp_path):
    args = ["--strokes", "5", "--levels", "2", "--size", "48", "--seed", "2"]
    local = impasto("paint", "example:coffee", "-o", "local.png", *args, cwd=tmp_path)
    remote = impasto("client", "paint", "example:coffee", "-o", "remote.png", "--server", bare_server.grpc, *args,
                     cwd=tmp_path)
    assert local.returncode == 0 and remote.returncode == 0, local.stderr + remote.stderr
    a, b = (np.array(Image.open(tmp_path / n)) for n in ("local.png", "remote.png"))
    assert np.array_equal(a, b)  # the sample photo is sent as pixels, painted as the local command paints it


def test_batch_failure_records_carry_no_internal_class_names(bare_server, tmp_path):
    import json

    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "f000.png").write_bytes(b"not a png")
    spec = tmp_path / "job.toml"
    spec.write_text('op = "paint"\ninputs = "frames/*.png"\noutput = "out/{stem}.png"\n[params]\nstrokes = 1\nlevels = 1\n')
    for where in ([], ["--server", bare_server.grpc]):
        run = impasto("batch", str(spec), "--json", *where, cwd=tmp_path)
        assert run.returncode == 1, run.stderr
        error = json.loads(run.stdout)["failures"][0]["error"]
        assert "not a readable image" in error or "not an image" in error, error
        assert not re.match(r"\w*(Error|Exception):", error), error


# -- the package and the docs ----------------------------------------------------------------------------------------

def test_dir_shows_the_api_and_not_typing_internals():
    import impasto

    names = dir(impasto)
    for name in ("paint", "PaintOptions", "texture", "stylize", "load_image", "__version__"):
        assert name in names
    assert "TYPE_CHECKING" not in names and "Any" not in names
    assert all(getattr(impasto, n) is not None for n in impasto.__all__)


def _quick_start_paint() -> str:
    readme = (ROOT / "README.md").read_text()
    return next(line for line in readme.splitlines() if "impasto paint example:astronaut" in line)


def test_the_quick_start_writes_into_a_git_ignored_folder():
    command = _quick_start_paint()
    written = re.findall(r"(?:-o|--json|--svg|--animate) (\S+)", command)
    assert len(written) == 4 and all(p.startswith("out/") for p in written), command
    assert "mkdir -p out" in command
    assert "out/" in (ROOT / ".gitignore").read_text().split()


def test_readme_links_stay_inside_the_repository():
    readme = (ROOT / "README.md").read_text()
    assert "../" not in readme
    for target in re.findall(r"\]\(([^)#]+)", readme):
        assert (ROOT / target).exists(), target


def test_painting_docs_give_the_patch_default_of_the_code():
    from impasto.runtime.ops.paint import PaintOptions

    text = (ROOT / "docs" / "painting.md").read_text()
    defaults = re.findall(r"`--patch`[^.;]*?default (\d+) px", text)
    assert defaults and set(defaults) == {str(PaintOptions().patch)}, defaults
    assert not re.search(r"`--patch`, \d+ px", text)


def test_the_animation_has_the_frames_the_docs_promise():
    import io

    import torch
    from impasto.runtime.formats.animation import animation_gif

    text = (ROOT / "docs" / "painting.md").read_text()
    promised = int(re.search(r"(\d+) frames for the default 495 strokes", text)[1])
    strokes = torch.rand(495, 12, generator=torch.Generator().manual_seed(0))
    with Image.open(io.BytesIO(animation_gif("oil", strokes, 32, 32))) as gif:
        assert gif.n_frames == promised
