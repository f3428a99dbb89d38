"""The brush engine and stroke files on the command line: ``demo``, ``brushes``, ``render``.

These work on strokes rather than running an op: ``brushes`` lists each brush's parameter
layout and its shipped neural renderer, ``demo`` draws example strokes with both, and
``render`` re-renders a stroke file written by ``impasto paint --json/--npz`` at any size.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import TYPE_CHECKING

from impasto.runtime.cli.outputs import IMAGE_SUFFIXES, check_folder

if TYPE_CHECKING:
    import torch

log = logging.getLogger("impasto")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``impasto render``, ``impasto demo`` and ``impasto brushes``."""
    re_ = sub.add_parser(
        "render",
        help="render a saved stroke file (JSON or npz) at any size",
        description="Re-renders strokes written by `impasto paint --json/--npz` with the exact engine, "
        "e.g. a 4096 px print from a 512 px painting. The aspect ratio of the painting is kept.",
    )
    re_.add_argument("strokes", help="stroke file (.json or .npz)")
    re_.add_argument("-o", "--output", required=True, help="image to write (.png, .jpg)")
    re_.add_argument("--size", type=int, default=None, help="longer side in px (default: the painting's own size)")
    re_.add_argument("--canvas", default=None, help="override the background: black, white, #rrggbb or an image file")
    re_.add_argument("--json", action="store_true", help="print what was written as JSON")
    re_.set_defaults(func=cmd_render)

    d = sub.add_parser(
        "demo",
        help="render example strokes of every brush with the exact engine and the shipped neural renderers",
        description="Writes a PNG: one row per brush, the exact engine on the left, the shipped neural "
        "renderer on the right, so you can see what the painter draws with.",
    )
    d.add_argument("-o", "--output", required=True, help="PNG to write")
    d.add_argument("--strokes", type=int, default=12, help="strokes per brush (default 12)")
    d.add_argument("--seed", type=int, default=0, help="seed for the example strokes")
    d.add_argument("--json", action="store_true", help="print what was written as JSON")
    d.set_defaults(func=cmd_demo)

    b = sub.add_parser(
        "brushes",
        help="list the brushes, their stroke parameters and their shipped renderers",
        description="Each brush's parameter layout (all in [0, 1]) and the held-out PSNR of its shipped renderer.",
    )
    b.add_argument("--json", action="store_true", help="machine-readable output")
    b.set_defaults(func=cmd_brushes)


def check_image_output(path: str, flag: str = "-o") -> None:
    """Refuse, before any work, an image output that cannot be written: a folder, an unknown
    suffix, a missing or read-only folder (a render can take minutes; it must not fail at the end)."""
    import os
    from pathlib import Path

    from impasto.runtime.cli import UsageError

    if Path(path).is_dir():
        raise UsageError(f"{flag} '{path}' is a folder: give a file name ending with {' or '.join(IMAGE_SUFFIXES)}")
    if not path.lower().endswith(IMAGE_SUFFIXES):
        raise UsageError(f"{flag} '{path}' must end with {' or '.join(IMAGE_SUFFIXES)}")
    check_folder(path)
    folder = Path(path).resolve().parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} '{path}': the folder {folder} is not writable")


def _print_written(result: dict, as_json: bool) -> None:
    print(json.dumps(result, indent=1) if as_json else f"wrote {result['output']}")


