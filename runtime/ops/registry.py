"""The operation registry: each op is declared once, and every layer reads the declaration.

An :class:`OpSpec` says what an operation takes and gives: its options (a dataclass whose
user-facing fields are made with :func:`impasto.train.options.option`), its image slots,
its outputs, where it runs (the torch **sidecar** for optimisation, the **engine** for
feed-forward ONNX models), the models it needs, and its run function. The CLI
(``impasto OP``, ``impasto client OP``), the server (the generic job RPC, ``/v1/ops/{op}``,
Capabilities), the sidecar, the batch runner and the add-ons' forms all derive from it,
like torchvision's ``get_model`` / ``list_models``:

    from impasto.runtime.ops import get_op, list_ops
    list_ops()                  # ['paint', 'stylize', 'texture']
    spec = get_op("texture")    # options, images, outputs, runs_in, run

Built-in ops live in the modules named in ``BUILTIN``; more come from the ``impasto.ops``
entry-point group and from ``IMPASTO_OPS`` (comma-separated module names), each module
calling :func:`register_op` when imported.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from impasto.runtime.errors import NotFound
from impasto.train.options import OptionError, OptionSpec, options_of

log = logging.getLogger(__name__)

BUILTIN = ("impasto.runtime.ops.paint_op", "impasto.runtime.ops.texture", "impasto.runtime.ops.stylize",
           "impasto.runtime.ops.semantic", "impasto.runtime.ops.sketchify", "impasto.runtime.ops.sketch",
           "impasto.runtime.ops.colorize", "impasto.runtime.ops.warp")
# "flow": not pixels but the bytes of a warp field file (.npz, impasto.runtime.formats.flow), decoded as (2, h, w)
ROLES = ("image", "mask", "labels", "style", "sketch", "lineart", "hints", "flow")
KINDS = ("image", "text", "file")  # a tensor (sent as PNG), a string, bytes of a file
PLACES = ("layer", "under", "texture", "vector", "file")  # where an add-on puts an output (see Output.place)
ALPHA = "rgba"  # how a slot with ``alpha=True`` is decoded (ImageSource.decode's role), whatever its role
# decoded with their alpha, (4, H, W) RGBA: colour hints, sketches and line art (strokes on a transparent layer), and
# the slots that keep their alpha (ALPHA)
RGBA_ROLES = ("hints", "sketch", "lineart", ALPHA)
_KIND_TEXT = {"bool": "true or false", "int": "a whole number", "float": "a number", "string": "text"}  # OpSpec.live


class UnknownOpError(NotFound):
    """An op name nobody registered (the message lists the known ones)."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class ImageSlot:
    """One image an op takes. Required slots are positional on the command line, in order.

    ``unless`` names another (optional) slot that stands in for this required one: the request
    gives one of the two, never both (``warp``: a geometry exemplar, or ``apply``, a flow file
    to apply again). On the command line such a slot is a positional that may be left out.
    ``alpha`` keeps a picture's transparency: it is decoded as (4, H, W) RGBA (:data:`ALPHA`)
    whatever its role (a layer an op moves, whose transparent parts must stay transparent).
    """

    name: str
    help: str
    role: str = "image"  # how it is decoded: mask -> (1, H, W) grey; RGBA_ROLES -> (4, H, W) RGBA; flow -> (2, h, w);
    # else (3, H, W)
    required: bool = True
    same_size_as: str | None = None  # another slot this one must match in size
    together_with: str | None = None  # a slot that must be given with this one (label map pairs)
    min_side: int = 1  # px, smaller images are refused
    unless: str | None = None  # an optional slot given instead of this required one (see the class docstring)
    alpha: bool = False  # decoded with its alpha, (4, H, W) RGBA, whatever the role

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"image slot '{self.name}': role must be one of {', '.join(ROLES)}")
        if self.unless is not None and (not self.required or self.unless == self.name):
            raise ValueError(f"image slot '{self.name}': unless names another slot, and only a required slot has one")
        if self.alpha and self.role in ("mask", "flow"):
            raise ValueError(f"image slot '{self.name}': a {self.role} has no alpha to keep")

    @property
    def decode_role(self) -> str:
        """The role its pixels are decoded for (ImageSource.decode): :data:`ALPHA` for a slot keeping its alpha."""
        return ALPHA if self.alpha and self.role not in RGBA_ROLES else self.role

    def missing_from(self, given: Collection[str]) -> bool:
        """Whether a request that gives the slots ``given`` lacks this one (required, and its ``unless`` not given)."""
        return self.required and self.name not in given and not (self.unless is not None and self.unless in given)

    @property
    def cli_flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Output:
    """One thing an op returns.

    ``filename`` names it wherever it becomes a file (HTTP job files, batch). ``flags`` are
    the CLI options that write it, each with the suffixes it accepts (the main image is
    ``-o``). ``on_request`` outputs cost extra and are made only when asked for.
    ``place`` tells the add-ons where a result goes: a new ``layer`` (Krita) / image
    (Blender), a new layer ``under`` the source layer (Krita: colour under line art; an
    image in Blender, as ``layer``), a ``texture`` (a Blender image that can feed a
    material), a ``vector`` layer (SVG), or a ``file`` to keep beside the document.

    A ``series`` output may come as several items (``--variations K``): the op returns the
    first under the output's name and the others under ``name.2``, ``name.3``, ... in order
    (:func:`series_key`), in ``OpOutcome.values`` and in the wire ``OpResult`` alike (whose maps
    keep no order: :meth:`items_in` and :func:`split_series_key` give it back); their
    files are ``OUT.png``, ``OUT.2.png``, ... (:func:`series_filename`), and add-ons place
    one layer per item. An op that returns one item returns just the name, as usual.
    """

    name: str
    kind: str
    help: str
    filename: str
    mime: str = "image/png"
    flags: tuple[tuple[str, tuple[str, ...]], ...] = ()
    on_request: bool = False
    place: str = "layer"
    save: Callable[[Any, str], None] | None = None  # writer for local files by suffix (default: by kind)
    series: bool = False  # several items may come: name, name.2, name.3, ... (see the class docstring)

    def __post_init__(self) -> None:
        if self.kind not in KINDS or self.place not in PLACES:
            raise ValueError(f"output '{self.name}': kind must be one of {KINDS}, place one of {PLACES}")
        if self.series and "." in self.name:
            raise ValueError(f"output '{self.name}': a series output's name has no '.' (its items are name.2, ...)")

    def items_in(self, values: Mapping[str, Any]) -> list[tuple[int, str, Any]]:
        """(index from 1, key, value) of each of this output's items in a result's ``values``, in order.

        One item (the name) for a plain output; a series goes on while ``name.2``, ``name.3``, ... are there.
        """
        found = []
        while (key := series_key(self.name, len(found) + 1)) in values and (self.series or not found):
            found.append((len(found) + 1, key, values[key]))
        return found


