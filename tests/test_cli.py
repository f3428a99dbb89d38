"""The ``impasto`` command line, run as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image


def impasto(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "impasto.runtime.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600,
        check=False,
    )


def test_help_explains_every_subcommand():
    out = impasto("--help")
    assert out.returncode == 0, out.stderr
    for cmd in ("paint", "texture", "stylize", "client", "demo", "brushes", "render", "train", "export", "build-engine",
                "infer", "serve", "batch", "models"):
        assert cmd in out.stdout


# the hand-written commands and the flags each must show in its --help
TOOLS = {
    "demo": ("-o", "--strokes", "--seed", "--json"),
    "brushes": ("--json",),
    "render": ("-o", "--size", "--canvas", "--json"),
    "export": ("--all", "--skip", "--repo", "--checkpoint", "--opset", "--no-fp16", "--allow-unsupported", "--model-version",
               "--seed", "--json"),
    "build-engine": ("--all", "--repo", "--precision", "--workspace", "--force", "--json"),
    "infer": ("--repo", "--input", "-o", "--backend", "--precision", "--json"),
    "serve": ("--host", "--port", "--http-port", "--repo", "--token", "--tls-cert", "--tls-key", "--insecure",
              "--sidecar", "--device", "--slots", "--max-jobs", "--result-ttl", "--backend", "--no-batching",
              "--max-message-mb"),
    "batch": ("--workers", "--ray", "--items", "--server", "--token", "--threads", "--device", "--count", "--json"),
    "models": ("--repo", "--json"),
}


def _op_flags(spec) -> list[str]:
    """Every flag the definition of ``spec`` implies, read from the definition itself."""
    found = [o.cli_flag() for o in spec.option_specs()]
    found += [o.shortcut[0] for o in spec.option_specs() if o.shortcut]
    found += [s.cli_flag for s in spec.images if not s.required]
    found += [s.name.upper() for s in spec.images if s.required]
    found += ["--output"] + [flag for out in spec.outputs[1:] for flag, _ in out.flags]
    return found


def _every_command():
    from impasto.runtime.ops.registry import get_op, list_ops
    from impasto.train.loops.registry import list_trainers
    from impasto.train.options import options_of

    for name in list_ops():
        flags = _op_flags(get_op(name))
        yield (name,), flags + ["--device", "--report", "--verbose"]
        yield ("client", name), flags + ["--server", "--token", "--tls-ca", "--report"]
    for trainer in list_trainers():
        yield ("train", trainer.name), [o.cli_flag() for o in options_of(trainer.config)] + ["--json"]
    for name, flags in TOOLS.items():
        yield (name,), list(flags) + ["--verbose"]


def test_every_subcommand_has_help_that_shows_its_flags(capsys, monkeypatch):
    from impasto.runtime.cli import main

    monkeypatch.setenv("COLUMNS", "200")  # no wrapping inside the usage line
    commands = list(_every_command())
    assert len(commands) >= 2 * 3 + 1 + len(TOOLS)
    for command, flags in commands:
        with pytest.raises(SystemExit) as exit:
            main([*command, "--help"])
        assert exit.value.code == 0, command
        out = capsys.readouterr().out
        for flag in flags:
            assert flag in out, (command, flag)
    with pytest.raises(SystemExit) as exit:  # the train group lists every family
        main(["train", "--help"])
    assert exit.value.code == 0 and "renderer" in capsys.readouterr().out


def _subparser(parser, *path):
    for name in path:
        action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        parser = action.choices[name]
    return parser


def _default_text(spec) -> str:
    if spec.type is bool:
        return "on" if spec.default else "off"
    return f"{spec.default:g}" if spec.type is float else str(spec.default)


def _check_option_actions(parser, specs, where):
    by_flag = {flag: a for a in parser._actions for flag in a.option_strings}
    for spec in specs:
        action = by_flag.get(spec.cli_flag())
        assert action is not None, (where, spec.name)
        # no argparse checks of its own: read_options checks, as the server does
        assert action.default is None and action.type is None and action.choices is None, (where, spec.name)
        if spec.default != "":  # an empty default ("derived from the others") is the help text's to explain
            assert f"default: {_default_text(spec)}" in action.help.replace("%%", "%"), (where, spec.name, action.help)
        shown = f"{action.metavar} {action.help}"
        for choice in spec.choice_list:
            assert choice in shown, (where, spec.name, choice)
        if spec.type is bool:
            assert action.nargs == 0 and action.const is (not spec.default), (where, spec.name)
        if spec.shortcut:
            short = by_flag[spec.shortcut[0]]
            assert short.const == spec.shortcut[1] and short.default is None, (where, spec.name)


def test_generated_flags_agree_with_each_op_definition():
    from impasto.runtime.cli import build_parser
    from impasto.runtime.ops.registry import get_op, list_ops

    parser = build_parser()
    assert list_ops(), "no ops registered"
    for name in list_ops():
        spec = get_op(name)
        for path in ((name,), ("client", name)):
            sub = _subparser(parser, *path)
            _check_option_actions(sub, spec.option_specs(), path)
            positionals = [a.metavar for a in sub._actions if not a.option_strings]
            assert positionals == [s.name.upper() for s in spec.images if s.required], path
            by_flag = {flag: a for a in sub._actions for flag in a.option_strings}
            for slot in spec.images:
                if not slot.required:
                    assert slot.cli_flag in by_flag and by_flag[slot.cli_flag].default is None, (path, slot.name)
            assert by_flag["-o"].required and by_flag["-o"] is by_flag["--output"], path
            for output in spec.outputs[1:]:
                for flag, suffixes in output.flags:
                    assert flag in by_flag and all(s in by_flag[flag].help for s in suffixes), (path, flag)


def test_generated_flags_agree_with_each_trainer_config():
    from impasto.runtime.cli import build_parser
    from impasto.train.loops.registry import list_trainers
    from impasto.train.options import options_of

    parser = build_parser()
    for trainer in list_trainers():
        _check_option_actions(_subparser(parser, "train", trainer.name), options_of(trainer.config), trainer.name)


def test_brushes_json_lists_layouts_and_shipped_renderers():
    res = impasto("brushes", "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["tape"]["fields"] == ["xc", "yc", "w", "h", "theta", "R", "G", "B", "A"]
    assert info["oil"]["shape_fields"] == ["xc", "yc", "w", "h", "theta"]
    for b in info:
        metrics = info[b]["renderer"]
        assert (metrics["psnr_fg"] + metrics["psnr_alpha"]) / 2 >= 25, b


def test_demo_writes_engine_and_renderer_side_by_side(tmp_path):
    out = tmp_path / "demo.png"
    res = impasto("demo", "-o", str(out), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["missing_renderers"] == []
    img = np.asarray(Image.open(out).convert("RGB")).astype(float) / 255
    assert img.shape == (4 * 132, 2 * 128 + 4, 3)
    # each row: both tiles hold strokes, and the neural tile is far closer to the engine's
    # than an empty canvas is (measured: 0.03-0.07 mean error against 0.17-0.28)
    for row in range(4):
        exact = img[row * 132 : row * 132 + 128, :128]
        neural = img[row * 132 : row * 132 + 128, 132:]
        assert (exact < 0.95).mean() > 0.05
        assert np.abs(exact - neural).mean() < 0.4 * np.abs(exact - 1.0).mean()


@pytest.mark.parametrize(
    "args,message",
    [
        (("train", "renderer", "--brush", "crayon"), "--brush 'crayon' is not one of oil, marker"),
        (("train", "renderer", "--brush", "oil", "--arch", "vae"), "--arch 'vae' is not one of dual"),
        (("train", "renderer", "--brush", "oil", "--steps", "0"), "--steps must be at least 1"),
        (("demo", "-o", "x.png", "--strokes", "0"), "--strokes must be at least 1"),
        (("demo", "-o", "no/such/folder/x.png"), "output folder does not exist"),
        # the op commands: the op's own checks, worded with the flag the user typed
        (("paint", "example:coffee", "-o", "x.png", "--lr", "1e30"), "--lr must be between 1e-06 and 1, got 1e+30"),
        (("paint", "example:coffee", "-o", "x.png", "--lr", "inf"), "--lr must be a finite number"),
        (("paint", "example:coffee", "-o", "x.png", "--style-weight", "nan"), "--style-weight must be a finite number"),
        (("paint", "example:coffee", "-o", "x.png", "--brush", "crayon"), "--brush 'crayon' is not one of"),
        (("paint", "example:coffee", "-o", "x.png", "--strokes", "ten"), "--strokes must be a whole number"),
        (("paint", "example:coffee", "-o", "x.txt"), "-o 'x.txt' must end with .png or .jpg or .jpeg"),
        (("paint", "example:coffee", "-o", "x.png", "--json", "x.png"), "--json 'x.png' must end with .json"),
        (("paint", "example:coffee", "-o", "no/such/folder/x.png"), "output folder does not exist"),
        (("paint", "example:coffee", "-o", "x.png", "--device", "gpu"), "--device 'gpu' is not a device"),
        (("texture", "example:coffee", "-o", "x.png", "--iterations", "0"), "--iterations must be between 1 and"),
        (("stylize", "example:coffee", "example:nope", "-o", "x.png"), "unknown example image 'nope'"),
        # the client checks the same way before it connects (no server runs here)
        (("client", "paint", "example:coffee", "-o", "x.png", "--strokes", "-5"), "--strokes must be between 1"),
        (("client", "paint", "example:coffee", "-o", "x.png", "--size", "-1"), "--size must be between 1"),
        (("client", "texture", "example:coffee", "-o", "x.png", "--width", "big"), "--width must be a whole number"),
        (("client", "texture", "example:coffee", "-o", "x.png", "--server", "127.0.0.1:1"), "server 127.0.0.1:1"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, message, tmp_path):
    res = impasto(*args, cwd=tmp_path)
    assert res.returncode == 2
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # nothing written half-way


def test_settings_come_from_flags_then_environment_then_toml(tmp_path, monkeypatch):
    from impasto.runtime.config import ConfigError, load_settings

    cfg = tmp_path / "impasto.toml"
    cfg.write_text('device = "cpu"\nthreads = 3\n')
    monkeypatch.setenv("IMPASTO_CONFIG", str(cfg))
    assert load_settings().device == "cpu" and load_settings().threads == 3
    monkeypatch.setenv("IMPASTO_THREADS", "5")
    assert load_settings().threads == 5
    assert load_settings({"threads": 7, "device": None}).threads == 7
    cfg.write_text('colour = "red"\n')
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        load_settings()
    cfg.write_text('threads = "many"\n')
    monkeypatch.delenv("IMPASTO_THREADS")
    with pytest.raises(ConfigError, match="'threads' must be int"):
        load_settings()


def test_a_closed_stdout_ends_quietly():
    proc = subprocess.Popen([sys.executable, "-m", "impasto.runtime.cli", "brushes", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before anything is written, as with `| head`
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and stderr == ""


def test_verbose_is_accepted_after_the_subcommand():
    from impasto.runtime.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["brushes", "-v"]).verbose is True
    assert parser.parse_args(["-v", "brushes"]).verbose is True
    assert parser.parse_args(["brushes"]).verbose is False


def test_a_new_op_gets_its_command_from_its_definition(tmp_path, monkeypatch, capsys):
    """An engine op with every kind of output, an optional slot, a switch, a shortcut and an or_image option."""
    from dataclasses import dataclass

    import torch
    from impasto.runtime import backends
    from impasto.runtime.cli import main
    from impasto.runtime.ops import registry
    from impasto.runtime.ops.registry import ImageSlot, OpOutcome, OpSpec, Output
    from impasto.train.options import option

    @dataclass
    class FakeOptions:
        gain: float = option(1.0, "multiply the model's output", min=0.0, max=10.0, shortcut=("--double", 2.0, "gain 2"))
        clamp: bool = option(True, "clamp the result to [0, 1]")
        colour: str = option("grey", "a colour name, or an image file (the tint slot)", or_image="tint")

    seen = {}

    def run(ctx, images, options, wanted):
        seen.update(options=options, images=sorted(images), wanted=wanted)
        out = ctx.infer("fake_model", {"x": images["picture"].numpy()})["y"]
        return OpOutcome({"image": torch.from_numpy(out) * 0 + 0.5, "notes": "hello", "blob": b"\x00\x01"},
                         {"width": 8, "height": 8})

    spec = OpSpec(
        name="fake", help="a test op", description="A test op, declared once.", options=FakeOptions,
        images=(ImageSlot("picture", "the input"), ImageSlot("tint", "a tint image", required=False)),
        outputs=(Output("image", "image", "the result", "image.png"),
                 Output("notes", "text", "some notes", "notes.txt", "text/plain", flags=(("--notes", (".txt",)),)),
                 Output("blob", "file", "some bytes", "blob.bin", "application/octet-stream",
                        flags=(("--blob", (".bin",)),), on_request=True, place="file")),
        run=run, runs_in="engine", models=("fake_model",))
    registry._load()
    monkeypatch.setitem(registry._REGISTRY, "fake", spec)

    class Backend:
        def infer(self, arrays):
            return {"y": arrays["x"]}

    loaded = []
    monkeypatch.setattr(backends, "load_backend", lambda repo, model, backend=None: loaded.append((repo, model)) or Backend())
    Image.new("RGB", (8, 8), "red").save(tmp_path / "in.png")
    Image.new("RGB", (8, 8), "blue").save(tmp_path / "tint.png")
    code = main(["fake", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--notes", str(tmp_path / "n.txt"),
                 "--double", "--no-clamp", "--colour", str(tmp_path / "tint.png"), "--repo", str(tmp_path), "--report"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["written"] == [str(tmp_path / "out.png"), str(tmp_path / "n.txt")] and report["size"] == [8, 8]
    assert seen["options"].gain == 2.0 and seen["options"].clamp is False and seen["options"].colour == "grey"
    assert seen["images"] == ["picture", "tint"] and seen["wanted"] == set()  # --blob not given: not made
    assert loaded == [(str(tmp_path), "fake_model")]
    assert (tmp_path / "n.txt").read_text() == "hello" and Image.open(tmp_path / "out.png").size == (8, 8)
    # the option's own flag wins over its shortcut; an on-request output is made when its flag is given
    code = main(["fake", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--double", "--gain", "3",
                 "--blob", str(tmp_path / "b.bin")])
    assert code == 0 and seen["options"].gain == 3.0 and seen["wanted"] == {"blob"}
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert "wrote" in capsys.readouterr().out
    # a bad value is refused before the op runs, naming the flag
    seen.clear()
    assert main(["fake", str(tmp_path / "in.png"), "-o", str(tmp_path / "x.png"), "--gain", "11"]) == 2
    assert "--gain must be between 0 and 10, got 11" in capsys.readouterr().err and not seen
