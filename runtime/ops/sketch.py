"""The ``sketch`` op: a picture from a sketch (SketchyGAN, Chen & Hays 2018), on the engine.

``impasto sketch SKETCH.png -o OUT.png [--class NAME] [--seed N] [--variations K] [--model NAME]``

The sketch may be black lines on white, white on black, grey pencil, or strokes on a
transparent layer: it is decoded with its alpha and :func:`impasto.train.data.edges.lines_from_picture`
finds the lines whatever the polarity, thinned to one pixel as the training edge maps are; the
model takes their :func:`~impasto.train.data.edges.distance_input`. Any sketch size works: the
op works at the sketch's size when the served profile allows it, scales the line mask down (or,
for tiny sketches, up) when it does not, pads the distance map to multiples of the model's
stride with "far from any line" (1), and crops and scales the picture back to the sketch's size.

The class table, the stride and the noise size come from the model's repository config
(``impasto.kind`` = "sketch", ``impasto.classes``, ``impasto.stride``, ``impasto.z_dim``,
the ``impasto.profile.sketch`` range; written by ``impasto export``) through
``RunContext.model_parameters``. ``--variations K`` makes K pictures from K noise codes:
variation k draws its code from seed ``--seed + k - 1`` (so ``--seed 5`` variation 2 is
``--seed 6`` alone); they come as the series output ``image``, ``image.2``, ... (files
``OUT.png``, ``OUT.2.png``, ...). The class option is ``--class`` on the command line and
``class_name`` on the wire and in batch specs (``class`` is a Python keyword); empty means the
model's first class.

:func:`sketch_lines` and :func:`model_input` are the library functions the other interfaces share.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from skimage.morphology import skeletonize

from impasto.runtime.errors import FailedPrecondition, InvalidArgument
from impasto.runtime.images import resize
from impasto.runtime.ops.registry import ImageSlot, OpOutcome, OpSpec, Output, RunContext, register_op, series_key
from impasto.runtime.ops.request import image_numbers
from impasto.runtime.ops.served import PREFIX, profile_sides, recorded_side, working_size
from impasto.train.data.edges import SketchInputError, distance_input, lines_from_picture
from impasto.train.options import option

__all__ = ["MAX_VARIATIONS", "SKETCH", "SketchModel", "SketchOpInputError", "SketchOptions", "model_input",
           "sketch_lines", "sketch_model"]

DEFAULT_MODEL = "sketch_demo"
MAX_VARIATIONS = 8  # the exported model's largest batch: one request's worth of codes
MIN_SIDE = 16  # px: a smaller sketch holds no drawing worth the name


class SketchOpInputError(InvalidArgument):
    """A sketch, class or model the op cannot use; the message names the field and the limit."""


@dataclass(frozen=True)
class SketchModel:
    """What the op needs to know about a served sketch model, from its repository config."""

    name: str
    classes: tuple[str, ...]
    stride: int
    z_dim: int
    sides: tuple[int, int]  # (min, max) H and W of the optimisation profile
    image_size: int = 0  # the side the model was trained at (impasto.image_size; 0: not recorded)

    def class_index(self, name: str, field: str = "class") -> int:
        """The index of class ``name`` ('' = the first class); SketchOpInputError listing the classes."""
        if not name:
            return 0
        if name in self.classes:
            return self.classes.index(name)
        raise SketchOpInputError(f"{field} '{name}' is not a class of model '{self.name}': choose one of "
                                 f"{', '.join(self.classes)}")


def sketch_model(name: str, parameters: dict[str, str]) -> SketchModel:
    """The op's view of model ``name`` from its config ``parameters``; an error if it is not a sketch model."""
    if parameters.get(f"{PREFIX}kind") != "sketch":
        raise SketchOpInputError(f"model '{name}' is not a sketch model (its config says kind "
                                 f"'{parameters.get(f'{PREFIX}kind', '')}'); choose one exported from a sketch checkpoint")
    try:
        classes = json.loads(parameters[f"{PREFIX}classes"])
        stride, z_dim = int(parameters[f"{PREFIX}stride"]), int(parameters[f"{PREFIX}z_dim"])
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
            raise ValueError("a non-empty JSON list of names")
    except (KeyError, ValueError) as e:
        raise FailedPrecondition(f"model '{name}': its config lacks a valid {PREFIX}classes, {PREFIX}stride or "
                                 f"{PREFIX}z_dim ({e}); export it again with `impasto export`") from None
    return SketchModel(name, tuple(classes), stride, z_dim, profile_sides(parameters, "sketch"),
                       recorded_side(parameters))


def sketch_lines(picture: np.ndarray, field: str = "sketch") -> np.ndarray:
    """(H, W) bool line mask of an (H, W, 3 or 4) uint8 sketch, any polarity or alpha; an error names ``field``."""
    try:
        return lines_from_picture(picture)
    except SketchInputError as e:
        message = str(e)
        if field != "sketch" and message.startswith("sketch"):
            message = field + message[len("sketch"):]
        raise SketchOpInputError(message) from None


