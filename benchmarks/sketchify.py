"""Edge-pipeline throughput: HED and SketchyGAN's cleaning, timed apart, in images per second.

For each side (256², 512² by default) and torch thread count (1 and 2), scikit-image's
sample photos scaled to that side go through HED (:func:`impasto.train.models.hed.load_hed`,
the real weights: ``IMPASTO_HED_WEIGHTS`` or ``--weights``) and then through
:func:`impasto.train.data.edges.clean_edges` (numpy / scipy / scikit-image, one thread
whatever torch uses) and :func:`~impasto.train.data.edges.distance_input`. Each figure is the
median over ``--repeats`` runs after one warm-up, on one image at a time (batch 1, what a
dataset builder or the ``sketchify`` op does). Prints a markdown table.

    python benchmarks/sketchify.py --weights /path/to/hed --sides 256,512 --threads 1,2
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

import numpy as np
import torch
from PIL import Image
from skimage import data

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from impasto.train.data.edges import clean_edges, distance_input
from impasto.train.models.hed import load_hed
from timing import median_seconds

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def photos(side: int) -> list[torch.Tensor]:
    """The sample photos, each scaled (squashed) to side x side, as (1, 3, H, W) in [0, 1]."""
    out = []
    for name in PHOTOS:
        picture = Image.fromarray(getattr(data, name)()).convert("RGB").resize((side, side), Image.BICUBIC)
        out.append(torch.from_numpy(np.array(picture)).permute(2, 0, 1)[None].float() / 255)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="HED weights (default: IMPASTO_HED_WEIGHTS, then the cache)")
    parser.add_argument("--sides", default="256,512")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    hed = load_hed(args.weights)
    rows = []
    for side in (int(s) for s in args.sides.split(",")):
        images = photos(side)
        with torch.no_grad():
            probs = [hed(x)[0, 0].numpy() for x in images]
        clean = median_seconds(lambda probs=probs: [distance_input(clean_edges(p)) for p in probs], args.repeats,
                               warmup=1) / len(probs)
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            with torch.no_grad():
                seconds = median_seconds(lambda images=images: [hed(x) for x in images], args.repeats,
                                         warmup=1) / len(images)
            rows.append((side, threads, seconds, clean))
    print(f"\nHED + cleaning on {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, batch 1, median of {args.repeats} over {len(PHOTOS)} photos\n")
    print("| side | torch threads | HED ms | HED img/s | cleaning + distance ms | cleaning img/s | total img/s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for side, threads, hed_s, clean_s in rows:
        print(f"| {side}² | {threads} | {hed_s * 1e3:.0f} | {1 / hed_s:.2f} | {clean_s * 1e3:.1f} | {1 / clean_s:.1f} "
              f"| {1 / (hed_s + clean_s):.2f} |")


if __name__ == "__main__":
    main()
