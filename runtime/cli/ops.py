"""``impasto OP``: one subcommand per registered op, generated from its definition.

For every op in :func:`impasto.runtime.ops.registry.list_ops` the parser gets:

- its required image slots as positionals, in declaration order (``IMAGE``, ``CONTENT STYLE``),
  its optional slots as ``--slot-name FILE``; a required slot that another can stand in for
  (``ImageSlot.unless``) is a positional that may be left out (``impasto warp --apply FLOW.npz IMAGE``);
- one flag per option (see :mod:`.flags`), values left raw for the op's own checks;
- ``-o/--output`` for the first output, and each other output's declared flags
  (``--json S.json``); an output made only on request is asked for when one of its flags is
  given.

:func:`add_op_arguments` and :func:`read_request` are shared with ``impasto client OP``
(:mod:`.remote`), so a request is read and checked the same way whether it runs here or on
a server. Here it runs in-process: sidecar ops with torch on ``--device``, engine ops
through a local ONNX Runtime / TensorRT backend of the model repository.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from impasto.runtime.cli import flags
from impasto.runtime.cli.outputs import Target, check_targets, primary_suffixes, series_note, write_items
from impasto.runtime.ops.registry import OpSpec, RunContext, get_op, list_ops
from impasto.runtime.ops.request import FileImage, Labels, OpRequest

IMAGE = "image:"  # argparse dest prefixes (see flags.OPTION)
OUTPUT = "output:"

log = logging.getLogger(__name__)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``impasto OP`` for every registered op."""
    for name in list_ops():
        spec = get_op(name)
        p = sub.add_parser(name, help=spec.help, description=spec.description, allow_abbrev=False)
        add_op_arguments(p, spec)
        p.add_argument("--device", default=None,
                       help="where to run: auto, cpu, cuda or cuda:N (default: settings, then auto)")
        if spec.runs_in == "engine":
            p.add_argument("--repo", default=None,
                           help=f"model repository with {', '.join(spec.models) or 'its models'} (default: settings)")
        p.add_argument("--report", action="store_true",
                       help="print a JSON summary (outputs written, numbers, seconds) instead of the progress bar")
        p.set_defaults(func=run_local, op=name)


def add_op_arguments(parser: argparse.ArgumentParser, spec: OpSpec) -> None:
    """The flags generated from ``spec``: images, options, outputs (shared by ``impasto client OP``).

    A flag that two parts of the definition both claim (an option named like an image slot,
    say) makes argparse raise here: a definition error shows when the parser is built.
    """
    for slot in spec.images:
        if slot.required and slot.unless is None:
            parser.add_argument(IMAGE + slot.name, metavar=slot.name.upper(), help=_escape(slot.help))
        elif slot.required:
            instead = spec.slot(slot.unless).cli_flag
            parser.add_argument(IMAGE + slot.name, metavar=slot.name.upper(), nargs="?", default=None,
                                help=_escape(f"{slot.help} (leave it out when {instead} is given)"))
    images = parser.add_argument_group("images")
    for slot in spec.images:
        if not slot.required:
            images.add_argument(slot.cli_flag, dest=IMAGE + slot.name, default=None, metavar="FILE",
                                help=_escape(slot.help))
    flags.add_option_flags(parser, spec.option_specs(), f"{spec.name} options")
    outputs = parser.add_argument_group("outputs")
    primary = spec.primary_output
    suffixes = primary_suffixes(primary)
    outputs.add_argument("-o", "--output", dest=OUTPUT + primary.name, required=True, metavar="FILE",
                         help=_escape(f"{primary.help} ({' or '.join(suffixes) or 'any file'}{series_note(primary)})"))
    for output in spec.outputs[1:]:
        for flag, allowed in output.flags:
            outputs.add_argument(flag, dest=f"{OUTPUT}{output.name}:{flag}", default=None, metavar=f"FILE{allowed[0]}",
                                 help=_escape(f"write {output.help} ({' or '.join(allowed)}{series_note(output)})"))


def _escape(text: str) -> str:
    return text.replace("%", "%%")


