"""Brush engine throughput: strokes per second at 128 x 128, per brush.

The engine is the renderers' training-data generator, so what counts is a call of a
training batch (64 strokes, rendered 8 at a time inside: larger passes fall out of cache).
The baseline, run in the same process, is the same engine one stroke per call (how a
cv2-style reference renderer works); the ratio is the gain from batching.

    python benchmarks/brushes.py [--size 128] [--strokes 1024] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from impasto.train.brushes import BRUSHES


def strokes_per_second(brush, params: torch.Tensor, size: int, per_call: int) -> float:
    """Render ``params`` in calls of ``per_call`` strokes (a training batch, or 1)."""
    def once():
        for i in range(0, params.shape[0], per_call):
            brush.render(params[i : i + per_call], size, validate=False)

    once()  # warm-up
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        once()
        best = min(best, time.perf_counter() - t)
    return params.shape[0] / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--strokes", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.size}x{args.size}, {args.strokes} uniform random strokes")
    print("| brush | 64 per call, strokes/s | one per call, strokes/s | ratio |")
    print("|---|---:|---:|---:|")
    for name, brush in BRUSHES.items():
        params = torch.rand(args.strokes, brush.n_params, generator=g)
        batched = strokes_per_second(brush, params, args.size, 64)
        single = strokes_per_second(brush, params[: max(64, args.strokes // 8)], args.size, 1)
        print(f"| {name} | {batched:,.0f} | {single:,.0f} | {batched / single:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