def series_key(name: str, index: int) -> str:
    """The result key of item ``index`` (from 1) of output ``name``: ``image``, ``image.2``, ``image.3``, ..."""
    return name if index == 1 else f"{name}.{index}"


def split_series_key(key: str) -> tuple[str, int]:
    """(output name, item index) of a result key: ``image.3`` -> (``image``, 3), ``image`` -> (``image``, 1)."""
    name, dot, tail = key.rpartition(".")
    if dot and tail.isdigit() and int(tail) >= 2 and str(int(tail)) == tail:
        return name, int(tail)
    return key, 1


def series_filename(filename: str, index: int) -> str:
    """The file name of item ``index`` of a series: ``image.png``, ``image.2.png``, ``image.3.png``, ...

    The index goes before the last suffix (after the whole name when there is none); item 1
    keeps the name. Paths: apply it to the file name alone (``path.with_name``)."""
    if index == 1:
        return filename
    stem, dot, suffix = filename.rpartition(".")
    return f"{stem}.{index}.{suffix}" if dot and stem else f"{filename}.{index}"


def series_path(path: str, index: int) -> str:
    """Where item ``index`` of a series written to ``path`` goes: ``out/a.png``, ``out/a.2.png``, ... (CLI, batch)."""
    p = Path(path)
    return path if index == 1 else str(p.with_name(series_filename(p.name, index)))


