"""SPADE ablation (Park et al. 2019, Table 1 / §4): SPADE against the pix2pixHD-style baseline.

Both generators are trained by the same loop (`impasto train semantic`, `--arch spade` and
`--arch pix2pixhd`) with equal parameter counts (the baseline's width is matched by
``matched_pix2pixhd_config``), the same data, seed, batches, discriminator, losses and steps.
Every ``--eval-every`` steps the EMA generator is scored with the paper's protocol on the
first 64 held-out label maps: a segmenter trained on the real training images segments the
generated pictures (mIoU, pixel accuracy against the input maps) and the Fréchet distance to
the real images is computed on the available features (FD-VGG19 here: not FID).

Prints a markdown table, writes the curves to docs/img/semantic_ablation.png and the numbers to
docs/img/semantic_ablation.json. Re-running with the same --work folder resumes every run.

    python benchmarks/semantic_ablation.py --data /tmp/impasto-data/landscape128 --size 64 \\
        --steps 300 --eval-every 50 --segmenter-steps 800 --threads 1
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch
from run_logs import curve, train_seconds

from impasto.train.eval.semantic import frechet_key
from impasto.train.loops.gan import train_gan
from impasto.train.loops.segmenter import SegmenterTrainConfig, train_segmenter
from impasto.train.loops.semantic import EVAL_ITEMS, SemanticTask, SemanticTrainConfig
from impasto.train.models.spade import build_generator, count_parameters
from impasto.train.models.weights_io import read_metadata

ARCHS = ("spade", "pix2pixhd")


def train_arch(arch: str, args: argparse.Namespace, segmenter: Path) -> dict:
    cfg = SemanticTrainConfig(
        data=args.data, data_kind=args.data_kind, size=args.size, arch=arch, ngf=args.ngf, num_up=args.num_up,
        ndf=args.ndf, scales=args.scales, steps=args.steps, batch=args.batch, val_every=args.eval_every,
        ckpt_every=args.eval_every, log_every=args.eval_every, val_samples=4, seed=args.seed,
        out=str(Path(args.work) / arch), device="cpu", threads=args.threads, features=args.features,
        lambda_vgg=args.lambda_vgg, segmenter=str(segmenter),
    )
    task = SemanticTask(cfg)
    params = count_parameters(build_generator(task.model))
    print(f"{arch}: {params / 1e6:.3f} M generator parameters ({task.model.ngf=}, {task.model.p2p_blocks=})",
          flush=True)
    summary = train_gan(task, cfg, progress=False)
    return {"arch": arch, "params": params, "config": task.model.to_dict(), "curve": curve(Path(cfg.out)),
            "train_seconds": train_seconds(Path(cfg.out) / "history.json"),
            "weights": summary.get("weights")}


def ensure_segmenter(args: argparse.Namespace) -> Path:
    if args.segmenter:
        return Path(args.segmenter)
    cfg = SegmenterTrainConfig(data=args.data, data_kind=args.data_kind, size=args.size, steps=args.segmenter_steps,
                               batch=16, val_every=max(args.segmenter_steps // 4, 1), seed=args.seed,
                               out=str(Path(args.work) / "segmenter"), device="cpu", threads=args.threads)
    return train_segmenter(cfg, progress=False).weights


def reference_fd(args: argparse.Namespace) -> dict:
    """The Fréchet distance between two sets of *real* images (the first val and train items, same count):
    what two samples of the same distribution score at this sample size, the floor a generator can reach."""
    from torch.utils.data import default_collate

    from impasto.train.data.segmentation import build_dataset
    from impasto.train.eval.frechet import image_frechet_distance

    sets = []
    for split in ("val", "train"):
        data = build_dataset(args.data_kind, args.data, split, args.size, augment=False)
        sets.append(default_collate([data[i] for i in range(min(EVAL_ITEMS, len(data)))])[0])
    result = image_frechet_distance(sets[0], sets[1], features="auto" if args.features == "vgg19" else "random")
    return {"value": result.value, "features": result.features, "n": result.n_real}


def plot(results: list[dict], fd_name: str, real_miou: float, floor: float | None, out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = frechet_key(fd_name)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10.4, 4.0), dpi=110)
    for r in results:
        steps = [c["step"] for c in r["curve"]]
        label = f"{r['arch']} ({r['params'] / 1e6:.2f} M)"
        a.plot(steps, [c["miou"] for c in r["curve"]], marker="o", ms=3, label=label)
        b.plot(steps, [c[key] for c in r["curve"]], marker="o", ms=3, label=label)
    a.axhline(real_miou, color="grey", ls="--", lw=1, label=f"real images ({real_miou:.3f})")
    if floor is not None:
        b.axhline(floor, color="grey", ls="--", lw=1, label=f"real train vs real val ({floor:.3g})")
    a.set_ylabel("segmenter mIoU on generated images (higher: better)")
    b.set_ylabel(f"{fd_name} to real val images (lower: better)")
    for ax in (a, b):
        ax.set_xlabel("training step (same batches for both)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="dataset root (e.g. from `impasto data build semantic`)")
    ap.add_argument("--data-kind", default="folder")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--ngf", type=int, default=16)
    ap.add_argument("--num-up", type=int, default=3, help="SPADE upsampling stages (start grid = size / 2**num_up)")
    ap.add_argument("--ndf", type=int, default=32)
    ap.add_argument("--scales", type=int, default=2)
    ap.add_argument("--lambda-vgg", type=float, default=10.0)
    ap.add_argument("--features", default="vgg19", choices=("vgg19", "random"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--segmenter", default="", help="segmenter weights; trained on --data first when not given")
    ap.add_argument("--segmenter-steps", type=int, default=800)
    ap.add_argument("--work", default="runs/semantic_ablation", help="run folders (re-running resumes)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="docs/img/semantic_ablation")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    segmenter = ensure_segmenter(args)
    seg_meta = read_metadata(segmenter)["metrics"]
    print(f"segmenter {segmenter}: real val mIoU {seg_meta.get('val_miou', float('nan')):.3f} "
          f"({seg_meta.get('steps')} steps)", flush=True)
    results = [train_arch(arch, args, segmenter) for arch in ARCHS]
    last = results[0]["curve"][-1]
    fd_name = next(k for k in ("fd_vgg19", "fd_vgg19_random", "fid") if k in last)
    fd_label = {"fd_vgg19": "FD-VGG19", "fd_vgg19_random": "FD-VGG19-random", "fid": "FID"}[fd_name]
    real_miou = last["real_miou"]
    floor = reference_fd(args)

    print(f"\n{args.steps} steps x batch {args.batch} at {args.size} px on {args.data}; scored on {EVAL_ITEMS} val "
          f"label maps every {args.eval_every} steps; torch threads {torch.get_num_threads()}")
    print(f"| generator | parameters | mIoU | pixel accuracy | {fd_label} | best mIoU (step) | train time |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        c = r["curve"][-1]
        best = max(r["curve"], key=lambda e: e["miou"])
        print(f"| {r['arch']} | {r['params'] / 1e6:.3f} M | {c['miou']:.3f} | {c['pixel_accuracy']:.3f} | "
              f"{c[fd_name]:.1f} | {best['miou']:.3f} ({best['step']}) | {r['train_seconds']:.0f} s |")
    print(f"| real val images (segmenter's upper bound) | | {real_miou:.3f} | {last['real_pixel_accuracy']:.3f} | "
          f"{floor['value']:.1f} (vs {floor['n']} real training images) | | |")

    out = Path(args.out)
    title = (f"SPADE vs pix2pixHD at equal parameters: {args.steps} steps x {args.batch} at {args.size}², "
             f"scored on {EVAL_ITEMS} val maps")
    plot(results, fd_label, real_miou, floor["value"], out.with_suffix(".png"), title)
    record = {
        "protocol": {"eval_items": EVAL_ITEMS, "frechet_features": fd_label, "note": "FD-VGG19 is the Fréchet "
                     "distance on VGG-19 relu5_1 features, not FID (no Inception-v3 weights here)"},
        "settings": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "segmenter": {"path": str(segmenter), **seg_meta},
        "real_fd_floor": floor,
        "results": results,
        "segmenter_train_seconds": train_seconds(segmenter.parent / "history.json"),
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    print(f"wrote {out.with_suffix('.png')} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
