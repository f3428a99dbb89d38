"""The ``impasto`` command line: one subcommand per job, ``impasto SUBCOMMAND --help`` for each."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

log = logging.getLogger("impasto")


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="impasto",
        description="Neural painting and texturing: photos, sketches and exemplars in, paintings and textures out.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

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
    d.set_defaults(func=_cmd_demo)

    b = sub.add_parser(
        "brushes",
        help="list the brushes, their stroke parameters and their shipped renderers",
        description="Each brush's parameter layout (all in [0, 1]) and the held-out PSNR of its shipped renderer.",
    )
    b.add_argument("--json", action="store_true", help="machine-readable output")
    b.set_defaults(func=_cmd_brushes)

    t = sub.add_parser("train", help="train models (renderer)", description="Train impasto's models.")
    tsub = t.add_subparsers(dest="model", metavar="MODEL", required=True)
    r = tsub.add_parser(
        "renderer",
        help="train a neural stroke renderer against the exact brush engine",
        description="Generates strokes on the fly with the brush engine, validates on a fixed held-out set "
        "(PSNR of foreground and alpha), saves a resumable checkpoint.pt and renderer_BRUSH.safetensors in --out. "
        "Re-running with the same --out resumes.",
    )
    r.add_argument("--brush", required=True, help="oil, marker, watercolor or tape")
    r.add_argument("--arch", default="dual", help="dual (default), dual-featuremap, dcgan, pixelshuffle or unet")
    r.add_argument("--steps", type=int, default=20_000, help="optimiser steps (default 20000)")
    r.add_argument("--batch", type=int, default=32, help="strokes per step (default 32)")
    r.add_argument("--lr", type=float, default=1e-3, help="peak learning rate, cosine-decayed (default 1e-3)")
    r.add_argument("--val-every", type=int, default=500, help="validate and checkpoint every N steps")
    r.add_argument("--val-size", type=int, default=512, help="held-out strokes (default 512)")
    r.add_argument("--seed", type=int, default=0, help="data seed")
    r.add_argument("--out", default=None, help="run folder (default runs/renderer-ARCH-BRUSH)")
    r.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: settings, then auto)")
    r.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    r.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    r.set_defaults(func=_cmd_train_renderer)
    return p


def _cmd_demo(args: argparse.Namespace) -> dict:
    import torch

    from impasto.runtime.images import save_image
    from impasto.train.brushes import BRUSHES, get_brush, render_strokes
    from impasto.train.brushes.examples import example_strokes
    from impasto.train.models.weights_io import load_shipped_renderer
    from impasto.train.models.renderer import SIZE

    if args.strokes < 1:
        raise UsageError(f"--strokes must be at least 1, got {args.strokes}")
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
    return {"output": args.output, "brushes": list(BRUSHES), "missing_renderers": missing}


def _cmd_brushes(args: argparse.Namespace) -> dict:
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
    if not args.json:
        for name, info in out.items():
            m = info["renderer"]
            psnr = f"renderer {0.5 * (m['psnr_fg'] + m['psnr_alpha']):.1f} dB" if m else "no shipped renderer"
            print(f"{name:11s} {len(info['fields']):2d} params: {' '.join(info['fields'])}  ({psnr})")
            print(f"{'':11s} {info['description']}")
        return {}
    return out


def _cmd_train_renderer(args: argparse.Namespace) -> dict:
    from impasto.runtime.config import load_settings
    from impasto.train.brushes import get_brush
    from impasto.train.loops.renderer import TrainConfig, train_renderer
    from impasto.train.models.renderer import ARCHITECTURES

    get_brush(args.brush)  # raises a clear error for an unknown brush
    if args.arch not in ARCHITECTURES:
        raise UsageError(f"--arch '{args.arch}' is unknown: choose one of {', '.join(ARCHITECTURES)}")
    for flag in ("steps", "batch", "val_every", "val_size"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    if not args.lr > 0:
        raise UsageError(f"--lr must be positive, got {args.lr}")
    settings = load_settings({"device": args.device, "threads": args.threads})
    cfg = TrainConfig(
        brush=args.brush,
        arch=args.arch,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        val_every=args.val_every,
        val_size=args.val_size,
        seed=args.seed,
        device=settings.device,
        threads=settings.threads or None,
        out=args.out or f"runs/renderer-{args.arch}-{args.brush}",
    )
    result = train_renderer(cfg, progress=not args.json)
    final = result.final
    return {
        "weights": str(result.weights),
        "steps": final.step,
        "psnr_fg": round(final.psnr_fg, 3),
        "psnr_alpha": round(final.psnr_alpha, 3),
        "psnr": round(final.psnr, 3),
    }


def _user_errors() -> tuple[type[BaseException], ...]:
    from impasto.runtime.config import ConfigError
    from impasto.train.brushes import StrokeParamError, UnknownBrushError

    return (UsageError, ConfigError, StrokeParamError, UnknownBrushError, FileNotFoundError)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        result = args.func(args)
    except _user_errors() as e:
        print(f"impasto: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("impasto: interrupted", file=sys.stderr)
        return 130
    if getattr(args, "json", False) and result:
        print(json.dumps(result, indent=1))
    elif result and "output" in result:
        print(f"wrote {result['output']}")
    elif result and "weights" in result:
        print(f"wrote {result['weights']} (held-out PSNR {result['psnr']:.2f} dB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
