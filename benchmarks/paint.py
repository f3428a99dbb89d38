"""Painter quality and speed: the reference workload on sample photos.

Progressive search, 5 levels, 500 strokes (495 placed), 512 x 512 output, oil brush, the
animation frames rendered. Prints wall time, stroke renders (each forward + backward), PSNR
and SSIM against the input, and writes the paintings side by side.

    python benchmarks/paint.py --renderer exact --patch 64 --iterations 20
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

from impasto.runtime.formats.animation import painting_frames
from impasto.runtime.images import load_example, save_image
from impasto.runtime.ops.paint import PaintOptions, paint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default="astronaut,coffee,chelsea")
    ap.add_argument("--brush", default="oil")
    ap.add_argument("--strokes", type=int, default=500)
    ap.add_argument("--levels", type=int, default=5)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--renderer", default="exact")
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--ot", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--picture", default=None, help="write the paintings side by side (256 px each) to this PNG")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    opts = PaintOptions(brush=args.brush, strokes=args.strokes, levels=args.levels, iterations=args.iterations,
                        renderer=args.renderer, patch=args.patch, ot_weight=args.ot)
    print(f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; renderer {args.renderer} "
          f"patch {args.patch}, {opts.iterations_per_stroke} iterations/stroke, {args.levels} levels, "
          f"{args.strokes} strokes, {args.size} px, brush {args.brush}")
    print("| image | seconds | stroke renders | renders/s | PSNR dB | SSIM |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = []
    for name in args.images.split(","):
        img = load_example(name)
        img = F.interpolate(img.unsqueeze(0), size=(args.size, args.size), mode="bilinear", antialias=True)[0]
        t0 = time.perf_counter()
        result = paint(img, opts)
        painting_frames(args.brush, result.strokes, args.size, args.size, opts.background)  # the animation
        seconds = time.perf_counter() - t0
        mse = F.mse_loss(result.canvas, img).item()
        psnr = 10 * math.log10(1 / mse)
        ssim = structural_similarity(img.permute(1, 2, 0).numpy(), result.canvas.permute(1, 2, 0).numpy(),
                                     channel_axis=2, data_range=1.0)
        print(f"| {name} | {seconds:.1f} | {result.renders:,} | {result.renders / seconds:,.0f} | {psnr:.2f} | "
              f"{ssim:.3f} |", flush=True)
        rows.append(F.interpolate(result.canvas.unsqueeze(0), size=(256, 256), mode="area")[0])
    if args.picture:
        # the paintings only: the input photos are scikit-image's, not ours to commit
        pad = torch.ones(3, 256, 8)
        grid = torch.cat([t for r in rows for t in (r, pad)][:-1], dim=2)
        Path(args.picture).parent.mkdir(parents=True, exist_ok=True)
        save_image(grid, args.picture)
        print("wrote", args.picture)


if __name__ == "__main__":
    main()
