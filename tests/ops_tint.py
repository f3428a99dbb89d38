"""``tint``: a test engine op, the smallest thing that goes the whole engine path.

Its model (``tint``: ``image * (1 - s) + orange * s``) is exported by the real export
pipeline into a model repository, served by ONNX Runtime behind the server's batcher, and
run locally through the same backend. The op is registered the way a plugin would be:
``IMPASTO_OPS=ops_tint`` with this folder on ``PYTHONPATH``. Importing this module also
registers the model with the exporter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from impasto.export.registry import ExportableModel, TensorSpec, register
from impasto.runtime.ops.registry import ImageSlot, OpOutcome, OpSpec, Output, RunContext, register_op
from impasto.runtime.ops.request import image_numbers
from impasto.train.options import option

ORANGE = (1.0, 0.5, 0.0)


class Tint(nn.Module):
    def forward(self, image: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
        colour = torch.tensor(ORANGE, dtype=image.dtype).view(1, 3, 1, 1)
        s = strength.view(-1, 1, 1, 1)
        return image * (1 - s) + colour * s


def _model() -> ExportableModel:
    return ExportableModel(
        name="tint", description="test model: tint an image toward orange",
        build=lambda checkpoint: Tint().eval(),
        inputs=(TensorSpec("image", (3, -1, -1), profile=((16, 64, 1024), (16, 64, 1024))), TensorSpec("strength", (1,))),
        outputs=(TensorSpec("tinted", (3, -1, -1)),),
        sample=lambda batch, rng: (torch.rand(batch, 3, 32, 48, generator=rng), torch.rand(batch, 1, generator=rng)),
        max_batch_size=8, preferred_batch_sizes=(4,),
    )


register("tint", _model)


@dataclass
class TintOptions:
    strength: float = option(0.5, "how far toward orange", min=0.0, max=1.0)


def _run(ctx: RunContext, images: dict, options: TintOptions, wanted: set[str]) -> OpOutcome:
    image = images["image"].numpy()[None].astype(np.float32)
    out = ctx.infer("tint", {"image": image, "strength": np.array([[options.strength]], np.float32)})["tinted"]
    result = torch.from_numpy(np.ascontiguousarray(out[0]))
    return OpOutcome({"image": result}, image_numbers(result))


register_op(OpSpec(
    name="tint", help="tint an image toward orange (a test engine op)", description="Test op on the engine path.",
    options=TintOptions, images=(ImageSlot("image", "the picture to tint"),),
    outputs=(Output("image", "image", "the tinted picture", "image.png"),),
    run=_run, runs_in="engine", models=("tint",),
))
