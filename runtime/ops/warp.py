"""The ``warp`` op: geometric style (Learning to Warp, Liu et al. 2021), a warper on the engine, then stylize.

``impasto warp CONTENT GEOMETRY -o OUT.png [--style TEXTURE] [--strength 0..1] [--flow FLOW.npz] [--warped W.png]``
``impasto warp --apply FLOW.npz IMAGE -o OUT.png``

The warper (``warp_demo``: VGG-19 features, their correlation and the recurrent field estimator,
one ONNX graph, :mod:`impasto.train.models.warper`) sees the content and the geometry exemplar
resized to its side (``impasto.side``; any aspect, the flow is normalised) and returns a coarse
field on its grid (``impasto.grid`` cells a side): a backward warp in normalised coordinates,
``out(x) = content(x + flow(x))``, so that the content takes the exemplar's shapes.
``--strength`` scales the field (0: the identity, 1: the whole warp).

The field is applied at the content's full resolution outside the graph (:func:`apply_flow`:
the bilinear upsample of the field, ``grid_sample`` with border padding, as
:func:`~impasto.train.models.warper.warp_image` does in training), in strips of rows on a large
picture. The content's alpha is warped along (premultiplied, so no dark fringes come in from
transparent pixels): a layer with transparency stays a layer.

With ``--style TEXTURE`` the warped picture is then restyled by the ``stylize`` op (histogram
losses, coarse to fine), run through :meth:`RunContext.run_op`: in this process from the command
line, on the sidecar on a server. ``--features``, ``--content-weight``, ``--seed`` and
``--style-iterations`` (its ``iterations``) go to it.

The field is an output (``--flow FLOW.npz``, :mod:`impasto.runtime.formats.flow`) so that it can
move other layers of a drawing the same way: ``--apply FLOW.npz`` takes it instead of a
geometry exemplar, and the warper does not run (no model is needed then).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from impasto.runtime.errors import FailedPrecondition, InvalidArgument
from impasto.runtime.formats.flow import write_flow
from impasto.runtime.images import resize
from impasto.runtime.ops.registry import ImageSlot, OpOutcome, OpSpec, Output, RunContext, register_op
from impasto.runtime.ops.request import image_numbers
from impasto.runtime.ops.served import PREFIX
from impasto.runtime.ops.synthesis import MIN_SIDE as STYLE_MIN_SIDE
from impasto.train.models.warper import warp_image
from impasto.train.options import option

__all__ = ["WARP", "WarpModel", "WarpOpInputError", "WarpOptions", "apply_flow", "estimate_flow", "warp_model"]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "warp_demo"
MIN_SIDE = 8  # px: a smaller picture has no shape to warp
STRIP_PIXELS = 1 << 22  # full-resolution pixels warped at a time (a grid and a field of 2 floats each per pixel)


class WarpOpInputError(InvalidArgument):
    """A picture, flow or model the warp op cannot use; the message names the field and the limit."""


@dataclass(frozen=True)
class WarpModel:
    """What the op needs to know about a served warper, from its repository config."""

    name: str
    side: int  # content and exemplar go in at side x side
    grid: int  # the flow comes out grid x grid
    max_shift: float  # |flow| bound (normalised)


def warp_model(name: str, parameters: dict[str, str]) -> WarpModel:
    """The op's view of model ``name`` from its config ``parameters``; an error if it is not a warp model."""
    if parameters.get(f"{PREFIX}kind") != "warp":
        raise WarpOpInputError(
            f"model '{name}' is not a warp model (its config says kind '{parameters.get(f'{PREFIX}kind', '')}'); "
            f"choose one exported from a warp checkpoint, such as {DEFAULT_MODEL}")
    try:
        side, grid = int(parameters[f"{PREFIX}side"]), int(parameters[f"{PREFIX}grid"])
        max_shift = float(parameters.get(f"{PREFIX}max_shift", "1.0"))
        if min(side, grid) < 1 or not 0 < max_shift <= 2:
            raise ValueError("side and grid must be positive, max_shift in (0, 2]")
    except (KeyError, ValueError) as e:
        raise FailedPrecondition(f"model '{name}': its config lacks a valid {PREFIX}side or {PREFIX}grid ({e}); "
                                 "export it again with `impasto export`") from None
    return WarpModel(name, side, grid, max_shift)


def _rgb(image: torch.Tensor) -> torch.Tensor:
    """(3 or 4, H, W) -> (3, H, W): alpha composited on white (what the warper and stylize see)."""
    if image.shape[0] == 4:
        return image[:3] * image[3:] + (1 - image[3:])
    return image


