"""Semantic synthesis (SPADE): inference latency, server round trip and training throughput.

A demo-size generator (``SemanticConfig()`` defaults: 9 classes, about 3.2M parameters; from
``--weights``, else randomly initialised: the timings do not depend on the weights) is
exported into a temporary repository and timed in one process:

1. latency at batch 1, 256² and 512²: torch eager (inference mode, the exported module)
   against the ONNX Runtime CPU backend on the same inputs; the ratio is ORT / torch;
2. the ``semantic`` op in this process (``run_op``, ONNX Runtime) against the same request
   through a real ``impasto serve`` over gRPC (PNG in, PNG out, job events);
3. training throughput of ``impasto train semantic``'s step (G and D updates, VGG loss with
   random features) at 128² and 256², batch 1 and 4.

    python benchmarks/semantic.py [--threads 2] [--repeats 10] [--weights W.safetensors] [--skip-train]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from timing import median_seconds

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def _labels(side: int, seed: int = 0) -> np.ndarray:
    """A blocky random landscape-like label map (index image), ``side`` x ``side``."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 9, (side // 16, side // 16), dtype=np.uint8)
    return np.kron(coarse, np.ones((16, 16), np.uint8))


def _export(repo: Path, weights: str | None) -> Path:
    from impasto.export.pipeline import export_model
    from impasto.train.data.labels import LANDSCAPE
    from impasto.train.models.spade import SemanticConfig, spade_generator
    from impasto.train.models.weights_io import save_semantic

    if weights is None:
        torch.manual_seed(0)
        weights = save_semantic(repo.parent / "demo.safetensors", spade_generator(SemanticConfig()), SemanticConfig(),
                                LANDSCAPE)
    export_model("semantic_landscape", repo, checkpoint=weights, seed=0)
    return Path(weights)


def latency(repo: Path, weights: Path, threads: int, repeats: int) -> None:
    from impasto.export.families.spade import SemanticExport
    from impasto.runtime.backends import load_backend
    from impasto.train.models.weights_io import load_semantic

    generator, config, _ = load_semantic(weights)
    module = SemanticExport(generator, config.num_classes).eval()
    backend = load_backend(repo, "semantic_landscape", "onnxruntime", providers=["CPUExecutionProvider"], threads=threads)
    print("\n| size | torch eager ms | ONNX Runtime CPU ms | ORT / torch |\n|---|---:|---:|---:|")
    for side in (256, 512):
        labels = torch.from_numpy(_labels(side)).to(torch.int32)[None, None]
        z = torch.randn(1, config.z_dim, generator=torch.Generator().manual_seed(0))
        feed = {"labels": labels.numpy(), "z": z.numpy()}
        with torch.inference_mode():
            t_torch = median_seconds(lambda: module(labels, z), repeats)
        t_ort = median_seconds(lambda: backend.infer(feed), repeats)
        print(f"| {side}² | {t_torch * 1e3:.0f} | {t_ort * 1e3:.0f} | {t_ort / t_torch:.2f} |", flush=True)


def round_trip(repo: Path, repeats: int) -> None:
    from serving import RunningServer

    from impasto.runtime.api import studio_pb2 as pb
    from impasto.runtime.api.convert import WireImage
    from impasto.runtime.client import StudioClient
    from impasto.runtime.ops.registry import RunContext, get_op
    from impasto.runtime.ops.request import OpRequest, run_op, use_local_models

    print("\n| size | in process ms | gRPC round trip ms | ratio |\n|---|---:|---:|---:|")
    server = RunningServer("--repo", str(repo))
    try:
        with StudioClient(server.grpc) as client:
            spec, ctx = get_op("semantic"), RunContext()
            use_local_models(ctx, str(repo), "onnxruntime")
            for side in (256, 512):
                buf = io.BytesIO()
                Image.fromarray(_labels(side)).save(buf, format="PNG")
                png = buf.getvalue()
                local = median_seconds(lambda: run_op(spec, OpRequest("semantic", {"labels": WireImage(pb.Image(encoded=png))}, {}), ctx),
                                       repeats)
                remote = median_seconds(lambda: client.run("semantic", {"labels": png}, {}), repeats)
                print(f"| {side}² | {local * 1e3:.0f} | {remote * 1e3:.0f} | {remote / local:.2f} |", flush=True)
    finally:
        server.stop()


def training(steps: int) -> None:
    from torch.utils.data import Dataset

    from impasto.train.data.labels import LANDSCAPE
    from impasto.train.loops.semantic import SemanticTask, SemanticTrainConfig

    class Random(Dataset):
        def __init__(self, side: int):
            self.side, self.table = side, LANDSCAPE

        def __len__(self) -> int:
            return 64

        def __getitem__(self, i: int):
            label = torch.from_numpy(_labels(self.side, i).astype(np.int64))
            return torch.rand(3, self.side, self.side) * 2 - 1, label

    print("\n| size | batch | G+D steps/s | images/s |\n|---|---:|---:|---:|")
    for side, batch in ((128, 1), (128, 4), (256, 1)):
        with tempfile.TemporaryDirectory() as out:
            cfg = SemanticTrainConfig(steps=steps + 2, batch=batch, size=side, features="random", out=out,
                                      val_every=10**6, ckpt_every=10**6, log_every=10**6)
            from impasto.train.loops.gan import train_gan

            data = Random(side)
            task = SemanticTask(cfg, data, data)
            start = time.perf_counter()
            train_gan(task, cfg, progress=False)
            seconds = time.perf_counter() - start
        rate = (steps + 2) / seconds
        print(f"| {side}² | {batch} | {rate:.2f} | {rate * batch:.2f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=0, help="torch and ONNX Runtime threads (default: all cores)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--weights", default=None, help="a semantic weights file (default: random demo-size weights)")
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
        round_trip(repo, args.repeats)
    if not args.skip_train:
        training(args.train_steps)


if __name__ == "__main__":
    main()
