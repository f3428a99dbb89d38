"""Renderer ablation (Stylized Neural Painting, Fig. 13/14): dual-pathway vs the baselines.

Every architecture sees the same batches (same seed, same batch size, 128 px throughout: no
coarse-to-fine head start for the dual renderer), the same number of steps and the same
held-out set. Prints a table, writes the PSNR curves as a PNG and the numbers as JSON.

    python benchmarks/renderer_ablation.py --brush oil --steps 400 --eval-every 50
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from impasto.train.data.strokes import training_batch, validation_set
from impasto.train.loops.renderer import evaluate
from impasto.train.models.renderer import ARCHITECTURES, RendererConfig, build_renderer


def run(arch: str, brush: str, steps: int, eval_every: int, batch: int, lr: float, val) -> dict:
    torch.manual_seed(0)
    model = build_renderer(RendererConfig(brush, arch))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    curve, t0 = [], time.perf_counter()
    for step in range(steps):
        data = training_batch(brush, batch, 0, step)
        fg, alpha = model(data.params)
        loss = F.mse_loss(fg, data.foreground) + F.mse_loss(alpha, data.alpha)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            ev = evaluate(model, val, step + 1)
            curve.append({"step": step + 1, "psnr_fg": ev.psnr_fg, "psnr_alpha": ev.psnr_alpha, "psnr": ev.psnr,
                          "seconds": time.perf_counter() - t0})
            print(f"  {arch:16s} step {step + 1:5d}  {ev.psnr:6.2f} dB", flush=True)
    with torch.no_grad():
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as fc:
            model.eval()(data.params[:1])
    return {
        "arch": arch,
        "params": sum(p.numel() for p in model.parameters()),
        "mflop_per_render": fc.get_total_flops() / 1e6,
        "curve": curve,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--brush", default="oil")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--val-size", type=int, default=256)
    ap.add_argument("--archs", default=",".join(ARCHITECTURES))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="docs/img/renderer_ablation")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    val = validation_set(args.brush, args.val_size)
    results = []
    for arch in args.archs.split(","):
        print(f"{arch}:", flush=True)
        results.append(run(arch, args.brush, args.steps, args.eval_every, args.batch, args.lr, val))

    print(f"\nbrush {args.brush}, {args.steps} steps x {args.batch} strokes at 128 px, "
          f"held-out set of {args.val_size}, torch threads {torch.get_num_threads()}")
    print("| renderer | parameters | MFLOP / render | PSNR fg | PSNR alpha | mean | train time |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        last = r["curve"][-1]
        print(f"| {r['arch']} | {r['params'] / 1e6:.2f} M | {r['mflop_per_render']:.0f} | {last['psnr_fg']:.2f} | "
              f"{last['psnr_alpha']:.2f} | {last['psnr']:.2f} | {last['seconds']:.0f} s |")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"brush": args.brush, "steps": args.steps, "results": results}, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for r in results:
        ax.plot([c["step"] for c in r["curve"]], [c["psnr"] for c in r["curve"]], marker="o", ms=3, label=r["arch"])
    ax.set_xlabel("training step (same batches for every renderer)")
    ax.set_ylabel("held-out PSNR, mean of fg and alpha (dB)")
    ax.set_title(f"Renderer ablation, {args.brush} brush")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.png')} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
