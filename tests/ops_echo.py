"""``echo``: a test sidecar op with **live settings**, whose picture shows the options it ran with.

Loaded as a plugin (``IMPASTO_OPS=ops_echo`` with this folder on ``PYTHONPATH``). It declares
``live=(("fast", True), ("steps", 3))``, as paint declares its predictor-only settings, so the
add-ons offer Live mode for it although it takes a plain picture and runs in the sidecar. Its
output is the picture's size and says what the run got, pixel by pixel:

- red: 255 when ``fast`` was on, else 0;
- green: ``steps`` (0 to 255);
- blue: the source's blue channel (so a result follows the layer it was made from).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from impasto.runtime.ops.registry import (
    ImageSlot,
    OpOutcome,
    OpSpec,
    Output,
    RunContext,
    register_op,
)
from impasto.train.options import option

LIVE = (("fast", True), ("steps", 3))


@dataclass
class EchoOptions:
    fast: bool = option(False, "a quick pass (the live setting: on)")
    steps: int = option(100, "how many steps (the live setting: 3)", min=0, max=255)


def _run(ctx: RunContext, images: dict, options: EchoOptions, wanted: set[str]) -> OpOutcome:
    source = images["image"]
    _, h, w = source.shape
    out = torch.stack([torch.full((h, w), float(options.fast)), torch.full((h, w), options.steps / 255.0), source[2]])
    return OpOutcome({"image": out}, {"width": w, "height": h, "fast": float(options.fast), "steps": options.steps})


SPEC = register_op(OpSpec(
    name="echo", help="a picture of the options it ran with (a test op with live settings)",
    description="Echo: red is fast, green is steps, blue is the source's blue; live runs set fast and 3 steps.",
    options=EchoOptions, images=(ImageSlot("image", "the picture"),),
    outputs=(Output("image", "image", "the options as colours", "image.png"),),
    run=_run, live=LIVE,
))
