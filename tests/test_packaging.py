"""The distribution itself: every package folder is shipped, the repository stays small."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    mapping = cfg["package-dir"]
    found = {"impasto"}
    for package, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *rel.parts]) if rel.parts else package)
    assert found == listed


def test_dependencies_point_one_way():
    """train imports neither export nor runtime; export does not import runtime."""
    import ast

    rules = {"train": ("impasto.export", "impasto.runtime"), "export": ("impasto.runtime",)}
    for folder, banned in rules.items():
        for py in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(py.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                for name in names:
                    assert not name.startswith(banned), f"{py.relative_to(ROOT)} imports {name}"


def test_repository_stays_small_enough_to_travel():
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    total = sum((ROOT / f).stat().st_size for f in files if (ROOT / f).is_file())
    assert total < 40 * 1024 * 1024, f"{total / 2**20:.1f} MiB"


def test_the_installed_version_is_the_package_version():
    """One version: the distribution's metadata reads impasto.__version__ (what servers report)."""
    from importlib.metadata import version

    import impasto

    assert version("impasto") == impasto.__version__


def _requirements(dist: str, extras: set[str]) -> dict:
    """``dist``'s installed requirements (with ``extras``) by normalised name -> specifier."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    out = {}
    for text in requires(dist) or ():
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras | {""}):
            name = canonicalize_name(req.name)
            out[name] = out[name] & req.specifier if name in out else req.specifier
    return out


def test_impasto_and_tritonclient_all_admit_the_same_protobuf_and_grpcio():
    """Always-on, offline: the pins overlap, and the environment installed here satisfies both.

    The old ``protobuf>=7.35.1`` pin failed this: tritonclient[all] asks for protobuf<7.
    """
    from importlib.metadata import version

    from packaging.version import Version

    ours = _requirements("impasto", {"test"})
    theirs = _requirements("tritonclient", {"all"})
    for name in ("protobuf", "grpcio"):
        floors = [Version(s.version) for spec in (ours[name], theirs[name]) for s in spec if s.operator == ">="]
        assert any(ours[name].contains(v) and theirs[name].contains(v) for v in floors), (name, ours[name], theirs[name])
        installed = version(name)
        assert ours[name].contains(installed) and theirs[name].contains(installed), (name, installed)
    tritonclient_floor = ours["tritonclient"]  # the test extra's floor: the current release line
    assert tritonclient_floor.contains(version("tritonclient")), version("tritonclient")


def test_pip_resolves_impasto_beside_the_newest_tritonclient_all(tmp_path):
    """A real resolution (pip --dry-run, metadata only: nothing is downloaded in full or installed).

    pip must pick the newest tritonclient release for ``impasto`` + ``tritonclient[all]``, not
    fall back to an old one as it did (2.41, from 2023) when the protobuf pins did not overlap.
    Needs the package index; skipped when it cannot be reached.
    """
    import importlib.util
    import json
    import re
    import sys

    index = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "tritonclient"],
                           check=False, capture_output=True, text=True, timeout=120)
    newest = re.search(r"^tritonclient \(([^)]+)\)", index.stdout, re.MULTILINE)
    if index.returncode != 0 or not newest:
        pytest.skip(f"package index not reachable: {index.stderr.strip()[-200:]}")
    report = tmp_path / "report.json"
    # building impasto's metadata with the setuptools already here saves fetching one (about 20 s)
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    run = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", *isolation,
         "--quiet", "--report", str(report), str(ROOT), "tritonclient[all]", "torch==2.13.0"],
        check=False, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    chosen = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    assert chosen["impasto"] == __import__("impasto").__version__
    assert chosen["tritonclient"] == newest[1], chosen["tritonclient"]
