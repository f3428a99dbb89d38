"""Painter cost against stroke count: the joint search (before issue 19) and the window search, side by side.

For each (strokes, levels, size) the same photo is painted in one process by

- ``old``: the reference's joint search rendering each stroke on the whole patch, exactly the
  search before issue 19 (``search="joint", crop=False``);
- ``joint``: the same search with strokes rendered inside their boxes (``crop``: the
  rasteriser's part of the speed-up, the same pixels);
- ``new``: the default, the window search with cached layers and steps shared by error.

Prints a markdown table: stroke renders in the search, wall seconds, seconds per 1000
strokes and PSNR of the painting against the photo, with the machine load (``uptime``)
before each run. Use one thread on a shared machine.

    python benchmarks/paint_scale.py --threads 1 --photo PATH.jpg
    python benchmarks/paint_scale.py --configs 500,5,512 --searches old,new
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from impasto.runtime.images import load_image, resize
from impasto.runtime.ops.paint import PaintOptions, paint

SEARCHES = {
    "old": {"search": "joint", "crop": False},
    "joint": {"search": "joint"},
    "new": {"search": "window"},
}
DEFAULT_CONFIGS = "100,3,512;500,5,512;2000,6,512;5000,7,1024"
FETCHED = Path("/tmp/impasto-data/fetched/endless-sky/land/beach0@2x.jpg")


def square_photo(path: str, size: int) -> torch.Tensor:
    """The centre square of a picture, resized to size x size."""
    img = load_image(path)
    h, w = img.shape[1:]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    return resize(img[:, y0 : y0 + side, x0 : x0 + side].contiguous(), size, size)


def load() -> str:
    """The one-minute load average, as ``uptime`` shows it."""
    return f"{os.getloadavg()[0]:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photo", default=str(FETCHED) if FETCHED.exists() else "example:astronaut",
                    help="picture to paint (its centre square); default a fetched photo if present, else astronaut")
    ap.add_argument("--configs", default=DEFAULT_CONFIGS, help="strokes,levels,size;... ")
    ap.add_argument("--searches", default="old,new", help=f"comma-separated, of {', '.join(SEARCHES)}")
    ap.add_argument("--old-max-strokes", type=int, default=2000,
                    help="skip the old and joint searches above this many strokes (quadratic: 5000 take hours)")
    ap.add_argument("--brush", default="oil")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    configs = [tuple(int(v) for v in c.split(",")) for c in args.configs.split(";")]
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} "
          f"thread(s); {args.brush} brush, patch {PaintOptions().patch} px, {args.iterations} iterations per stroke, "
          f"window {PaintOptions().window}; photo {args.photo}")
    print()
    print("| strokes, levels, size | search | strokes placed | stroke renders | wall s | s / 1000 strokes | PSNR dB "
          "| load |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for strokes, levels, size in configs:
        target = square_photo(args.photo, size)
        for name in args.searches.split(","):
            if name != "new" and strokes > args.old_max_strokes:
                print(f"| {strokes}, {levels}, {size} | {name} | — | — | skipped | — | — | — |", flush=True)
                continue
            opts = PaintOptions(brush=args.brush, strokes=strokes, levels=levels, iterations=args.iterations,
                                **SEARCHES[name])
            before = load()
            start = time.perf_counter()
            result = paint(target, opts)
            seconds = time.perf_counter() - start
            placed = result.strokes.shape[0]
            psnr = 10 * math.log10(1 / F.mse_loss(result.canvas, target).item())
            print(f"| {strokes}, {levels}, {size} | {name} | {placed:,} | {result.renders:,} | {seconds:.1f} | "
                  f"{1000 * seconds / placed:.1f} | {psnr:.2f} | {before} |", flush=True)


if __name__ == "__main__":
    main()
