"""The distribution itself: every package folder is shipped, the repository stays small."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

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