@dataclass
class CliRequest:
    """An op request read from the command line, the files it will write, and how to name its fields."""

    request: OpRequest
    targets: list[Target]
    labels: Labels
    image_labels: dict[str, str] = field(default_factory=dict)


def read_request(spec: OpSpec, args: argparse.Namespace) -> CliRequest:
    """The parsed flags as an :class:`OpRequest` of image files and raw option values.

    Nothing is checked here beyond what only the command line can get wrong (an image given
    twice); :func:`impasto.runtime.ops.request.prepare` checks the rest, with labels that
    spell each field as it was typed (``--lr``, ``--mask``, ``image``).
    """
    from impasto.runtime.cli import UsageError

    specs = spec.option_specs()
    images: dict[str, Any] = {}
    image_labels = {s.name: s.name if s.required else s.cli_flag for s in spec.images}
    for slot in spec.images:
        path = getattr(args, IMAGE + slot.name, None)
        if path is not None:
            images[slot.name] = FileImage(path)
    options = flags.given_values(specs, args)
    option_label = flags.flag_labels(specs)
    for o in specs:
        value = options.get(o.name)
        # or_image: `--canvas photo.png` fills the canvas_image slot instead of the option
        if o.or_image and isinstance(value, str) and Path(value).is_file():
            if o.or_image in images:
                raise UsageError(f"{option_label(o.name)} '{value}' and {image_labels[o.or_image]} both give "
                                 f"the {o.or_image.replace('_', ' ')}: give one")
            images[o.or_image] = FileImage(value)
            image_labels[o.or_image] = option_label(o.name)
            del options[o.name]
    targets, wanted = [], set()
    primary = spec.primary_output
    targets.append(Target(primary, "-o", getattr(args, OUTPUT + primary.name), primary_suffixes(primary)))
    for output in spec.outputs[1:]:
        for flag, allowed in output.flags:
            path = getattr(args, f"{OUTPUT}{output.name}:{flag}", None)
            if path is not None:
                targets.append(Target(output, flag, path, allowed))
                if output.on_request:
                    wanted.add(output.name)
    labels = Labels(option=option_label, image=lambda n: image_labels.get(n, n))
    return CliRequest(OpRequest(spec.name, images, options, wanted), targets, labels, image_labels)


def local_device(setting: str) -> str:
    """A device setting (auto, cpu, cuda, cuda:N) resolved to what torch will run on here."""
    from impasto.runtime.cli import UsageError

    from impasto.train.loops.common import resolve_device

    try:
        return str(resolve_device(setting))
    except ValueError as e:
        raise UsageError(f"--device: {e}") from None
    except RuntimeError:  # torch.device() refuses a name it does not know with a long list
        raise UsageError(f"--device '{setting}' is not a device: use auto, cpu, cuda or cuda:N") from None


class ProgressBar:
    """A run's progress on stderr, driven by the op's progress reports.

    On a terminal: a tqdm bar, made on the first report (a request refused up front leaves
    no empty bar behind), off with ``--report``. Anywhere else (a log file, a pipe, CI): one
    line every ``every`` seconds, also while no report arrives (weights loading, a style
    pass, the final render), so that a long run is never silent; ``every`` <= 0 turns the
    lines off. The first line comes after ``every`` seconds: a quick run prints none.
    """

    def __init__(self, desc: str, off: bool, every: float = 5.0, stream: TextIO | None = None):
        self.desc, self.off, self.bar = desc, off, None
        self.stream = stream if stream is not None else sys.stderr
        self.every = every
        self.state: tuple[int, int, int, int, float] | None = None
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._lines: threading.Thread | None = None
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        if not self.tty and every > 0:
            self._lines = threading.Thread(target=self._beat, name="impasto-progress", daemon=True)
            self._lines.start()

    def update(self, level: int, levels: int, step: int, total: int, loss: float) -> None:
        self.state = (int(level), int(levels), int(step), max(int(total), 1), float(loss))
        if not self.tty or self.off:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=max(int(total), 1), desc=self.desc, unit="step", file=self.stream)
        self.bar.total = max(int(total), 1)
        self.bar.set_postfix(stage=f"{level}/{levels}", loss=f"{loss:.4g}", refresh=False)
        self.bar.update(int(step) - self.bar.n)

    def line(self) -> str:
        """The progress line as it is now: stage, step, share done, loss, seconds so far.

        No time-left estimate: steps differ in cost by stage (a paint's level m batches m x m
        patches), so one from the steps done would promise a quarter of the real time."""
        elapsed = time.monotonic() - self.started
        if self.state is None:
            return f"impasto {self.desc}: starting ({elapsed:.0f} s)"
        level, levels, step, total, loss = self.state
        text = (f"impasto {self.desc}: stage {level}/{levels}, step {step}/{total} ({100 * step / total:.0f}%), "
                f"loss {loss:.4g}, {elapsed:.0f} s")
        if step >= total:
            text += ", finishing"
        return text

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            try:
                print(self.line(), file=self.stream, flush=True)
            except (OSError, ValueError):  # stderr closed: nowhere to report to
                return

    def close(self) -> None:
        self._stop.set()
        if self._lines is not None:
            self._lines.join(timeout=5)
        if self.bar is not None:
            self.bar.close()


