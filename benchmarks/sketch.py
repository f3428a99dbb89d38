"""Sketch to image (SketchyGAN): inference latency, torch against ONNX Runtime, and training throughput.

A demo-size generator (``SketchConfig()`` defaults, from ``--weights`` or randomly initialised:
the timings do not depend on the weights) is exported into a temporary repository and timed in
one process:

1. latency at batch 1, 256² and 512²: torch eager (inference mode, the exported module) against
   the ONNX Runtime CPU backend on the same inputs; the ratio is ORT / torch (issue 16 asks
   for at most 0.8 at 256²);
2. training throughput of ``impasto train sketch``'s step (two generator outputs for the
   diversity loss, the discriminator update, VGG loss with random features) for the three
   generators of the ablation (mru, resnet, unet: equal parameters) at 64² and 128², batch 8.

The edge pipeline's throughput is ``benchmarks/sketchify.py``.

    python benchmarks/sketch.py [--threads 1] [--repeats 10] [--weights W.safetensors] [--skip-train]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from timing import median_seconds


def _sketch(side: int, seed: int = 0) -> np.ndarray:
    """A distance-field input of a few random strokes, ``side`` x ``side``."""
    from impasto.train.data.edges import distance_input

    rng = np.random.default_rng(seed)
    lines = np.zeros((side, side), bool)
    for _ in range(12):
        y0, x0, y1, x1 = rng.integers(0, side, 4)
        n = max(abs(y1 - y0), abs(x1 - x0)) + 1
        lines[np.linspace(y0, y1, n).astype(int), np.linspace(x0, x1, n).astype(int)] = True
    return distance_input(lines)


def _export(repo: Path, weights: str | None) -> Path:
    from impasto.export.pipeline import export_model
    from impasto.train.models.sketchygan import SketchConfig, build_generator
    from impasto.train.models.weights_io import save_sketch

    if weights is None:
        torch.manual_seed(0)
        config = SketchConfig()
        classes = [f"class{i}" for i in range(config.num_classes)]
        weights = save_sketch(repo.parent / "demo.safetensors", build_generator(config).eval(), config, classes)
    export_model("sketch_demo", repo, checkpoint=weights, seed=0)
    return Path(weights)


def latency(repo: Path, weights: Path, threads: int, repeats: int) -> None:
    from impasto.export.families.sketchygan import SketchExport
    from impasto.runtime.backends import load_backend
    from impasto.train.models.weights_io import load_sketch

    generator, config, _ = load_sketch(weights)
    module = SketchExport(generator).eval()
    backend = load_backend(repo, "sketch_demo", "onnxruntime", providers=["CPUExecutionProvider"], threads=threads)
    print("\n| size | torch eager ms | ONNX Runtime CPU ms | ORT / torch |\n|---|---:|---:|---:|")
    for side in (256, 512):
        sketch = torch.from_numpy(_sketch(side))[None, None]
        z = torch.randn(1, config.z_dim, generator=torch.Generator().manual_seed(0))
        label = torch.zeros(1, 1, dtype=torch.int32)
        feed = {"sketch": sketch.numpy(), "z": z.numpy(), "label": label.numpy()}
        with torch.inference_mode():
            t_torch = median_seconds(lambda: module(sketch, z, label), repeats)
        t_ort = median_seconds(lambda: backend.infer(feed), repeats)
        print(f"| {side}² | {t_torch * 1e3:.0f} | {t_ort * 1e3:.0f} | {t_ort / t_torch:.2f} |", flush=True)


def training(steps: int) -> None:
    from torch.utils.data import Dataset

    from impasto.train.loops.gan import train_gan
    from impasto.train.loops.sketch import SketchTask, SketchTrainConfig

    class Random(Dataset):
        def __init__(self, side: int):
            self.side, self.classes = side, [f"class{i}" for i in range(8)]
            self.sources = torch.arange(64) % 2

        def __len__(self) -> int:
            return 64

        def __getitem__(self, i: int):
            sketch = torch.from_numpy(_sketch(self.side, i))[None]
            return sketch, torch.rand(3, self.side, self.side) * 2 - 1, torch.tensor(i % 8), self.sources[i]

    print("\n| generator | size | batch | G+D steps/s | images/s |\n|---|---|---:|---:|---:|")
    for arch in ("mru", "resnet", "unet"):
        for side in (64, 128):
            batch = 8
            with tempfile.TemporaryDirectory() as out:
                cfg = SketchTrainConfig(steps=steps + 2, batch=batch, size=side, arch=arch, features="random", out=out,
                                        val_every=10**6, ckpt_every=10**6, log_every=10**6)
                data = Random(side)
                start = time.perf_counter()
                train_gan(SketchTask(cfg, data, data), cfg, progress=False)
                seconds = time.perf_counter() - start
            rate = (steps + 2) / seconds
            print(f"| {arch} | {side}² | {batch} | {rate:.2f} | {rate * batch:.1f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=0, help="torch and ONNX Runtime threads (default: all cores)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--weights", default=None, help="a sketch weights file (default: random demo-size weights)")
    ap.add_argument("--train-steps", type=int, default=6)
    ap.add_argument("--skip-train", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "models"
        weights = _export(repo, args.weights)
        latency(repo, weights, args.threads, args.repeats)
    if not args.skip_train:
        training(args.train_steps)


if __name__ == "__main__":
    main()
