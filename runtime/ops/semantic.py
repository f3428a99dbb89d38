"""The ``semantic`` op: a picture from a label map (SPADE / GauGAN, Park et al. 2019), on the engine.

``impasto semantic LABELS.png -o OUT.png [--style IMAGE] [--seed N] [--model NAME]``

The label map is either an *index image* (grey: each pixel's value is its class index) or
*colour-coded* with the model's label table (``impasto labels MODEL`` prints it). The table,
the generator's stride and its style-code size come from the model's repository config
(``impasto.labels``, ``impasto.stride``, ``impasto.z_dim``, written by ``impasto export``),
read through ``RunContext.model_parameters``, so a label map is read the way the model was
trained wherever the op runs (CLI, server, batch). The style code is drawn from ``--seed``,
or, with ``--style``, is the mean code of that picture under the model's style encoder
(the repository model ``<model>_encoder``).

:func:`read_label_map` is the library function the other interfaces (Krita, Blender) share.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from impasto.runtime.errors import FailedPrecondition, InvalidArgument
from impasto.runtime.images import resize
from impasto.runtime.ops.registry import ImageSlot, OpOutcome, OpSpec, Output, RunContext, register_op
from impasto.runtime.ops.request import image_numbers
from impasto.runtime.ops.served import PREFIX, profile_sides
from impasto.train.data.labels import LabelError, LabelTable
from impasto.train.options import option

__all__ = ["SEMANTIC", "SemanticInputError", "SemanticModel", "SemanticOptions", "read_label_map", "semantic_model"]

DEFAULT_MODEL = "semantic_landscape"


class SemanticInputError(InvalidArgument):
    """A label map or style picture the model cannot take; the message names it and the limit."""


@dataclass(frozen=True)
class SemanticModel:
    """What the op needs to know about a served semantic model, from its repository config."""

    name: str
    table: LabelTable
    stride: int
    z_dim: int
    encoder: str  # the style encoder's model name ("" = none declared)
    sides: tuple[int, int]  # (min, max) H and W of the optimisation profile
    parameters: dict[str, str]


def semantic_model(name: str, parameters: dict[str, str]) -> SemanticModel:
    """The op's view of model ``name`` from its config ``parameters``; an error if it is not a semantic model."""
    if parameters.get(f"{PREFIX}kind") != "semantic" or f"{PREFIX}labels" not in parameters:
        raise SemanticInputError(f"model '{name}' is not a semantic synthesis model (its config has no label table); "
                                 "choose one exported from a semantic checkpoint")
    try:
        table = LabelTable.from_json(parameters[f"{PREFIX}labels"], f"the label table of model '{name}'")
    except LabelError as e:
        raise FailedPrecondition(str(e)) from None
    return SemanticModel(name, table, int(parameters.get(f"{PREFIX}stride", "1")),
                         int(parameters.get(f"{PREFIX}z_dim", "0")), parameters.get(f"{PREFIX}encoder", ""),
                         profile_sides(parameters, "labels", (1, 1 << 30)), parameters)


def _multiples(side: int, stride: int, lo: int, hi: int) -> list[int]:
    """The valid sides nearest ``side``: the multiples of ``stride`` below and above it, within lo..hi."""
    down, up = side // stride * stride, -(-side // stride) * stride
    return sorted({min(max(v, lo), hi) for v in (down, up)})


