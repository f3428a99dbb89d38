"""Learning to Warp: warper latency, torch against ONNX Runtime, and the whole warp + style at 512².

A demo-size warper (``WarpConfig()`` defaults, the ImageNet VGG-19 from the user's offline
source; the estimator from ``--weights`` or randomly initialised: the timings do not depend on
its weights) is exported into a temporary repository and timed in one process:

1. warper latency at batch 1 (features, correlation and the recurrent estimator; the inputs
   are the op's side x side resize): torch eager (inference mode, the exported module) against
   the ONNX Runtime CPU backend on the same inputs; the ratio is ORT / torch (issue 18 asks for
   at most 0.8);
2. ``impasto warp`` as a user runs it, at 512² content, through the op's run function on the
   local engine: the warp alone (the field estimated, then applied at full resolution), and
   the warp followed by the stylize step (``--style``) with its default schedule.

    python benchmarks/warp.py [--threads 2] [--repeats 10] [--weights W.safetensors] [--skip-style]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from timing import median_seconds


def _picture(side: int, seed: int) -> torch.Tensor:
    """Smooth colour blobs with a few hard-edged shapes, (3, side, side) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 6, 6, generator=g)
    image = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=False)[0]
    for _ in range(4):
        y, x = (torch.randint(0, side * 3 // 4, (2,), generator=g)).tolist()
        image[:, y:y + side // 5, x:x + side // 4] = torch.rand(3, 1, 1, generator=g)
    return image.clamp(0, 1)


def _export(repo: Path, weights: str | None) -> Path:
    from impasto.export.pipeline import export_model
    from impasto.train.models.warper import WarpConfig, build_estimator
    from impasto.train.models.weights_io import save_warp

    if weights is None:
        torch.manual_seed(0)
        weights = save_warp(repo.parent / "warp.safetensors", build_estimator(WarpConfig()).eval(), WarpConfig(),
                            data="random weights")
    export_model("warp_demo", repo, checkpoint=weights, seed=0)
    return Path(weights)


def latency(repo: Path, weights: Path, threads: int, repeats: int) -> None:
    from impasto.export.families.warper import WarpExport
    from impasto.runtime.backends import load_backend
    from impasto.train.models.warper import Warper, build_features
    from impasto.train.models.weights_io import load_warp

    estimator, config = load_warp(weights)
    module = WarpExport(Warper(build_features(config, features="vgg19"), estimator)).eval()
    backend = load_backend(repo, "warp_demo", "onnxruntime", providers=["CPUExecutionProvider"], threads=threads)
    side = config.side
    content, exemplar = _picture(side, 0)[None], _picture(side, 1)[None]
    feed = {"content": content.numpy(), "exemplar": exemplar.numpy()}
    with torch.inference_mode():
        t_torch = median_seconds(lambda: module(content, exemplar), repeats)
        reference = module(content, exemplar).numpy()
    t_ort = median_seconds(lambda: backend.infer(feed), repeats)
    error = float(np.abs(backend.infer(feed)["flow"] - reference).max())
    print("\n| model | input | torch eager ms | ONNX Runtime CPU ms | ORT / torch | max |flow| difference |")
    print("|---|---|---:|---:|---:|---:|")
    print(f"| warper ({config.layer}, {config.iterations} iterations) | 2 x {side}² | {t_torch * 1e3:.0f} | "
          f"{t_ort * 1e3:.0f} | {t_ort / t_torch:.2f} | {error:.1e} |", flush=True)


def whole_op(repo: Path, side: int, style: bool, repeats: int) -> None:
    from impasto.runtime.ops.registry import RunContext, get_op
    from impasto.runtime.ops.request import TensorImage, run_op, use_local_models
    from impasto.runtime.ops.request import OpRequest

    spec = get_op("warp")
    ctx = RunContext()
    use_local_models(ctx, str(repo), "onnxruntime")
    images = {"content": TensorImage(_picture(side, 2)), "geometry": TensorImage(_picture(side, 3))}
    print(f"\n| impasto warp, {side}² content | seconds | of which the style step |\n|---|---:|---:|")
    rows = [("warp alone", {})]
    if style:
        rows.append(("warp + style (stylize defaults, VGG-19)", {"style": TensorImage(_picture(256, 4))}))
    for label, extra in rows:
        times, style_seconds = [], []
        for _ in range(1 if extra else repeats):
            start = time.perf_counter()
            outcome = run_op(spec, OpRequest("warp", {**images, **extra}, {}), ctx)
            times.append(time.perf_counter() - start)
            style_seconds.append(outcome.numbers.get("style_seconds", 0.0))
        best = int(np.argmin(times))
        print(f"| {label} | {times[best]:.2f} | {style_seconds[best]:.2f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=0, help="torch and ONNX Runtime threads (default: all cores)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--weights", default=None, help="a warp weights file (default: random demo-size weights)")
    ap.add_argument("--side", type=int, default=512, help="content side of the whole-op timing")
    ap.add_argument("--skip-style", action="store_true", help="time the warp alone (the style step takes minutes)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "models"
        weights = _export(repo, args.weights)
        latency(repo, weights, args.threads, args.repeats)
        whole_op(repo, args.side, not args.skip_style, max(1, args.repeats // 3))


if __name__ == "__main__":
    main()