@dataclass
class RunContext:
    """What a run function gets besides its inputs: where to run, progress, models, a cache.

    ``progress(level, levels, step, total, loss, preview)`` may raise to stop the run
    (cancellation); ``preview`` is a callable giving the current image. ``infer(model,
    arrays)`` runs a feed-forward model on the engine (the server's batcher, or a local
    backend). ``cache`` lives as long as the worker (a batch runner keeps feature networks there;
    a server's engine jobs share one, from threads side by side: an op guards its own entries).

    An op runs another registered op with :meth:`run_op` (``warp --style``: the warp, then
    ``stylize`` on it). By default that runs here, in this process, with this context; a runtime
    that runs the other op elsewhere sets ``chain``, a callable with :meth:`run_op`'s signature
    (the server: the sidecar, ``impasto.runtime.server.chain``).
    """

    device: str = "cpu"
    max_side: int = 16384
    vgg_weights: str | None = None
    progress: Callable[..., None] | None = None
    infer: Callable[[str, dict], dict] | None = None
    cache: dict = field(default_factory=dict)
    # a repository model's config parameters ("impasto.labels", "impasto.stride", ...), where infer runs
    model_parameters: Callable[[str], dict[str, str]] | None = None
    # chain(name, images, options) -> OpOutcome: where run_op runs another op (None: in this process)
    chain: Callable[[str, dict[str, Any], dict[str, Any]], OpOutcome] | None = None

    def run_op(self, name: str, images: dict[str, Any], options: dict[str, Any]) -> OpOutcome:
        """Run the registered op ``name`` on ``images`` (slot -> (C, H, W) float tensor in [0, 1], laid out as the
        slot's role decodes: RGB, RGBA, a (1, H, W) mask) with user ``options`` (JSON values by option name; unset
        ones take their defaults); returns its outcome, with ``seconds`` in its numbers.

        Through ``chain`` when it is set; otherwise here, with this context (its device, cache and progress), after
        the op's every rule (:func:`impasto.runtime.ops.request.run_tensors`: errors name the fields as
        ``NAME.options.X`` / ``NAME.images.X``). The op's optional outputs are not asked for.
        """
        if self.chain is not None:
            return self.chain(name, images, options)
        from impasto.runtime.ops.request import run_tensors  # request.py imports this module

        return run_tensors(get_op(name), images, options, self)

    def report(self, level: int, levels: int, step: int, total: int, loss: float, preview: Callable[[], Any]) -> None:
        if self.progress is not None:
            self.progress(level, levels, step, total, loss, preview)