def check_size(height: int, width: int, model: SemanticModel, field: str = "labels") -> None:
    """SemanticInputError unless both sides are multiples of the stride within the served range."""
    s, (lo, hi) = model.stride, model.sides
    lo, hi = -(-lo // s) * s, hi // s * s
    if height % s or width % s or not (lo <= height <= hi and lo <= width <= hi):
        sizes = [f"{w}x{h}" for h in _multiples(height, s, lo, hi) for w in _multiples(width, s, lo, hi)]
        raise SemanticInputError(
            f"{field} is {width}x{height} px; model '{model.name}' needs sides that are multiples of {s} from {lo} "
            f"to {hi} px: nearest valid sizes {', '.join(sizes)}")


def read_label_map(picture: np.ndarray, table: LabelTable, field: str = "labels") -> np.ndarray:
    """(H, W) uint8 class indices from an (H, W, 3) uint8 label picture, index image or colour-coded.

    A grey picture (R = G = B everywhere) whose pixels are not all table colours is an index
    image; anything else must be colour-coded with the table. Errors name the stray colour or
    class index and where it is.
    """
    rgb = picture[..., :3]
    grey = bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
    try:
        if grey:
            try:
                return table.index_of_colors(rgb, field)
            except LabelError:
                pass
            try:
                return table.to_index(rgb[..., 0], field)
            except LabelError as e:
                raise LabelError(f"{e} (a grey picture is read as an index image; a colour-coded map uses the table's "
                                 "colours: `impasto labels MODEL` prints them)") from None
        return table.to_index(rgb, field)
    except LabelError as e:
        raise SemanticInputError(str(e)) from None


@dataclass
class SemanticOptions:
    seed: int = option(0, "seed of the style code: each seed gives another picture (ignored with --style)",
                       min=0, max=2**31 - 1)
    model: str = option(DEFAULT_MODEL, "the semantic model of the model repository to run")


def _model(ctx: RunContext, name: str) -> SemanticModel:
    if ctx.model_parameters is None:
        raise FailedPrecondition("this runtime does not expose model configs to ops (RunContext.model_parameters); "
                                 "the semantic op needs its model's label table")
    return semantic_model(name, ctx.model_parameters(name))


def _style_code(ctx: RunContext, model: SemanticModel, style: torch.Tensor) -> np.ndarray:
    """The mean style code of ``style`` (3, H, W in [0, 1]) under the model's encoder, (1, z_dim)."""
    if model.z_dim == 0 or not model.encoder:
        raise SemanticInputError(f"style: model '{model.name}' takes no style code, so it cannot follow a style picture")
    try:
        params = ctx.model_parameters(model.encoder)  # type: ignore[misc]
    except (LookupError, ValueError):
        raise SemanticInputError(
            f"style: model '{model.name}' has no style encoder here (no model '{model.encoder}' in the repository; "
            "it is exported from a checkpoint trained with use_encoder); leave out the style picture") from None
    side = int(params.get(f"{PREFIX}image_size", "256"))
    picture = resize(style, side, side).numpy()[None].astype(np.float32)
    mu = ctx.infer(model.encoder, {"image": picture})["mu"]  # type: ignore[misc]
    return np.ascontiguousarray(mu, np.float32)


def _run(ctx: RunContext, images: dict[str, torch.Tensor], options: SemanticOptions, wanted: set[str]) -> OpOutcome:
    if ctx.infer is None:
        raise FailedPrecondition("semantic runs on the engine: no model backend is available here")
    model = _model(ctx, options.model)
    picture = (images["labels"].permute(1, 2, 0).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    index = read_label_map(picture, model.table)
    height, width = index.shape
    check_size(height, width, model)
    arrays = {"labels": index[None, None].astype(np.int32)}
    if "style" in images:
        arrays["z"] = _style_code(ctx, model, images["style"])
    elif model.z_dim:
        arrays["z"] = np.random.default_rng(options.seed).standard_normal((1, model.z_dim)).astype(np.float32)
    out = ctx.infer(options.model, arrays)["image"]
    image = torch.from_numpy(np.ascontiguousarray(out[0], np.float32)).clamp_(0, 1)
    numbers = image_numbers(image)
    numbers["classes"] = float(len(np.unique(index)))
    return OpOutcome({"image": image}, numbers)


SEMANTIC = register_op(OpSpec(
    name="semantic",
    help="a picture from a label map (SPADE / GauGAN): paint the layout, get the scene",
    description="Semantic image synthesis (Park et al., CVPR 2019): a label map, as an index image or colour-coded "
    "with the model's label table (`impasto labels MODEL` prints it), becomes a picture; sides must be multiples of "
    "the model's stride. --seed picks the style, or --style follows a picture's style when the model has a style "
    "encoder. See docs/semantic.md.",
    options=SemanticOptions,
    images=(
        ImageSlot("labels", "the label map: an index image (grey) or colour-coded with the model's label table",
                  role="labels"),
        ImageSlot("style", "a picture whose style to follow (models with a style encoder)", role="style",
                  required=False),
    ),
    outputs=(Output("image", "image", "the synthesised picture", "image.png", place="texture"),),
    run=_run,
    runs_in="engine",
    models=(DEFAULT_MODEL,),
))
