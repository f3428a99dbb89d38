"""Generate the Python modules for the .proto files in this folder into runtime/api/.

    python proto/generate.py            # rewrite runtime/api/*_pb2*.py(i)
    python proto/generate.py --check    # exit 1 if the committed modules differ from a fresh run

Uses grpcio-tools (pinned in the test extra, so output is reproducible). protoc names
imports after the .proto paths (``from impasto.v1 import studio_pb2``); they are rewritten to
the package the modules live in (``impasto.runtime.api``).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET = HERE.parent / "runtime" / "api"
PROTOS = ["impasto/v1/studio.proto", "impasto/sidecar/v1/sidecar.proto"]
PACKAGE = "impasto.runtime.api"


def generate() -> dict[str, str]:
    """File name -> text of every generated module."""
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{HERE}", f"--python_out={out}", f"--pyi_out={out}",
             f"--grpc_python_out={out}", *PROTOS],
            check=True,
        )
        files = {}
        for path in sorted(Path(out).rglob("*_pb2*.py*")):
            text = path.read_text()
            text = re.sub(r"^from impasto(?:\.sidecar)?\.v1 import (\w+_pb2)", rf"from {PACKAGE} import \1", text, flags=re.M)
            files[path.name] = text
        return files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    args = ap.parse_args()
    files = generate()
    if args.check:
        stale = [n for n, t in files.items() if not (TARGET / n).is_file() or (TARGET / n).read_text() != t]
        for n in stale:
            print(f"runtime/api/{n} differs from what proto/generate.py produces", file=sys.stderr)
        return 1 if stale else 0
    for name, text in files.items():
        (TARGET / name).write_text(text)
        print(f"wrote runtime/api/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