def estimate_flow(ctx: RunContext, model: WarpModel, content: torch.Tensor, geometry: torch.Tensor) -> torch.Tensor:
    """(2, grid, grid) field that warps ``content`` toward ``geometry``'s shapes (both (3, H, W) in [0, 1])."""
    def batch(image: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(resize(image.float(), model.side, model.side).clamp(0, 1).numpy()[None], np.float32)

    out = ctx.infer(model.name, {"content": batch(content), "exemplar": batch(geometry)})["flow"]  # type: ignore[misc]
    flow = np.asarray(out, np.float32)
    if flow.shape != (1, 2, model.grid, model.grid) or not np.isfinite(flow).all():
        raise FailedPrecondition(f"model '{model.name}' returned a flow of shape {flow.shape} (finite: "
                                 f"{bool(np.isfinite(flow).all())}); its config says (1, 2, {model.grid}, "
                                 f"{model.grid}): export it again")
    return torch.from_numpy(flow[0].copy())


def _strip(image: torch.Tensor, flow: torch.Tensor, top: int, bottom: int) -> torch.Tensor:
    """Rows ``top:bottom`` of :func:`warp_image`'s result, computed for those rows alone.

    ``grid_sample`` of the coarse field at the output pixels' centres (border padding) is its
    bilinear upsample (``align_corners=False``) restricted to those rows."""
    _, height, width = image.shape
    xs = (torch.arange(width, dtype=torch.float32) * 2 + 1) / width - 1
    ys = (torch.arange(top, bottom, dtype=torch.float32) * 2 + 1) / height - 1
    base = torch.stack([xs.view(1, -1).expand(len(ys), width), ys.view(-1, 1).expand(len(ys), width)], -1)[None]
    dense = F.grid_sample(flow[None], base, mode="bilinear", padding_mode="border", align_corners=False)
    return F.grid_sample(image[None], base + dense.permute(0, 2, 3, 1), mode="bilinear", padding_mode="border",
                         align_corners=False)[0]


def apply_flow(image: torch.Tensor, flow: torch.Tensor, strip_pixels: int = STRIP_PIXELS) -> torch.Tensor:
    """(C, H, W) ``image`` warped by the (2, h, w) field at full resolution: ``out(x) = image(x + flow(x))``.

    RGBA (C = 4) is warped premultiplied and returned straight. Pictures over ``strip_pixels``
    go in strips of rows (the same result, without an (H, W) field and grid at once).
    """
    image, flow = image.float(), flow.float()
    if not bool(flow.any()):  # the identity (strength 0): the picture as it is, not resampled
        return image.clamp(0, 1)
    alpha = image.shape[0] == 4
    if alpha:
        image = torch.cat([image[:3] * image[3:], image[3:]])
    _, height, width = image.shape
    if height * width <= strip_pixels:
        out = warp_image(image[None], flow[None])[0]
    else:
        rows = max(1, strip_pixels // width)
        out = torch.cat([_strip(image, flow, top, min(top + rows, height)) for top in range(0, height, rows)], 1)
    if alpha:
        a = out[3:].clamp(0, 1)
        out = torch.cat([torch.where(a > 1e-6, out[:3] / a.clamp_min(1e-6), torch.zeros_like(out[:3])), a])
    return out.clamp_(0, 1)


def _opaque(image: torch.Tensor) -> torch.Tensor:
    """RGB when the alpha is all opaque (a plain picture gives a plain picture back), else RGBA as it is."""
    if image.shape[0] == 4 and bool((image[3] >= 1 - 1 / 512).all()):
        return image[:3].contiguous()
    return image


# -- the op -------------------------------------------------------------------------------------------------


@dataclass
class WarpOptions:
    model: str = option(DEFAULT_MODEL, "the warp model of the model repository to run (not used with --apply)")
    strength: float = option(1.0, "how much of the warp to apply: the field is scaled by it (0: none, 1: all)",
                             min=0.0, max=1.0)
    features: str = option("vgg19", "--style: VGG-19 with ImageNet weights (see IMPASTO_VGG_WEIGHTS) or the "
                           "random-weight stand-in (weak, for testing)", choices=("vgg19", "random"))
    content_weight: float = option(1.0, "--style: weight of the warped content against the style", min=0.0, max=1e6)
    seed: int = option(0, "--style: random seed of the styling", min=0, max=2**31 - 1)
    style_iterations: int = option(100, "--style: optimisation steps per scale of the styling (stylize's "
                                   "--iterations)", min=1, max=100_000)


def _check(options: WarpOptions, dims: dict[str, tuple[int, int]], max_side: int, label) -> None:
    if "style" in dims and min(dims["content"]) < STYLE_MIN_SIDE:
        h, w = dims["content"]
        raise WarpOpInputError(f"the content is {w}x{h}; with a style exemplar (the stylize step) it needs at least "
                               f"{STYLE_MIN_SIDE} px a side")


def _run(ctx: RunContext, images: dict[str, torch.Tensor], options: WarpOptions, wanted: set[str]) -> OpOutcome:
    content = images["content"]  # (4, H, W): the slot keeps its alpha
    if "apply" in images:
        flow, model_name = images["apply"].float(), ""
    else:
        if ctx.infer is None or ctx.model_parameters is None:
            raise FailedPrecondition("warp runs on the engine: no model backend is available here (or give --apply "
                                     "FLOW.npz, which needs none)")
        model = warp_model(options.model, ctx.model_parameters(options.model))
        flow, model_name = estimate_flow(ctx, model, _rgb(content), images["geometry"]), model.name
    flow = flow * options.strength
    warped = _opaque(apply_flow(content, flow))
    image = warped
    numbers = {}
    if "style" in images:
        styled = ctx.run_op("stylize", {"content": _rgb(warped), "style": images["style"]},
                            {"features": options.features, "content_weight": options.content_weight,
                             "seed": options.seed, "iterations": options.style_iterations})
        image = styled.values["image"][:3].float()
        if warped.shape[0] == 4:
            image = torch.cat([image, warped[3:]])
        numbers["style_seconds"] = float(styled.numbers.get("seconds", 0.0))
    values = {"image": image}
    if "warped" in wanted:
        values["warped"] = warped
    if "flow" in wanted:
        values["flow"] = write_flow(flow.numpy(), model=model_name)
    height, width = content.shape[1:]
    shift = torch.hypot(flow[0] * width / 2, flow[1] * height / 2)  # px at the content's size
    numbers.update(image_numbers(image), grid_height=float(flow.shape[1]), grid_width=float(flow.shape[2]),
                   mean_shift_px=float(shift.mean()), max_shift_px=float(shift.max()), applied=float("apply" in images))
    return OpOutcome(values, numbers)


WARP = register_op(OpSpec(
    name="warp",
    help="geometric style (Learning to Warp): warp a picture toward an exemplar's shapes, then optionally style it",
    description="Geometric style transfer (Liu et al., Learning to Warp, CVPR 2021): a feed-forward warper (VGG-19 "
    "features, their correlation, a recurrent field estimator) moves the content so that its shapes follow the "
    "geometry exemplar's; --strength scales the warp. --style TEXTURE then restyles the warped picture (the stylize "
    "op: histogram losses, coarse to fine; --features, --content-weight, --seed and --style-iterations go to it). The "
    "field is applied at full resolution and keeps the content's transparency. --flow FLOW.npz saves the field; "
    "--apply FLOW.npz warps another picture (another layer of the drawing) the same way, in place of a geometry "
    "exemplar. See docs/warp.md.",
    options=WarpOptions,
    images=(
        ImageSlot("content", "the picture to warp (its transparency is kept)", min_side=MIN_SIDE, alpha=True),
        ImageSlot("geometry", "a geometry exemplar (the picture whose shapes the content takes)", min_side=MIN_SIDE,
                  unless="apply"),
        ImageSlot("style", "a texture exemplar: style the warped picture after it (the stylize op)", role="style",
                  required=False, min_side=STYLE_MIN_SIDE),
        ImageSlot("apply", "a flow file (.npz) written by --flow, to apply instead of a new warp", role="flow",
                  required=False),
    ),
    outputs=(
        Output("image", "image", "the content warped toward the exemplar's shapes (then styled, with --style)",
               "image.png"),
        Output("warped", "image", "the warped picture before the styling", "warped.png",
               flags=(("--warped", (".png",)),), on_request=True),
        Output("flow", "file", "the warp field (.npz), to warp other layers the same way with --apply", "flow.npz",
               "application/octet-stream", flags=(("--flow", (".npz",)),), on_request=True, place="file"),
    ),
    run=_run,
    runs_in="engine",
    models=(DEFAULT_MODEL,),
    needs=lambda options, given: () if "apply" in given else (options.model,),
    check=_check,
))
