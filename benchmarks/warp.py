"""Learning to Warp: warper latency, torch against ONNX Runtime, and the whole warp + style at 512².

A demo-size warper (``WarpConfig()`` defaults, the ImageNet VGG-19 from the user's offline
source; the estimator from ``--weights`` or randomly initialised: the timings do not depend on
its weights) is exported into a temporary repository and timed in one process:

1. warper latency at ``--batch`` (features, correlation and the recurrent estimator; the inputs
   are the op's side x side resize), torch eager in inference mode against the ONNX Runtime CPU
   backend on the same inputs with the same thread count, interleaved run by run (the machine's
   load then weighs on both alike), medians after a warm-up. Two torch columns: the model's own
   forward (:class:`~impasto.export.families.warper.WarpExport`, what issue 18's "ORT at most 0.8x
   torch" compares against) and the export's formulation of the same arithmetic
   (:class:`~impasto.export.families.warper.WarpGraph`, the module the graph is traced from), so
   that the table separates what the formulation gains from what the runtime gains;
2. ``impasto warp`` as a user runs it, at 512² content, through the op's run function on the
   local engine: the warp alone (the field estimated, then applied at full resolution), and
   the warp followed by the stylize step (``--style``) with its default schedule.

    python benchmarks/warp.py [--threads 2] [--repeats 20] [--batch 1] [--weights W.safetensors]
                              [--skip-style] [--latency-only]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


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


def _interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds of each of ``fns``, run in turn within every repeat (one load for all), after ``warmup`` rounds."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(warmup + repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def latency(repo: Path, weights: Path, threads: int, repeats: int, batch: int) -> None:
    from impasto.export.families.warper import WarpExport, WarpGraph
    from impasto.runtime.backends import load_backend
    from impasto.train.models.warper import Warper, build_features
    from impasto.train.models.weights_io import load_warp

    estimator, config = load_warp(weights)
    warper = Warper(build_features(config, features="vgg19"), estimator).eval()
    model, graph = WarpExport(warper).eval(), WarpGraph(warper).eval()
    backend = load_backend(repo, "warp_demo", "onnxruntime", providers=["CPUExecutionProvider"], threads=threads)
    side = config.side
    content = torch.stack([_picture(side, 2 * i) for i in range(batch)])
    exemplar = torch.stack([_picture(side, 2 * i + 1) for i in range(batch)])
    feed = {"content": content.numpy(), "exemplar": exemplar.numpy()}
    with torch.inference_mode():
        reference = model(content, exemplar).numpy()
        formulation = float(np.abs(graph(content, exemplar).numpy() - reference).max())
        t = _interleaved({"model": lambda: model(content, exemplar), "graph": lambda: graph(content, exemplar),
                          "ort": lambda: backend.infer(feed)}, repeats)
    error = float(np.abs(backend.infer(feed)["flow"] - reference).max())
    print("\n| model | input | torch eager ms (model / export formulation) | ONNX Runtime CPU ms | "
          "ORT / torch model | ORT / torch formulation | max |flow| difference ORT (formulation) vs model |")
    print("|---|---|---:|---:|---:|---:|---:|")
    print(f"| warper ({config.layer}, {config.iterations} iterations) | {batch} x 2 x {side}² | "
          f"{t['model'] * 1e3:.0f} / {t['graph'] * 1e3:.0f} | {t['ort'] * 1e3:.0f} | {t['ort'] / t['model']:.2f} | "
          f"{t['ort'] / t['graph']:.2f} | {error:.1e} ({formulation:.1e}) |", flush=True)


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
    ap.add_argument("--repeats", type=int, default=20, help="timed rounds (medians; the whole op uses a third)")
    ap.add_argument("--batch", type=int, default=1, help="warper batch of the latency timing")
    ap.add_argument("--weights", default=None, help="a warp weights file (default: random demo-size weights)")
    ap.add_argument("--side", type=int, default=512, help="content side of the whole-op timing")
    ap.add_argument("--skip-style", action="store_true", help="time the warp alone (the style step takes minutes)")
    ap.add_argument("--latency-only", action="store_true", help="time the warper only, not the whole op")
    args = ap.parse_args()
    if args.batch < 1 or args.repeats < 1:
        ap.error(f"--batch and --repeats must be at least 1, got {args.batch} and {args.repeats}")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "models"
        weights = _export(repo, args.weights)
        latency(repo, weights, args.threads, args.repeats, args.batch)
        if not args.latency_only:
            whole_op(repo, args.side, not args.skip_style, max(1, args.repeats // 3))


if __name__ == "__main__":
    main()
