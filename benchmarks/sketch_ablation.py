"""SketchyGAN ablation (Chen & Hays 2018, §6): MRU generator against ResNet and U-Net generators.

The three generators are trained by the same loop (`impasto train sketch --arch mru|resnet|unet`)
with equal parameter counts (the baselines' widths are solved for by ``generator_width``), the
same data, seed, curriculum, batches, discriminator, losses and steps. Every ``--eval-every``
steps the EMA generator is scored on the first 64 held-out pairs (``train/eval/sketch.py``):
FD-VGG19 to the real photos (not FID: no Inception-v3 weights here), sketch fidelity (chamfer
distance, % of the side, between the input lines and the HED edges of the output; the real
photos' own edges give the reference) and diversity (mean |difference| of two noise draws).

Prints a markdown table, writes curves to docs/img/sketch_ablation.png and the numbers to
docs/img/sketch_ablation.json. Re-running with the same --work folder resumes every run.

    python benchmarks/sketch_ablation.py --data /tmp/impasto-data/sketch128 --size 64 --steps 500 \\
        --eval-every 250 --threads 1
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch
from run_logs import curve, train_seconds

from impasto.train.loops.gan import train_gan
from impasto.train.loops.sketch import EVAL_ITEMS, SketchTask, SketchTrainConfig
from impasto.train.models.sketchygan import build_generator, count_parameters

ARCHS = ("mru", "resnet", "unet")
METRICS = (("fd_vgg19", "FD-VGG19 (lower: better)"), ("chamfer", "chamfer to output edges, % of side (lower: better)"),
           ("diversity", "diversity: mean |a - b| of two noise draws"))


def train_arch(arch: str, args: argparse.Namespace) -> dict:
    cfg = SketchTrainConfig(
        data=args.data, size=args.size, arch=arch, ngf=args.ngf, ndf=args.ndf, steps=args.steps, batch=args.batch,
        val_every=args.eval_every, ckpt_every=args.eval_every, log_every=args.eval_every, val_samples=4,
        seed=args.seed, out=str(Path(args.work) / arch), device="cpu", threads=args.threads,
        features=args.features, evaluate=True,
    )
    task = SketchTask(cfg)
    params = count_parameters(build_generator(task.model))
    print(f"{arch}: {params / 1e6:.3f} M generator parameters", flush=True)
    summary = train_gan(task, cfg, progress=False)
    return {"arch": arch, "params": params, "config": task.model.to_dict(), "curve": curve(Path(cfg.out)),
            "train_seconds": train_seconds(Path(cfg.out) / "history.json"), "weights": str(summary.get("weights"))}


def _key(entry: dict, key: str) -> str:
    """``fd_vgg19`` is ``fd_vgg19_random`` with --features random."""
    return key if key in entry else next(k for k in entry if k.startswith(key))


def plot(results: list[dict], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.9), dpi=110)
    for r in results:
        steps = [c["step"] for c in r["curve"]]
        for ax, (key, _) in zip(axes, METRICS):
            key = _key(r["curve"][-1], key)
            ax.plot(steps, [c[key] for c in r["curve"]], marker="o", ms=3, label=f"{r['arch']} ({r['params'] / 1e6:.2f} M)")
    ref = results[0]["curve"][-1]["chamfer_real"]
    axes[1].axhline(ref, color="grey", ls="--", lw=1, label=f"real photos' edges ({ref:.2f})")
    for ax, (_, label) in zip(axes, METRICS):
        ax.set_xlabel("training step (same batches for all)")
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="dataset root (from `impasto data build sketch`)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--ngf", type=int, default=16)
    ap.add_argument("--ndf", type=int, default=32)
    ap.add_argument("--features", default="vgg19", choices=("vgg19", "random"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--work", default="runs/sketch_ablation", help="run folders (re-running resumes)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="docs/img/sketch_ablation")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    results = [train_arch(arch, args) for arch in args.archs.split(",")]
    print(f"\n{args.steps} steps x batch {args.batch} at {args.size} px on {args.data}; scored on {EVAL_ITEMS} val "
          f"pairs every {args.eval_every} steps; torch threads {torch.get_num_threads()}")
    print("| generator | parameters | FD-VGG19 | chamfer (% side) | diversity | train time |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        c = r["curve"][-1]
        print(f"| {r['arch']} | {r['params'] / 1e6:.3f} M | {c[_key(c, 'fd_vgg19')]:.4g} | {c['chamfer']:.2f} | "
              f"{c['diversity']:.4f} | {r['train_seconds']:.0f} s |")
    print(f"| real photos' edges (reference) | | | {results[0]['curve'][-1]['chamfer_real']:.2f} | | |")
    out = Path(args.out)
    plot(results, out.with_suffix(".png"),
         f"SketchyGAN generators at equal parameters: {args.steps} steps x {args.batch} at {args.size}², "
         f"scored on {EVAL_ITEMS} val pairs")
    record = {"protocol": {"eval_items": EVAL_ITEMS, "note": "FD-VGG19 is the Fréchet distance on VGG-19 features, "
                           "not FID (no Inception-v3 weights here)"},
              "settings": {k: v for k, v in vars(args).items() if k != "out"}, "results": results}
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    print(f"wrote {out.with_suffix('.png')} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