def use_threads(setting: int) -> int:
    """Give torch the intra-op threads :func:`impasto.runtime.config.choose_threads` picks (the
    ``threads`` setting, else the CPUs free now) and one inter-op thread; returns the count."""
    import torch

    from impasto.runtime.config import available_cpus, choose_threads

    threads = choose_threads(setting)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # set already, or inter-op work already ran in this process
        pass
    log.info("torch threads: %d (%d CPUs available; threads setting %s)", threads, available_cpus(),
             setting or "automatic")
    return threads


def run_local(args: argparse.Namespace) -> int:
    """``impasto OP``: check every path and option, run the op here, write its outputs, say what was written."""
    from impasto.runtime.config import load_settings
    from impasto.runtime.ops.request import run_op, use_local_models

    spec = get_op(args.op)
    settings = load_settings({"device": args.device, "repo": getattr(args, "repo", None)})
    cli = read_request(spec, args)
    check_targets(cli.targets)
    ctx = RunContext(device=local_device(settings.device), max_side=settings.max_side,
                     vgg_weights=settings.vgg_weights or None)
    use_threads(settings.threads)
    if spec.runs_in == "engine":
        use_local_models(ctx, settings.repo, settings.backend)
    bar = ProgressBar(spec.name, off=args.report, every=settings.progress_seconds)
    ctx.progress = lambda level, levels, step, total, loss, preview: bar.update(level, levels, step, total, loss)
    try:
        outcome = run_op(spec, cli.request, ctx, cli.labels)
    finally:
        bar.close()
    written = write_all(cli.targets, outcome.values)
    print_summary(cli.targets, written, outcome.numbers, args.report)
    return 0


def write_all(targets: list[Target], values: dict[str, Any]) -> list[str]:
    """Every target written from the result ``values`` (each item of a series output); the paths in order."""
    return [path for t in targets for path in write_items(t, values)]


def summary(targets: list[Target], written: list[str], numbers: dict[str, float]) -> dict[str, Any]:
    """What ``--report`` prints: the main output, every file written, the op's numbers (and size)."""
    plain = {k: int(v) if float(v).is_integer() and k != "seconds" else v for k, v in numbers.items()}
    if "seconds" in plain:
        plain["seconds"] = round(float(plain["seconds"]), 2)
    report: dict[str, Any] = {"output": targets[0].path, "written": written, **plain}
    if "width" in plain and "height" in plain:
        report["size"] = [plain["width"], plain["height"]]
    return report


def print_summary(targets: list[Target], written: list[str], numbers: dict[str, float], as_json: bool) -> None:
    """``--report``: the JSON summary; otherwise ``wrote A, B (N strokes, S s)``."""
    if as_json:
        print(json.dumps(summary(targets, written, numbers), indent=1))
        return
    seconds = f"{numbers.get('seconds', 0.0):.0f} s"
    what = f"{int(numbers['strokes'])} strokes, {seconds}" if "strokes" in numbers else seconds
    print(f"wrote {', '.join(written)} ({what})")
