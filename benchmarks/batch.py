"""Batch throughput: items per minute against worker processes, and the cost of farm-style tasks.

A paint spec over N frames runs three ways, each from clean outputs, timed end to end
(process start, imports, model load and the work):

1. ``impasto batch SPEC --workers W`` for each W: items per minute;
2. farm style: one ``impasto batch SPEC --items i-i`` process per item, one after another
   (what a farm task of chunk size 1 costs on one machine);
3. the resident worker of (1) with W = 1: the farm's per-task overhead is
   (time of 2 - time of 3) / N.

    python benchmarks/batch.py [--items 8] [--strokes 100] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from impasto.runtime.images import load_image, resize, save_image


def make_spec(folder: Path, items: int, strokes: int, size: int) -> Path:
    (folder / "frames").mkdir(parents=True)
    image = resize(load_image("example:astronaut"), size, size)
    for i in range(items):
        save_image(torch.roll(image, shifts=4 * i, dims=2), folder / "frames" / f"f{i:03d}.png")
    spec = folder / "job.toml"
    spec.write_text(f'op = "paint"\ninputs = "frames/*.png"\noutput = "out/{{stem}}.png"\n'
                    f"[params]\nstrokes = {strokes}\nlevels = 3\nsize = {size}\n")
    return spec


def clean(folder: Path) -> None:
    shutil.rmtree(folder / "out", ignore_errors=True)
    shutil.rmtree(folder / ".impasto-batch", ignore_errors=True)


def batch(*args: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "impasto.runtime.cli", "batch", *args], check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=8)
    ap.add_argument("--strokes", type=int, default=100)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--workers", default="1,2")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        spec = str(make_spec(folder, args.items, args.strokes, args.size))
        print(f"{args.items} items: paint, {args.strokes} strokes, 3 levels, {args.size} px")
        print("| run | seconds | items/min |")
        print("|---|---:|---:|")
        resident = None
        for w in (int(x) for x in args.workers.split(",")):
            clean(folder)
            seconds = batch(spec, "--workers", str(w))
            resident = seconds if w == 1 else resident
            print(f"| --workers {w} | {seconds:.1f} | {60 * args.items / seconds:.1f} |", flush=True)
        clean(folder)
        farm = sum(batch(spec, "--items", f"{i}-{i}") for i in range(args.items))
        print(f"| one process per item (farm style) | {farm:.1f} | {60 * args.items / farm:.1f} |")
        if resident is not None:
            print(f"\nper-task overhead of a farm-style task (process start + imports + model load): "
                  f"{(farm - resident) / args.items:.2f} s")


if __name__ == "__main__":
    main()
