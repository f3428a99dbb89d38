"""style2paints v1 ablation: guide decoders, AC-GAN against a conditional discriminator, hints.

Four runs of the same loop (`impasto train colorize`) on the same data, seed, batches and steps:

- ``full``: guide decoders, the AC discriminator (style-feature head, sees the picture only), hints;
- ``no-guides``: without the two guide decoders (``--no-guides``);
- ``conditional``: a conditional discriminator (picture + line art, no style head; ``--disc conditional``);
- ``no-hints``: trained without colour hints (``--no-hints``).

Every ``--eval-every`` steps the EMA generator is scored on the first 64 held-out pairs
(``train/eval/colorize.py``): PSNR, SSIM and FD-VGG19 (not FID: no Inception-v3 weights here)
against the ground-truth colourings, with the line art alone, with sampled hints, and with the
ground truth as the style reference.

Prints a markdown table, writes curves to docs/img/colorize_ablation.png and the numbers to
docs/img/colorize_ablation.json. Re-running with the same --work folder resumes every run.

    python benchmarks/colorize_ablation.py --data /tmp/impasto-data/colorize128 --size 64 --steps 400 \\
        --eval-every 200 --threads 1
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch
from run_logs import curve, train_seconds

from impasto.train.loops.colorize import EVAL_ITEMS, ColorizeTask, ColorizeTrainConfig
from impasto.train.loops.gan import train_gan
from impasto.train.models.colorizer import build_generator, count_parameters

VARIANTS = {"full": {}, "no-guides": {"guides": False}, "conditional": {"disc": "conditional"},
            "no-hints": {"hints": False}}
METRICS = (("psnr", "PSNR, dB (higher: better)"), ("ssim", "SSIM (higher: better)"),
           ("fd_vgg19", "FD-VGG19 (lower: better)"))
MODES = ("lines", "hints", "reference")


def train_variant(name: str, args: argparse.Namespace) -> dict:
    cfg = ColorizeTrainConfig(
        data=args.data, size=args.size, width=args.width, ndf=args.ndf, steps=args.steps, batch=args.batch,
        val_every=args.eval_every, ckpt_every=args.eval_every, log_every=args.eval_every, val_samples=4,
        seed=args.seed, out=str(Path(args.work) / name), device="cpu", threads=args.threads,
        features=args.features, evaluate=True, **VARIANTS[name],
    )
    task = ColorizeTask(cfg)
    params = count_parameters(build_generator(task.model))
    print(f"{name}: {params / 1e6:.3f} M generator parameters", flush=True)
    summary = train_gan(task, cfg, progress=False)
    return {"variant": name, "params": params, "config": task.model.to_dict(), "curve": curve(Path(cfg.out)),
            "train_seconds": train_seconds(Path(cfg.out) / "history.json"), "weights": str(summary.get("weights"))}


def _key(entry: dict, key: str, mode: str) -> str:
    """``fd_vgg19_MODE`` is ``fd_vgg19_random_MODE`` with --features random."""
    wanted = f"{key}_{mode}"
    return wanted if wanted in entry else next(k for k in entry if k.startswith(key) and k.endswith(f"_{mode}"))


def plot(results: list[dict], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(MODES), len(METRICS), figsize=(13.5, 9), dpi=100)
    for row, mode in enumerate(MODES):
        for col, (key, label) in enumerate(METRICS):
            ax = axes[row][col]
            for r in results:
                steps = [c["step"] for c in r["curve"]]
                ax.plot(steps, [c[_key(c, key, mode)] for c in r["curve"]], marker="o", ms=3, label=r["variant"])
            ax.set_title(f"{label}: {mode}", fontsize=9)
            ax.set_xlabel("training step (same batches for all)", fontsize=8)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="dataset root (from `impasto data build colorize`)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--ndf", type=int, default=32)
    ap.add_argument("--features", default="vgg19", choices=("vgg19", "random"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--work", default="runs/colorize_ablation", help="run folders (re-running resumes)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="docs/img/colorize_ablation")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    results = [train_variant(name, args) for name in args.variants.split(",")]
    print(f"\n{args.steps} steps x batch {args.batch} at {args.size} px on {args.data}; scored on {EVAL_ITEMS} val "
          f"pairs; torch threads {torch.get_num_threads()}")
    print("| variant | G parameters | " + " | ".join(f"PSNR / SSIM / FD {m}" for m in MODES) + " | train time |")
    print("|---|---:|" + "---:|" * len(MODES) + "---:|")
    for r in results:
        c = r["curve"][-1]
        cells = [f"{c[_key(c, 'psnr', m)]:.2f} / {c[_key(c, 'ssim', m)]:.3f} / {c[_key(c, 'fd_vgg19', m)]:.4g}"
                 for m in MODES]
        print(f"| {r['variant']} | {r['params'] / 1e6:.3f} M | " + " | ".join(cells) + f" | {r['train_seconds']:.0f} s |")
    out = Path(args.out)
    plot(results, out.with_suffix(".png"),
         f"style2paints v1 ablation: {args.steps} steps x {args.batch} at {args.size}², scored on {EVAL_ITEMS} val pairs")
    record = {"protocol": {"eval_items": EVAL_ITEMS, "modes": list(MODES),
                           "note": "FD-VGG19 is the Fréchet distance on VGG-19 features, not FID"},
              "settings": {k: v for k, v in vars(args).items() if k != "out"}, "results": results}
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    print(f"wrote {out.with_suffix('.png')} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