def _resample_lines(lines: np.ndarray, height: int, width: int) -> np.ndarray:
    """A line mask at another size, still lines one pixel wide: a cell holds a line if any of its pixels does."""
    if lines.shape == (height, width):
        return lines
    t = torch.from_numpy(lines.astype(np.float32))[None, None]
    if height <= lines.shape[0] and width <= lines.shape[1]:
        t = F.adaptive_max_pool2d(t, (height, width))
    else:
        t = F.interpolate(t, size=(height, width), mode="nearest")
    return skeletonize(t[0, 0].numpy() > 0.5, method="zhang")


def model_input(lines: np.ndarray, model: SketchModel, side: int = 0) -> tuple[np.ndarray, tuple[int, int]]:
    """The (1, 1, H', W') float32 distance map the model takes for a line mask, and the (h, w) of the sketch in it.

    The map is :func:`distance_input` of the lines at :func:`working_size`, padded right and
    down with 1 (far from any line) to multiples of the stride."""
    h, w, ph, pw = working_size(*lines.shape, model.stride, model.sides, side)
    field = distance_input(_resample_lines(lines, h, w))
    padded = np.ones((1, 1, ph, pw), np.float32)
    padded[0, 0, :h, :w] = field
    return padded, (h, w)


@dataclass
class SketchOptions:
    class_name: str = option("", "the class of picture to make, one of the model's classes (they are listed by an "
                             "unknown name, and in Capabilities as the model's impasto.classes); empty: the first",
                             flag="--class")
    seed: int = option(0, "seed of the noise code: each seed gives another picture; variation k uses seed + k - 1",
                       min=0, max=2**31 - 1)
    variations: int = option(1, "how many different pictures to make from the sketch (one noise code each): "
                             "written as OUT.png, OUT.2.png, ...", min=1, max=MAX_VARIATIONS)
    model: str = option(DEFAULT_MODEL, "the sketch model of the model repository to run")
    work_side: int = option(0, "the side, in px, the model draws at (the picture comes back at the sketch's size): "
                            "0 = the side it was trained at (the demo model: 64; impasto.image_size), -1 = the "
                            "sketch's own", min=-1, max=4096, flag="--size")


def _model(ctx: RunContext, name: str) -> SketchModel:
    if ctx.model_parameters is None:
        raise FailedPrecondition("this runtime does not expose model configs to ops (RunContext.model_parameters); "
                                 "the sketch op needs its model's class table")
    return sketch_model(name, ctx.model_parameters(name))


def _run(ctx: RunContext, images: dict[str, torch.Tensor], options: SketchOptions, wanted: set[str]) -> OpOutcome:
    if ctx.infer is None:
        raise FailedPrecondition("sketch runs on the engine: no model backend is available here")
    model = _model(ctx, options.model)
    label = np.array([[model.class_index(options.class_name)]], np.int32)  # (N, 1)
    rgba = images["sketch"]  # (4, H, W): the slot's role keeps the alpha
    picture = (rgba.permute(1, 2, 0).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    lines = sketch_lines(picture)
    height, width = lines.shape
    side = {0: model.image_size, -1: 0}.get(options.work_side, options.work_side)
    sketch, (h, w) = model_input(lines, model, side)
    values = {}
    for k in range(1, options.variations + 1):  # one call each: variation k is the same as --seed seed+k-1 alone
        z = np.random.default_rng(options.seed + k - 1).standard_normal((1, model.z_dim)).astype(np.float32)
        out = ctx.infer(options.model, {"sketch": sketch, "z": z, "label": label})["image"]
        image = torch.from_numpy(np.ascontiguousarray(out[0, :, :h, :w], np.float32)).clamp_(0, 1)
        values[series_key("image", k)] = resize(image, height, width).clamp_(0, 1)
    numbers = image_numbers(values["image"])
    numbers.update(line_pixels=float(lines.sum()), variations=float(options.variations), class_index=float(label[0, 0]),
                   model_width=float(sketch.shape[3]), model_height=float(sketch.shape[2]))
    return OpOutcome(values, numbers)


SKETCH = register_op(OpSpec(
    name="sketch",
    help="a picture from a sketch (SketchyGAN): draw the lines, pick a class, get variations",
    description="Sketch to image (Chen & Hays, SketchyGAN, CVPR 2018): a line drawing (black on white, white on "
    "black, or strokes on a transparent layer; lines are found whatever the polarity) becomes a picture of the "
    "chosen --class. --variations K makes K different pictures from noise seeds --seed .. --seed+K-1, written as "
    "OUT.png, OUT.2.png, ... Any size works: sketches larger than the model serves are worked on scaled down. "
    "See docs/sketch.md.",
    options=SketchOptions,
    images=(ImageSlot("sketch", "the line drawing: dark lines on light, light on dark, or lines on transparency",
                      role="sketch", min_side=MIN_SIDE),),
    outputs=(Output("image", "image", "the picture (one per variation)", "image.png", series=True,
                    place="texture"),),
    run=_run,
    runs_in="engine",
    models=(DEFAULT_MODEL,),
))
