"""Neural renderer speed: strokes rendered per second (forward, and forward + backward) at
batch 64, with each renderer's FLOP count, against the exact engine run in the same process.

    python benchmarks/renderers.py [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from impasto.train.brushes import get_brush
from impasto.train.models.renderer import ARCHITECTURES, RendererConfig, build_renderer


def rate(fn, n: int, repeats: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--brush", default="oil")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    brush = get_brush(args.brush)
    params = torch.rand(args.batch, brush.n_params, generator=torch.Generator().manual_seed(0))
    print(f"brush {args.brush}, batch {args.batch}, 128 x 128, torch threads {torch.get_num_threads()}")
    print("| renderer | MFLOP / render | forward renders/s | forward+backward renders/s | GFLOP/s (forward) |")
    print("|---|---:|---:|---:|---:|")

    def exact_fwd():
        brush.render(params, 128, validate=False)

    p = params.clone().requires_grad_(True)

    def exact_bwd():
        fg, a = brush.render(p, 128, validate=False)
        (fg.sum() + a.sum()).backward()

    print(f"| exact engine (torch) | - | {rate(exact_fwd, args.batch):,.0f} | {rate(exact_bwd, args.batch):,.0f} | - |")
    for arch in ARCHITECTURES:
        model = build_renderer(RendererConfig(args.brush, arch)).eval()
        with FlopCounterMode(display=False) as fc:
            model(params[:1])
        mflop = fc.get_total_flops() / 1e6

        def fwd():
            with torch.no_grad():
                model(params)

        def bwd():
            fg, a = model(p)
            (fg.sum() + a.sum()).backward()

        f = rate(fwd, args.batch)
        print(f"| {arch} | {mflop:.0f} | {f:,.0f} | {rate(bwd, args.batch):,.0f} | {f * mflop / 1e3:.0f} |", flush=True)


if __name__ == "__main__":
    main()
