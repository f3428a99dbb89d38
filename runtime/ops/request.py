"""One request path for every op: check it, decode its images, run it.

An :class:`OpRequest` is what a user asks for, however it arrived: an op name, images by
slot, option values and the optional outputs wanted. Images are :class:`ImageSource`\\ s,
which can say their size from a header (so a server checks a request without decoding
pixels) and decode themselves as their slot's role needs. Files on disk
(:class:`FileImage`) and wire images (``impasto.runtime.api.convert.WireImage``) are the
two kinds. :func:`prepare` applies every rule of the op's definition, and :func:`run_op`
runs it; the CLI, the sidecar, the server's engine path and batch all call these two.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from impasto.runtime.errors import InvalidArgument
from impasto.runtime.images import ImageInputError, decode_image, decode_rgba, image_size, load_example
from impasto.runtime.ops.registry import RGBA_ROLES, OpOutcome, OpSpec, RunContext
from impasto.train.options import read_options


class ImageSource(Protocol):
    def dims(self, label: str, max_side: int) -> tuple[int, int]:
        """(H, W) from the header alone; raises an InvalidArgument error naming ``label``."""

    def decode(self, role: str, label: str, max_side: int) -> torch.Tensor:
        """The pixels as the role needs them: mask (1, H, W), RGBA_ROLES (4, H, W), else (3, H, W) in [0, 1]."""


@dataclass(frozen=True)
class FileImage:
    """An image file (or ``example:NAME``, a scikit-image sample photo), read when needed."""

    path: str

    def _bytes(self, label: str) -> bytes:
        p = Path(self.path)
        if p.is_dir():
            raise ImageInputError(f"{label} '{self.path}' is a folder, not an image file")
        if not p.is_file():
            raise ImageInputError(f"{label} '{self.path}' does not exist")
        return p.read_bytes()

    def dims(self, label: str, max_side: int) -> tuple[int, int]:
        if self.path.startswith("example:"):
            return tuple(load_example(self.path.split(":", 1)[1]).shape[1:])  # type: ignore[return-value]
        w, h = image_size(self._bytes(label), max_side=max_side, what=f"{label} '{self.path}'")
        return h, w

    def decode(self, role: str, label: str, max_side: int) -> torch.Tensor:
        if self.path.startswith("example:"):
            return by_role(load_example(self.path.split(":", 1)[1]), role)
        data = self._bytes(label)
        what = f"{label} '{self.path}'"
        if role in RGBA_ROLES:
            return decode_rgba(data, max_side=max_side, what=what)
        return by_role(decode_image(data, max_side=max_side, what=what), role)


def by_role(rgb: torch.Tensor, role: str) -> torch.Tensor:
    """A decoded (3, H, W) image as its slot's role needs it (a mask is the mean of RGB)."""
    if role == "mask":
        return rgb.mean(0, keepdim=True)
    if role in RGBA_ROLES:
        return torch.cat([rgb, torch.ones_like(rgb[:1])])
    return rgb


@dataclass
class OpRequest:
    """An op name, images by slot, user option values (unset ones take defaults), optional outputs."""

    op: str
    images: dict[str, ImageSource] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    outputs: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Labels:
    """How fields are spelled in messages: ``options.lr`` on the wire (the default); the CLI builds
    its own from the op's flags (``--lr``, ``--no-balance``, ``IMAGE``, ``--mask``)."""

    option: Callable[[str], str] = lambda n: f"options.{n}"
    image: Callable[[str], str] = lambda n: f"images.{n}"


WIRE = Labels()


