"""Painter cost against stroke count: the joint search (before issue 19) and the window search, side by side.

For each (strokes, levels, size) the same photos are painted in one process by

- ``old``: the reference's joint search rendering each stroke on the whole patch, exactly the
  search before issue 19 (``search="joint", crop=False``);
- ``joint``: the same search with strokes rendered inside their boxes (``crop``: the
  rasteriser's part of the speed-up, the same pixels);
- ``new``: the default, the window search with cached layers and steps shared by error;
- ``predict``: the stroke predictor, coarse to fine (``--predict``), then ``--refine N`` steps per
  stroke of the window search's sweep for each N of ``--refines`` (``predict+rN`` rows; N = 0: the
  predictor alone). The predictor is the shipped one, or ``--predictor FILE``; with neither, a
  randomly initialised one, which only measures the plumbing (its PSNR means nothing).

Prints a markdown table: stroke renders in the search, wall and CPU seconds (on one thread
the CPU time is what the wall would be on an idle core), seconds per 1000 strokes and PSNR
of the painting against its photo, each the mean over the photos (``--photos``: by default
five, four of Endless Sky's landscapes fetched by ``impasto data fetch`` and scikit-image's
astronaut; one photo's PSNR moves by 0.1-0.2 dB with any change that alters the last bit of
a step, the mean of five by up to 0.15 dB), with the machine load (``uptime``) before
each row. Use one thread on a shared machine; ``--threads 2`` on an idle one for the
two-core figures.

    python benchmarks/paint_scale.py --threads 1 --photos PATH.jpg,example:astronaut
    python benchmarks/paint_scale.py --configs 500,5,512 --searches old,new
    python benchmarks/paint_scale.py --configs "500,5,512;5000,7,1024" --searches new,predict --refines 0,5,10
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
from impasto.runtime.ops.paint_predict import Predictor, shipped_predictor, torch_predictor

SEARCHES = {
    "old": {"search": "joint", "crop": False},
    "joint": {"search": "joint"},
    "new": {"search": "window"},
}
DEFAULT_CONFIGS = "100,3,512;500,5,512;2000,6,512;5000,7,1024"
LAND = Path("/tmp/impasto-data/fetched/endless-sky/land")
FETCHED = [LAND / f"{name}@2x.jpg" for name in ("beach0", "city3", "forest2", "mountain5")]


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


def load_predictor(path: str | None, brush: str) -> tuple[Predictor, str]:
    """The predictor to measure and how to name it: ``path``, else the shipped one, else random weights."""
    from impasto.runtime.errors import FailedPrecondition
    from impasto.train.models.stroke_predictor import PredictorConfig, build_stroke_predictor

    if path:
        from impasto.train.models.weights_io import load_stroke_predictor

        return torch_predictor(load_stroke_predictor(path)[0]), path
    try:
        return shipped_predictor(brush), "shipped"
    except FailedPrecondition:
        torch.manual_seed(0)
        return torch_predictor(build_stroke_predictor(PredictorConfig(brush=brush))), "RANDOM weights (plumbing only)"


def warm_up(brush: str, predictor: Predictor | None) -> float:
    """Pay the once-per-process costs before timing (the brush textures, the first calls of the kernels);
    returns their seconds, which a fresh ``impasto paint`` process pays too."""
    start = time.perf_counter()
    tiny = torch.rand(3, 64, 64)
    paint(tiny, PaintOptions(brush=brush, strokes=10, levels=2, iterations=2))
    if predictor is not None:
        paint(tiny, PaintOptions(brush=brush, strokes=10, predict=True, refine=1), predictor=predictor)
    return time.perf_counter() - start


def runs(searches: str, refines: str, lr: float) -> list[tuple[str, dict]]:
    """(row name, PaintOptions fields) of each run of a configuration."""
    out = []
    for name in searches.split(","):
        if name == "predict":
            out += [(f"predict+r{n}", {"predict": True, "refine": int(n), "refine_lr": lr}) for n in refines.split(",")]
        else:
            out.append((name, SEARCHES[name]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", default=",".join([str(f) for f in FETCHED if f.exists()] + ["example:astronaut"]),
                    help="comma-separated pictures to paint (their centre squares); default four fetched landscapes "
                         "(those present) and astronaut")
    ap.add_argument("--configs", default=DEFAULT_CONFIGS, help="strokes,levels,size;... ")
    ap.add_argument("--searches", default="old,new", help=f"comma-separated, of {', '.join(SEARCHES)}, predict")
    ap.add_argument("--refines", default="0,5,10", help="predict: --refine values, one row each")
    ap.add_argument("--predictor", default=None, help="predict: a stroke predictor file (default: the shipped one)")
    ap.add_argument("--refine-lr", type=float, default=PaintOptions().refine_lr,
                    help="predict: the refinement's learning rate (PaintOptions.refine_lr)")
    ap.add_argument("--old-max-strokes", type=int, default=2000,
                    help="skip the old and joint searches above this many strokes (quadratic: 5000 take hours)")
    ap.add_argument("--brush", default="oil")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    configs = [tuple(int(v) for v in c.split(",")) for c in args.configs.split(";")]
    predictor, source = load_predictor(args.predictor, args.brush) if "predict" in args.searches else (None, "")
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} "
          f"thread(s); {args.brush} brush, patch {PaintOptions().patch} px, {args.iterations} iterations per stroke, "
          f"window {PaintOptions().window}; photos {args.photos}"
          + (f"; predictor: {source}, refinement lr {args.refine_lr}" if source else ""))
    print(f"once per process, not in the rows: {warm_up(args.brush, predictor):.1f} s (textures, first calls)")
    print()
    print("| strokes, levels, size | search | strokes placed | stroke renders | wall s | CPU s | s / 1000 strokes "
          "| PSNR dB | PSNR per photo | load |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|---:|")
    photos = args.photos.split(",")
    for strokes, levels, size in configs:
        targets = [square_photo(photo, size) for photo in photos]
        for name, fields in runs(args.searches, args.refines, args.refine_lr):
            if name in ("old", "joint") and strokes > args.old_max_strokes:
                print(f"| {strokes}, {levels}, {size} | {name} | — | — | skipped | — | — | — | — | — |", flush=True)
                continue
            opts = PaintOptions(brush=args.brush, strokes=strokes, levels=levels, iterations=args.iterations, **fields)
            before = load()
            placed, renders, walls, cpus, psnrs = 0, 0, [], [], []
            for target in targets:
                start, cpu = time.perf_counter(), time.process_time()
                result = paint(target, opts, predictor=predictor)
                walls.append(time.perf_counter() - start)
                cpus.append(time.process_time() - cpu)
                placed += result.strokes.shape[0]
                renders += result.renders
                psnrs.append(10 * math.log10(1 / F.mse_loss(result.canvas, target).item()))
            k = len(targets)
            print(f"| {strokes}, {levels}, {size} | {name} | {placed / k:,.0f} | {renders / k:,.0f} | {sum(walls) / k:.1f} | "
                  f"{sum(cpus) / k:.1f} | {1000 * sum(walls) / placed:.1f} | {sum(psnrs) / k:.2f} | "
                  f"{' '.join(f'{p:.2f}' for p in psnrs)} | {before} |", flush=True)


if __name__ == "__main__":
    main()
