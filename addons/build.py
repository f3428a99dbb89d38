"""Build the add-on packages: ``python addons/build.py [--out DIR]`` (default ``dist/``).

- ``impasto-krita.zip``: a pykrita plugin for Krita's Tools > Scripts > Import Python Plugin
  from File (``impasto_krita.desktop`` + the ``impasto_krita/`` package).
- ``impasto-blender.zip``: a Blender 4.2+ extension (when ``addons/blender`` exists).

Each package gets its own copy of ``addons/common/impasto_http.py``, the standard-library
client: the host applications' Python has nothing else to rely on. Zips are reproducible
(fixed timestamps, sorted entries).
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLIENT = HERE / "common" / "impasto_http.py"
EPOCH = (2020, 1, 1, 0, 0, 0)


def _add(z: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    z.writestr(info, data)


def _sources(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


def build_krita(out: Path) -> Path:
    source = HERE / "krita"
    target = out / "impasto-krita.zip"
    with zipfile.ZipFile(target, "w") as z:
        _add(z, "impasto_krita.desktop", (source / "impasto_krita.desktop").read_bytes())
        for path in _sources(source / "impasto_krita"):
            _add(z, f"impasto_krita/{path.relative_to(source / 'impasto_krita').as_posix()}", path.read_bytes())
        _add(z, "impasto_krita/impasto_http.py", CLIENT.read_bytes())
    return target


def build_blender(out: Path) -> Path | None:
    source = HERE / "blender" / "impasto_blender"
    if not source.is_dir():
        return None
    target = out / "impasto-blender.zip"
    with zipfile.ZipFile(target, "w") as z:
        for path in _sources(source):
            _add(z, path.relative_to(source).as_posix(), path.read_bytes())
        _add(z, "impasto_http.py", CLIENT.read_bytes())
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="dist", help="output folder (default dist/)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for built in (build_krita(out), build_blender(out)):
        if built is not None:
            print(f"wrote {built}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