def prepare(spec: OpSpec, request: OpRequest, ctx: RunContext, labels: Labels = WIRE) -> tuple[Any, dict[str, tuple[int, int]]]:
    """The op's options dataclass and the images' sizes, after every rule of the definition.

    Image sizes come from headers; nothing is decoded. Raises InvalidArgument errors that
    name the field and the limit.
    """
    slots = {s.name: s for s in spec.images}
    unknown = sorted(set(request.images) - set(slots))
    if unknown:
        raise InvalidArgument(f"{labels.image(unknown[0])}: {spec.name} takes no such image "
                              f"(images: {', '.join(slots)})")
    wanted_unknown = sorted(request.outputs - {o.name for o in spec.outputs if o.on_request})
    if wanted_unknown:
        raise InvalidArgument(f"outputs: '{wanted_unknown[0]}' is not an optional output of {spec.name} "
                              f"(optional: {', '.join(o.name for o in spec.outputs if o.on_request) or 'none'})")
    dims: dict[str, tuple[int, int]] = {}
    for slot in spec.images:
        label = labels.image(slot.name)
        source = request.images.get(slot.name)
        if source is None:
            if slot.required:
                raise InvalidArgument(f"{label}: {spec.name} needs this image ({slot.help})")
            continue
        h, w = dims[slot.name] = source.dims(label, ctx.max_side)
        if min(h, w) < slot.min_side:
            raise InvalidArgument(f"{label} is {w}x{h}; {spec.name} needs at least {slot.min_side} px a side")
    for slot in spec.images:
        if slot.name not in dims:
            continue
        if slot.together_with and slot.together_with not in dims:
            raise InvalidArgument(f"give both {labels.image(slot.name)} and {labels.image(slot.together_with)}, "
                                  "or neither")
        other = slot.same_size_as
        if other and other in dims and dims[other] != dims[slot.name]:
            (h, w), (oh, ow) = dims[slot.name], dims[other]
            raise InvalidArgument(f"{labels.image(slot.name)} is {w}x{h}, {labels.image(other)} is {ow}x{oh}: "
                                  "they must match")
    options = read_options(spec.options, request.options, label=labels.option,
                           internal=spec.internal(ctx) if spec.internal else None)
    if spec.check is not None:
        spec.check(options, dims, ctx.max_side, labels.option)
    return options, dims


def decode_images(spec: OpSpec, request: OpRequest, ctx: RunContext, labels: Labels = WIRE) -> dict[str, torch.Tensor]:
    """Every given image, decoded for its slot's role, checked finite."""
    images = {}
    for slot in spec.images:
        if slot.name in request.images:
            t = request.images[slot.name].decode(slot.role, labels.image(slot.name), ctx.max_side)
            if not torch.isfinite(t).all():
                raise InvalidArgument(f"{labels.image(slot.name)} contains NaN or infinite values")
            images[slot.name] = t
    return images


def run_op(spec: OpSpec, request: OpRequest, ctx: RunContext, labels: Labels = WIRE) -> OpOutcome:
    """Check, decode and run ``request``; adds ``seconds`` (of the run itself) to the numbers."""
    options, _ = prepare(spec, request, ctx, labels)
    images = decode_images(spec, request, ctx, labels)
    start = time.perf_counter()
    outcome = spec.run(ctx, images, options, set(request.outputs))
    outcome.numbers.setdefault("seconds", time.perf_counter() - start)
    return outcome


def use_local_models(ctx: RunContext, repo: str | None, backend: str = "auto") -> None:
    """Let engine ops run in this process: ``ctx.infer`` through one backend per model (loaded on first use from
    ``repo``, kept in ``ctx.cache``) and ``ctx.model_parameters`` from the repository's configs.

    The local CLI (``impasto OP``) and the batch runner use this; the server gives its own (the model pool).
    """
    from impasto.export.repository import read_model

    def infer(model: str, arrays: dict) -> dict:
        from impasto.runtime.backends import load_backend

        key = ("backend", model)
        if key not in ctx.cache:
            ctx.cache[key] = load_backend(repo, model, backend)
        return ctx.cache[key].infer(arrays)

    def parameters(model: str) -> dict[str, str]:
        key = ("parameters", model)  # the config is parsed once, not on every run (a batch runs many)
        if key not in ctx.cache:
            ctx.cache[key] = read_model(repo, model).parameters
        return ctx.cache[key]

    ctx.infer = infer
    ctx.model_parameters = parameters


def image_numbers(image: torch.Tensor) -> dict[str, float]:
    """width and height of a (C, H, W) result, for OpOutcome.numbers."""
    return {"width": int(image.shape[2]), "height": int(image.shape[1])}


def split_params(spec: OpSpec, values: Mapping[str, Any], resolve: Callable[[str], str] = str
                 ) -> tuple[dict[str, Any], dict[str, str]]:
    """User parameters (a batch ``[params]`` table) split into option values and image files.

    A key naming one of the op's image slots is a file; an option declared with ``or_image``
    whose value names an existing file fills that slot instead (paint's ``canvas``). Paths go
    through ``resolve`` (a batch spec resolves them against its own folder).
    """
    slots = {s.name for s in spec.images}
    or_image = {o.name: o.or_image for o in spec.option_specs() if o.or_image}
    options: dict[str, Any] = {}
    files: dict[str, str] = {}
    for key, value in values.items():
        if key in slots:
            if not isinstance(value, str):
                raise InvalidArgument(f"params.{key} must be an image file path, got {value!r}")
            files[key] = resolve(value)
        elif key in or_image and isinstance(value, str) and Path(resolve(value)).is_file():
            files[or_image[key]] = resolve(value)
        else:
            options[key] = value
    return options, files
