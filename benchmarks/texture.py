"""Texture synthesis: histogram losses against Gram-only (and sliced Wasserstein) at equal iterations.

For a few exemplars (scikit-image's sample photos, cropped), each loss synthesises a texture
with the same network, seed and iterations. Printed per run: seconds, and two measures of
how well the result reproduces the exemplar's distributions, computed the same way for all
losses (lower is better):

- colour W1: the mean over R, G, B of the 1-D Wasserstein distance between the output's and
  the exemplar's pixel values (in [0, 1]);
- feature W1: the same distance between their activations, averaged over the network's
  style layers and channels.

``--picture`` writes the exemplars and results side by side, ``--curves`` the loss curves.

    python benchmarks/texture.py --features random --size 128 --iterations 100 --picture docs/img/textures.png
    python benchmarks/texture.py --timing-only --size 512          # seconds for one 512 x 512 texture
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from impasto.runtime.images import load_image, resize, save_image
from impasto.runtime.ops.synthesis import LOSSES, SynthesisOptions, VGGFeatureNet
from impasto.runtime.ops.texture import texture
from impasto.train.losses.statistics import sorted_features

EXEMPLARS = {"coffee": (40, 250, 200), "chelsea": (60, 120, 180), "rocket": (100, 150, 160)}  # name: top, left, side


def exemplar(name: str, side: int) -> torch.Tensor:
    image = load_image(f"example:{name}")
    top, left, crop = EXEMPLARS[name]
    return resize(image[:, top : top + crop, left : left + crop], side, side)


def w1(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean 1-D Wasserstein distance between rows of (C, N) and (C, M) samples."""
    from impasto.train.losses.statistics import _resample_sorted

    sa, sb = a.sort(dim=1).values, b.sort(dim=1).values
    return float((sa - _resample_sorted(sb, sa.shape[1])).abs().mean())


def feature_w1(net, x: torch.Tensor, y: torch.Tensor) -> float:
    device = next(net.parameters()).device
    with torch.no_grad():
        fx, fy = net(x.unsqueeze(0).to(device)), net(y.unsqueeze(0).to(device))
    return sum(w1(sorted_features(fx[n]).cpu(), sorted_features(fy[n]).cpu()) for n in net.style_layers) / len(net.style_layers)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", default="random", choices=["vgg19", "random"])
    ap.add_argument("--size", type=int, default=128, help="output side, px")
    ap.add_argument("--exemplar-size", type=int, default=128)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--picture", default=None)
    ap.add_argument("--curves", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--timing-only", action="store_true", help="time one texture with the default loss and exit")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    net = VGGFeatureNet(args.features, device=args.device)
    if args.timing_only:
        ex = exemplar("coffee", args.exemplar_size)
        steps = []
        t = time.perf_counter()
        texture(ex, (args.size, args.size), SynthesisOptions(iterations=args.iterations, device=args.device), net=net,
                progress=lambda p: steps.append((p.scale, time.perf_counter() - t)))
        total = time.perf_counter() - t
        per_scale = {}
        for scale, at in steps:
            per_scale[scale] = at
        print(f"{args.size} x {args.size}, {args.iterations} iterations per scale, {len(per_scale)} scales, "
              f"torch threads {torch.get_num_threads()}: {total:.1f} s")
        return
    rows, images, curves = [], [], {}
    print(f"features {args.features}, output {args.size} px, exemplar {args.exemplar_size} px, {args.iterations} iterations per scale")
    print("| exemplar | loss | seconds | colour W1 | feature W1 |")
    print("|---|---|---:|---:|---:|")
    for name in EXEMPLARS:
        ex = exemplar(name, args.exemplar_size)
        row_images = [ex]
        for loss in LOSSES:
            seen: list[float] = []
            t = time.perf_counter()
            out = texture(ex, (args.size, args.size), SynthesisOptions(loss=loss, iterations=args.iterations, seed=0, device=args.device),
                          net=net, progress=lambda p: seen.append(p.loss))
            seconds = time.perf_counter() - t
            colour = w1(out.reshape(3, -1), ex.reshape(3, -1))
            feats = feature_w1(net, out, ex)
            rows.append({"exemplar": name, "loss": loss, "seconds": round(seconds, 1), "colour_w1": round(colour, 4),
                         "feature_w1": round(feats, 4)})
            curves[f"{name}/{loss}"] = seen
            row_images.append(resize(out, args.exemplar_size, args.exemplar_size))
            print(f"| {name} | {loss} | {seconds:.1f} | {colour:.4f} | {feats:.4f} |", flush=True)
        images.append(torch.cat(row_images, dim=2))
    if args.picture:
        save_image(torch.cat(images, dim=1), args.picture)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"features": args.features, "size": args.size, "iterations": args.iterations, "rows": rows}, f, indent=1)
    if args.curves:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(EXEMPLARS), figsize=(4 * len(EXEMPLARS), 3.2))
        for ax, name in zip(axes, EXEMPLARS):
            for loss in LOSSES:
                values = curves[f"{name}/{loss}"]
                ax.plot([v / values[0] for v in values], label=loss)
            ax.set_yscale("log")
            ax.set_title(name)
            ax.set_xlabel("step (all scales)")
        axes[0].set_ylabel("loss / initial loss")
        axes[0].legend()
        fig.tight_layout()
        fig.savefig(args.curves, dpi=100)


if __name__ == "__main__":
    main()
