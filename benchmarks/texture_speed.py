"""Texture synthesis speed at equal quality: the earlier schedule against the new defaults, side by side.

Each schedule makes a texture of ``--size`` px from each exemplar (scikit-image's sample photos,
cropped to ``--exemplar-size``, as in benchmarks/texture.py), in one process, with the same
network and inputs, for every seed in ``--seeds`` (two seeds show the run-to-run noise).
Quality is measured as in benchmarks/texture.py (lower is better): colour W1 (pixel values)
and feature W1 (activations of the five style layers, averaged), both with the network used
for synthesis, the ImageNet VGG-19 by default.

Schedules (any ``TextureOptions`` field can be set with ``--schedule name=field:value,...``):

- ``baseline``: the defaults before the speed-up: Adam at lr 0.02, 100 steps at every scale,
  every layer at full size (``--optimizer adam --fine-iterations 0 --fine-layers all``);
- ``fast``: today's defaults (``TextureOptions()``: L-BFGS, 20 finest-scale steps, finer scales
  starting from the exemplar's colours).

    python benchmarks/texture_speed.py --size 512 --exemplar-size 256 --threads 1
    python benchmarks/texture_speed.py --schedule lbfgs50=iterations:50 --schedules baseline,fast,lbfgs50
    python benchmarks/texture_speed.py --estimate 4     # per-step seconds at each scale, totals extrapolated

``--estimate N`` runs every schedule with N steps at each scale instead of its own counts, times
each step, and prints the median seconds per step at each scale and the total the schedule's
step counts would take (a quick, like-for-like timing on a busy machine; no quality figures).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from impasto.runtime.ops.synthesis import VGGFeatureNet
from impasto.runtime.ops.texture import TextureOptions, texture
from texture import exemplar, feature_w1, w1  # the quality measures of benchmarks/texture.py

SCHEDULES: dict[str, dict] = {
    "baseline": {"optimizer": "adam", "iterations": 100, "fine_iterations": 0, "fine_layers": "all",
                 "match_colours": False},
    "fast": {},
}


def parse_schedule(text: str) -> tuple[str, dict]:
    """``name=field:value,field:value`` -> (name, {field: value}), values typed like the field's default."""
    name, _, spec = text.partition("=")
    fields = {f.name: f for f in dataclasses.fields(TextureOptions)}
    out = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition(":")
        if key not in fields:
            raise SystemExit(f"--schedule: unknown field '{key}' (fields: {', '.join(fields)})")
        kind = type(getattr(TextureOptions(), key))
        out[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return name, out


def estimate(net, args, names: list[str], schedules: dict[str, dict]) -> None:
    """Per-step seconds at each scale, N steps each, and each schedule's extrapolated total.

    The schedules run in turn ``--rounds`` times (A B A B ...), and each keeps its fastest round
    at every scale: on shared cores the load moves between runs, and the fastest round is the
    one least slowed by the neighbours."""
    from statistics import median

    from impasto.runtime.ops.synthesis import _scale_count, _steps

    ex = exemplar(args.exemplars.split(",")[0], args.exemplar_size)
    print(f"per-step seconds ({args.estimate} steps a scale, fastest of {args.rounds} alternating rounds), output "
          f"{args.size} px from a {args.exemplar_size} px exemplar, torch threads {torch.get_num_threads()}, "
          f"load {os.getloadavg()[0]:.1f}")
    best: dict[str, list[float]] = {}
    counts: dict[str, list[int]] = {}
    for _ in range(args.rounds):
        for schedule in names:
            options = TextureOptions(**schedules[schedule])
            scales = _scale_count(options, [args.size, args.size, args.exemplar_size, args.exemplar_size], net.min_side)
            counts[schedule] = [_steps(options, s, scales) for s in range(scales)]
            quick = dataclasses.replace(options, iterations=args.estimate, fine_iterations=args.estimate)
            marks: list[tuple[int, float]] = []
            t = time.perf_counter()
            texture(ex, (args.size, args.size), quick, net=net,
                    progress=lambda p, marks=marks: marks.append((p.scale, time.perf_counter())))
            per_step = []
            for s in range(1, scales + 1):
                times = [t] + [at for _, at in marks]
                gaps = [times[i + 1] - times[i] for i, (scale, _) in enumerate(marks) if scale == s]
                per_step.append(median(gaps[1:] or gaps))  # the first step of a scale also builds its targets
            best[schedule] = [min(a, b) for a, b in zip(best.get(schedule, per_step), per_step)]
    print(f"load after: {os.getloadavg()[0]:.1f}")
    print("| schedule | steps per scale | seconds per step, per scale | estimated total, s | speed vs baseline |")
    print("|---|---|---|---:|---:|")
    base = None
    for schedule in names:
        total = sum(n * p for n, p in zip(counts[schedule], best[schedule]))
        base = total if schedule == "baseline" else base
        speed = f"{base / total:.1f}x" if base else ""
        print(f"| {schedule} | {' / '.join(map(str, counts[schedule]))} | "
              f"{' / '.join(f'{p:.2f}' for p in best[schedule])} | {total:.0f} | {speed} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", default="vgg19", choices=["vgg19", "random"])
    ap.add_argument("--size", type=int, default=512, help="output side, px")
    ap.add_argument("--exemplar-size", type=int, default=256)
    ap.add_argument("--exemplars", default="coffee,chelsea")
    ap.add_argument("--schedules", default="baseline,fast")
    ap.add_argument("--schedule", action="append", default=[], help="name=field:value,... (an extra schedule)")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    ap.add_argument("--estimate", type=int, default=0, help="time N steps per scale and extrapolate (no quality)")
    ap.add_argument("--rounds", type=int, default=1, help="with --estimate: alternate the schedules this many times "
                    "and keep each one's fastest round")
    ap.add_argument("--save", default=None, help="folder for the textures (name_schedule_seed.png)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    schedules = dict(SCHEDULES)
    schedules.update(parse_schedule(s) for s in args.schedule)
    names = args.schedules.split(",")
    unknown = [n for n in names if n not in schedules]
    if unknown:
        raise SystemExit(f"--schedules: unknown schedule(s) {', '.join(unknown)} (known: {', '.join(schedules)})")
    net = VGGFeatureNet(args.features, device=args.device)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.estimate:
        estimate(net, args, names, schedules)
        return
    print(f"features {args.features}, output {args.size} px from a {args.exemplar_size} px exemplar, "
          f"torch threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}")
    print("| exemplar | schedule | seed | seconds | colour W1 | feature W1 | speed vs baseline |")
    print("|---|---|---:|---:|---:|---:|---:|")
    rows, base = [], {}
    for name in args.exemplars.split(","):
        ex = exemplar(name, args.exemplar_size)
        for schedule in names:
            for seed in seeds:
                options = TextureOptions(**{**schedules[schedule], "seed": seed, "device": args.device})
                t = time.perf_counter()
                out = texture(ex, (args.size, args.size), options, net=net)
                seconds = time.perf_counter() - t
                colour, feats = w1(out.reshape(3, -1), ex.reshape(3, -1)), feature_w1(net, out, ex)
                if schedule == "baseline":
                    base[(name, seed)] = seconds
                ratio = base.get((name, seed), base.get((name, seeds[0])))
                speed = f"{ratio / seconds:.1f}x" if ratio else ""
                rows.append({"exemplar": name, "schedule": schedule, "options": schedules[schedule], "seed": seed,
                             "seconds": round(seconds, 1), "colour_w1": round(colour, 4), "feature_w1": round(feats, 3),
                             "load": round(os.getloadavg()[0], 1)})
                print(f"| {name} | {schedule} | {seed} | {seconds:.1f} | {colour:.4f} | {feats:.3f} | {speed} |", flush=True)
                if args.save:
                    from impasto.runtime.images import save_image

                    os.makedirs(args.save, exist_ok=True)
                    save_image(out, os.path.join(args.save, f"{name}_{schedule}_{seed}.png"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"features": args.features, "size": args.size, "exemplar_size": args.exemplar_size,
                       "threads": args.threads, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
