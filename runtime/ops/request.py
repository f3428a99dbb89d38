"""One request path for every op: check it, decode its images, run it.

An :class:`OpRequest` is what a user asks for, however it arrived: an op name, images by
slot, option values and the optional outputs wanted. Images are :class:`ImageSource`\\ s,
which can say their size from a header (so a server checks a request without decoding
pixels) and decode themselves as their slot's role needs. Files on disk
(:class:`FileImage`) and wire images (``impasto.runtime.api.convert.WireImage``) are the
two kinds; an op running another in this process (``RunContext.run_op``) hands over tensors
(:class:`TensorImage`, :func:`run_tensors`). A slot of role ``flow`` takes a file instead of
pixels (a warp field, :mod:`impasto.runtime.formats.flow`): the same sources carry its bytes,
and measure and decode it by its role. :func:`prepare` applies every rule of the op's
definition, and :func:`run_op` runs it; the CLI, the sidecar, the server's engine path and
batch all call these two.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from impasto.runtime.errors import InvalidArgument
from impasto.runtime.formats.flow import flow_shape, read_flow
from impasto.runtime.images import ImageInputError, decode_image, decode_rgba, image_size, load_example
from impasto.runtime.ops.registry import RGBA_ROLES, OpOutcome, OpSpec, RunContext
from impasto.train.options import read_options


class ImageSource(Protocol):
    def dims(self, label: str, max_side: int, role: str = "image") -> tuple[int, int]:
        """(H, W) from the header alone (a flow: its cells); raises an InvalidArgument error naming ``label``."""

    def decode(self, role: str, label: str, max_side: int) -> torch.Tensor:
        """The pixels as the role needs them: mask (1, H, W), RGBA_ROLES (4, H, W), flow (2, h, w), else (3, H, W)
        in [0, 1]."""


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

    def dims(self, label: str, max_side: int, role: str = "image") -> tuple[int, int]:
        if self.path.startswith("example:"):
            if role == "flow":
                raise InvalidArgument(f"{label} '{self.path}' is a sample photo; it takes a flow file (.npz)")
            return tuple(load_example(self.path.split(":", 1)[1]).shape[1:])  # type: ignore[return-value]
        if role == "flow":
            return flow_shape(self._bytes(label), f"{label} '{self.path}'", max_side)
        w, h = image_size(self._bytes(label), max_side=max_side, what=f"{label} '{self.path}'")
        return h, w

    def decode(self, role: str, label: str, max_side: int) -> torch.Tensor:
        if self.path.startswith("example:"):
            if role == "flow":
                raise InvalidArgument(f"{label} '{self.path}' is a sample photo; it takes a flow file (.npz)")
            return by_role(load_example(self.path.split(":", 1)[1]), role)
        data = self._bytes(label)
        what = f"{label} '{self.path}'"
        if role == "flow":
            return torch.from_numpy(read_flow(data, what, max_side))
        if role in RGBA_ROLES:
            return decode_rgba(data, max_side=max_side, what=what)
        return by_role(decode_image(data, max_side=max_side, what=what), role)


def by_role(rgb: torch.Tensor, role: str) -> torch.Tensor:
    """A decoded (3, H, W) image as its slot's role needs it (a mask is the mean of RGB; RGBA: opaque)."""
    if role == "mask":
        return rgb.mean(0, keepdim=True)
    if role in RGBA_ROLES:
        return torch.cat([rgb, torch.ones_like(rgb[:1])])
    return rgb


@dataclass(frozen=True)
class TensorImage:
    """A tensor already decoded, (C, H, W) in [0, 1] (a flow: (2, h, w)), as an op's image source: what an op
    hands to another in this process (:meth:`RunContext.run_op`). It is converted to the slot's role as a file
    would be: RGBA composited on white for an RGB role, opaque alpha added for an RGBA one, the mean for a mask."""

    tensor: torch.Tensor

    def dims(self, label: str, max_side: int, role: str = "image") -> tuple[int, int]:
        t = self.tensor
        channels = (2,) if role == "flow" else (1, 3, 4)
        if t.dim() != 3 or t.shape[0] not in channels:
            raise InvalidArgument(f"{label}: a tensor of shape {tuple(t.shape)}; give (C, H, W) with C in "
                                  f"{', '.join(map(str, channels))}")
        h, w = int(t.shape[1]), int(t.shape[2])
        if max(h, w) > max_side:
            raise InvalidArgument(f"{label} is {w}x{h}; the limit is {max_side} px a side")
        return h, w

    def decode(self, role: str, label: str, max_side: int) -> torch.Tensor:
        self.dims(label, max_side, role)
        t = self.tensor.detach().float()
        if role == "flow":
            return t
        t = t.clamp(0, 1)
        if t.shape[0] == 1:
            t = t.expand(3, -1, -1)
        if t.shape[0] == 4 and role not in RGBA_ROLES:
            t = t[:3] * t[3:] + (1 - t[3:])
        if t.shape[0] == 4:
            return t
        return by_role(t.contiguous(), role)


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
    given = set(request.images)
    unknown = sorted(given - set(slots))
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
            if slot.missing_from(given):
                if slot.unless is not None:
                    raise InvalidArgument(f"{label}: give {slot.help}, or {labels.image(slot.unless)}: "
                                          f"{slots[slot.unless].help}")
                raise InvalidArgument(f"{label}: {spec.name} needs this image ({slot.help})")
            continue
        if slot.unless is not None and slot.unless in given:
            raise InvalidArgument(f"{label} and {labels.image(slot.unless)}: give one of them, not both")
        h, w = dims[slot.name] = source.dims(label, ctx.max_side, slot.role)
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
            t = request.images[slot.name].decode(slot.decode_role, labels.image(slot.name), ctx.max_side)
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


def run_tensors(spec: OpSpec, images: Mapping[str, torch.Tensor], options: Mapping[str, Any], ctx: RunContext,
                wanted: set[str] | None = None) -> OpOutcome:
    """Run ``spec`` here on tensors (:class:`TensorImage`) and user ``options``, after every rule of its definition;
    fields are named ``OP.images.SLOT`` and ``OP.options.NAME``. The in-process :meth:`RunContext.run_op`."""
    labels = Labels(option=lambda n: f"{spec.name}.options.{n}", image=lambda n: f"{spec.name}.images.{n}")
    request = OpRequest(spec.name, {name: TensorImage(t) for name, t in images.items()}, dict(options),
                        set(wanted or ()))
    return run_op(spec, request, ctx, labels)


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
