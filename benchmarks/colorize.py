"""Line-art colourisation (style2paints v1): inference latency, torch against ONNX Runtime, and training throughput.

A demo-size colouriser (``ColorizeConfig()`` defaults, from ``--weights`` or randomly
initialised: the timings do not depend on the weights) is exported into a temporary repository
and timed in one process:

1. generator latency at batch 1, 256² and 512² (issue 17 asks for 512²): torch eager
   (inference mode, the exported module: no guide decoders) against the ONNX Runtime CPU
   backend on the same inputs; the ratio is ORT / torch (the issue asks for at most 0.8);
2. the style encoder (VGG-19 + dense head, ``--features``) once per reference, torch against ORT;
3. training throughput of ``impasto train colorize``'s step (generator with guides, AC
   discriminator, VGG descriptors of references and real pictures) at 64² and 128², batch 8.

    python benchmarks/colorize.py [--threads 1] [--repeats 10] [--weights W.safetensors] [--skip-train]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from timing import median_seconds


def _inputs(side: int, style_dim: int) -> dict[str, np.ndarray]:
    """Line art of a few random strokes, three hint dots and a unit style vector."""
    rng = np.random.default_rng(0)
    ink = np.zeros((1, 1, side, side), np.float32)
    for _ in range(12):
        y0, x0, y1, x1 = rng.integers(0, side, 4)
        n = max(abs(y1 - y0), abs(x1 - x0)) + 1
        ink[0, 0, np.linspace(y0, y1, n).astype(int), np.linspace(x0, x1, n).astype(int)] = 1.0
    hints = np.zeros((1, 4, side, side), np.float32)
    for y, x in rng.integers(4, side - 4, (3, 2)):
        hints[0, :3, y - 2:y + 3, x - 2:x + 3] = rng.random((3, 1, 1))
        hints[0, 3, y - 2:y + 3, x - 2:x + 3] = 1.0
    style = rng.standard_normal((1, style_dim)).astype(np.float32)
    return {"ink": ink, "hints": hints, "style": style / np.linalg.norm(style)}


def _export(repo: Path, weights: str | None, features: str) -> Path:
    from impasto.export.pipeline import export_model
    from impasto.train.models.colorizer import ColorizeConfig, build_generator, build_style_encoder
    from impasto.train.models.weights_io import save_colorize

    if weights is None:
        torch.manual_seed(0)
        config = ColorizeConfig()
        weights = save_colorize(repo.parent / "demo.safetensors", build_generator(config).eval(),
                                build_style_encoder(config, features="random").head, config, data="random weights")
    export_model("colorize_demo", repo, checkpoint=weights, seed=0)
    if features == "vgg19":
        export_model("colorize_demo_style", repo, checkpoint=weights, seed=0)
    return Path(weights)


def latency(repo: Path, weights: Path, threads: int, repeats: int, features: str) -> None:
    from impasto.export.families.colorizer import ColorizeExport
    from impasto.runtime.backends import load_backend
    from impasto.train.models.colorizer import build_style_encoder
    from impasto.train.models.weights_io import load_colorize

    generator, head, config = load_colorize(weights)
    module = ColorizeExport(generator).eval()
    backend = load_backend(repo, "colorize_demo", "onnxruntime", providers=["CPUExecutionProvider"], threads=threads)
    print("\n| model | size | torch eager ms | ONNX Runtime CPU ms | ORT / torch |\n|---|---|---:|---:|---:|")
    for side in (256, 512):
        feed = _inputs(side, config.style_dim)
        args = [torch.from_numpy(feed[k]) for k in ("ink", "hints", "style")]
        with torch.inference_mode():
            t_torch = median_seconds(lambda: module(*args), repeats)
        t_ort = median_seconds(lambda: backend.infer(feed), repeats)
        print(f"| generator | {side}² | {t_torch * 1e3:.0f} | {t_ort * 1e3:.0f} | {t_ort / t_torch:.2f} |", flush=True)
    if features != "vgg19":
        return
    encoder = build_style_encoder(config, features="vgg19").eval()
    encoder.head.load_state_dict(head)
    style = load_backend(repo, "colorize_demo_style", "onnxruntime", providers=["CPUExecutionProvider"],
                         threads=threads)
    side = config.style_side
    reference = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        t_torch = median_seconds(lambda: encoder(reference), repeats)
    t_ort = median_seconds(lambda: style.infer({"reference": reference.numpy()}), repeats)
    print(f"| style encoder (VGG-19 + head) | {side}² | {t_torch * 1e3:.0f} | {t_ort * 1e3:.0f} | "
          f"{t_ort / t_torch:.2f} |", flush=True)


def training(steps: int, features: str) -> None:
    from torch.utils.data import Dataset

    from impasto.train.loops.colorize import ColorizeTask, ColorizeTrainConfig
    from impasto.train.loops.gan import train_gan

    class Random(Dataset):
        def __init__(self, side: int):
            self.side = side

        def __len__(self) -> int:
            return 64

        def __getitem__(self, i: int):
            feed = _inputs(self.side, 1)
            return {"ink": torch.from_numpy(feed["ink"][0]), "hints": torch.from_numpy(feed["hints"][0]),
                    "image": torch.rand(3, self.side, self.side) * 2 - 1, "reference": torch.rand(3, 64, 64),
                    "has_reference": torch.tensor(1.0)}

    print(f"\n| size | batch | G+D steps/s | images/s |  (VGG features: {features})\n|---|---:|---:|---:|")
    for side in (64, 128):
        batch = 8
        with tempfile.TemporaryDirectory() as out:
            cfg = ColorizeTrainConfig(steps=steps + 2, batch=batch, size=side, features=features, out=out,
                                      val_every=10**6, ckpt_every=10**6, log_every=10**6)
            data = Random(side)
            start = time.perf_counter()
            train_gan(ColorizeTask(cfg, data, data), cfg, progress=False)
            seconds = time.perf_counter() - start
        rate = (steps + 2) / seconds
        print(f"| {side}² | {batch} | {rate:.2f} | {rate * batch:.1f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=0, help="torch and ONNX Runtime threads (default: all cores)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--weights", default=None, help="a colorize weights file (default: random demo-size weights)")
    ap.add_argument("--features", default="vgg19", choices=("vgg19", "random"),
                    help="VGG-19 weights for the style encoder (random: skip its timing)")
    ap.add_argument("--train-steps", type=int, default=6)
    ap.add_argument("--skip-train", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "models"
        weights = _export(repo, args.weights, args.features)
        latency(repo, weights, args.threads, args.repeats, args.features)
    if not args.skip_train:
        training(args.train_steps, args.features)


if __name__ == "__main__":
    main()