@dataclass
class OpOutcome:
    """A run's result: output values by name (tensor, str or bytes) and plain numbers."""

    values: dict[str, Any]
    numbers: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class OpSpec:
    """The one definition of an operation."""

    name: str
    help: str  # one line (CLI listing, Capabilities)
    description: str  # the longer text of `impasto OP --help`
    options: type  # dataclass with option() fields
    images: tuple[ImageSlot, ...]
    outputs: tuple[Output, ...]
    run: Callable[[RunContext, dict, Any, set[str]], OpOutcome]  # (ctx, images, options, wanted outputs)
    runs_in: str = "sidecar"  # sidecar (torch optimisation) | engine (feed-forward ONNX models)
    models: tuple[str, ...] = ()  # repository models an engine op needs
    # the models one request runs, from its options and the slots it gives (default: ``models``): a server refuses a
    # request only for a model that request would use (``warp --apply`` runs no model)
    needs: Callable[[Any, frozenset[str]], tuple[str, ...]] | None = None
    # op-specific rules beyond each option's range: (options, image sizes {slot: (H, W)}, max_side, label) -> None,
    # raising an InvalidArgument error (impasto.runtime.errors) whose message spells fields with label(name)
    check: Callable[[Any, dict[str, tuple[int, int]], int, Callable[[str], str]], None] | None = None
    internal: Callable[[RunContext], dict[str, Any]] | None = None  # option-dataclass fields set from the context
    # the op's fast settings, (option name, value) pairs that a live (paint-and-see) run sets over the user's values
    # (paint: ``(("predict", True), ("refine", 0))``); non-empty, the add-ons offer Live mode whatever the slots
    live: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.runs_in not in ("sidecar", "engine"):
            raise ValueError(f"op '{self.name}': runs_in must be 'sidecar' or 'engine'")
        self._check_live()
        for what, names in (("image slot", [s.name for s in self.images]), ("output", [o.name for o in self.outputs])):
            if len(set(names)) != len(names):
                raise ValueError(f"op '{self.name}': {what} names must be unique")
        optional = {s.name for s in self.images if not s.required}
        for slot in self.images:
            if slot.unless is not None and slot.unless not in optional:
                raise ValueError(f"op '{self.name}': slot '{slot.name}' unless '{slot.unless}': name an optional slot")

    def _check_live(self) -> None:
        """Each live setting names a user-facing option once, with a value of its type that the option accepts."""
        if not self.live:
            return
        specs = {o.name: o for o in options_of(self.options)}
        seen: set[str] = set()
        for entry in self.live:
            if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str)):
                raise ValueError(f"op '{self.name}': live holds (option name, value) pairs, got {entry!r}")
            name, value = entry
            label = f"op '{self.name}': live setting '{name}'"
            if name not in specs:
                raise ValueError(f"{label}: not one of the op's options ({', '.join(specs) or 'none'})")
            if name in seen:
                raise ValueError(f"{label}: given twice")
            seen.add(name)
            spec = specs[name]
            kinds = (int, float) if spec.type is float else (spec.type,)
            if not isinstance(value, kinds) or (isinstance(value, bool) and spec.type is not bool):
                raise ValueError(f"{label} must be {_KIND_TEXT[spec.type_name]}, got {value!r}")
            try:
                spec.check(value, label)
            except OptionError as e:
                raise ValueError(str(e)) from None

    def option_specs(self) -> list[OptionSpec]:
        return options_of(self.options)

    @property
    def live_options(self) -> dict[str, Any]:
        """The live settings as request options (name -> value): a live run's options are the user's, updated with
        these."""
        return dict(self.live)

    def models_for(self, options: Any, given: Iterable[str]) -> tuple[str, ...]:
        """The repository models a request with these options and image slots runs."""
        return self.models if self.needs is None else self.needs(options, frozenset(given))

    def slot(self, name: str) -> ImageSlot:
        return next(s for s in self.images if s.name == name)

    @property
    def primary_output(self) -> Output:
        return self.outputs[0]


_REGISTRY: dict[str, OpSpec] = {}
_loaded = False


def register_op(spec: OpSpec) -> OpSpec:
    """Make ``spec`` available to every layer; re-registering a name replaces it."""
    _REGISTRY[spec.name] = spec
    return spec


def _load() -> None:
    """Import the modules that register ops: built-ins, the ``impasto.ops`` entry points, ``IMPASTO_OPS``."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    modules = list(BUILTIN)
    try:
        modules += [ep.value for ep in metadata.entry_points(group="impasto.ops")]
    except Exception:  # a broken installed plugin must not take the built-in ops down
        log.exception("reading the impasto.ops entry points failed")
    modules += [m.strip() for m in os.environ.get("IMPASTO_OPS", "").split(",") if m.strip()]
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception:  # a broken plugin must not take the other ops down; say so loudly
            log.exception("cannot load the ops of module '%s' (IMPASTO_OPS or an impasto.ops entry point)", module)


def list_ops() -> list[str]:
    _load()
    return sorted(_REGISTRY)


def get_op(name: str) -> OpSpec:
    _load()
    if name not in _REGISTRY:
        raise UnknownOpError(f"unknown op '{name}': this server has {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]