def cmd_demo(args: argparse.Namespace) -> int:
    """One row per brush: the exact engine's strokes beside the shipped neural renderer's."""
    import torch
    from impasto.runtime.cli import UsageError
    from impasto.runtime.images import save_image
    from impasto.train.brushes import BRUSHES, get_brush, render_strokes
    from impasto.train.brushes.examples import example_strokes
    from impasto.train.models.renderer import SIZE
    from impasto.train.models.weights_io import load_shipped_renderer

    if args.strokes < 1:
        raise UsageError(f"--strokes must be at least 1, got {args.strokes}")
    check_image_output(args.output)
    rows, missing = [], []
    for name in BRUSHES:
        params = example_strokes(name, args.strokes, args.seed)
        exact = render_strokes(get_brush(name), params, SIZE)
        try:
            model = load_shipped_renderer(name)
        except FileNotFoundError:
            missing.append(name)
            neural = torch.full_like(exact, 0.5)
        else:
            with torch.no_grad():
                fg, alpha = model(params)
            neural = torch.ones(3, SIZE, SIZE)
            for f, a in zip(fg, alpha):
                neural = f * a + neural * (1 - a)
        rows.append(torch.cat([exact, torch.ones(3, SIZE, 4), neural], dim=2))
    grid = torch.cat([torch.cat([r, torch.ones(3, 4, r.shape[2])], dim=1) for r in rows], dim=1)
    save_image(grid, args.output)
    if missing:
        log.warning("no shipped renderer for %s: those tiles are grey", ", ".join(missing))
    _print_written({"output": args.output, "brushes": list(BRUSHES), "missing_renderers": missing}, args.json)
    return 0


def parse_canvas(value: str, max_side: int) -> tuple[float, float, float] | torch.Tensor:
    """black | white | #rrggbb -> an RGB tuple; anything else is an image file -> a (3, H, W) tensor."""
    from impasto.runtime.cli import UsageError
    from impasto.runtime.ops.paint_op import NAMED_COLOURS, PaintRequestError, parse_colour

    if value in NAMED_COLOURS or value.startswith("#"):
        try:
            return parse_colour(value, "--canvas")
        except PaintRequestError as e:
            raise UsageError(f"{e} or an image file") from None
    from impasto.runtime.images import load_image

    return load_image(value, max_side=max_side, what="canvas image")


def cmd_render(args: argparse.Namespace) -> int:
    """A stroke file re-rendered by the exact engine, at its own size or ``--size``."""
    from impasto.runtime.cli import UsageError
    from impasto.runtime.config import load_settings
    from impasto.runtime.formats.strokes import load_strokes
    from impasto.runtime.images import resize, save_image
    from impasto.runtime.ops.paint_op import output_size
    from impasto.train.brushes import get_brush, render_strokes

    settings = load_settings()
    check_image_output(args.output)
    sf = load_strokes(args.strokes)
    longer = args.size or max(sf.width, sf.height)
    if not 1 <= longer <= settings.max_side:
        raise UsageError(f"--size must be between 1 and {settings.max_side}, got {longer}")
    h, w = output_size(sf.height, sf.width, longer)
    background = sf.background
    if args.canvas is not None:
        background = parse_canvas(args.canvas, settings.max_side)
        if not isinstance(background, tuple):
            background = resize(background, h, w)
    canvas = render_strokes(get_brush(sf.brush), sf.strokes, h, w, background)
    save_image(canvas, args.output)
    _print_written({"output": args.output, "size": [w, h], "strokes": int(sf.strokes.shape[0])}, args.json)
    return 0


def cmd_brushes(args: argparse.Namespace) -> int:
    """Each brush's parameter layout and its shipped renderer's held-out PSNR."""
    from impasto.train.brushes import BRUSHES
    from impasto.train.models.weights_io import read_metadata, shipped_renderer_path

    out = {}
    for name, brush in BRUSHES.items():
        path = shipped_renderer_path(name)
        metrics = read_metadata(path).get("metrics", {}) if path.is_file() else None
        out[name] = {
            "fields": list(brush.schema.fields),
            "shape_fields": list(brush.schema.shape_fields),
            "description": brush.schema.description,
            "renderer": metrics,
        }
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    for name, info in out.items():
        m = info["renderer"]
        psnr = f"renderer {0.5 * (m['psnr_fg'] + m['psnr_alpha']):.1f} dB" if m else "no shipped renderer"
        print(f"{name:11s} {len(info['fields']):2d} params: {' '.join(info['fields'])}  ({psnr})")
        print(f"{'':11s} {info['description']}")
    return 0
