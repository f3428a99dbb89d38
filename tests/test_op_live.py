"""An op's live settings (``OpSpec.live``): checked against its options, and told to clients in Capabilities.

``live`` names the options a live (paint-and-see) run sets, with their values: paint's
predictor-only painting. A setting must name a user-facing option once, with a value of its
type inside its range and choices; Capabilities carries them as ``OpInfo.live``, option ->
JSON-encoded value, which the add-ons decode (tests/test_krita_live.py runs them in Krita).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
import torch
from google.protobuf import json_format
from impasto.runtime.api import convert
from impasto.runtime.api import studio_pb2 as pb
from impasto.runtime.ops.registry import ImageSlot, OpOutcome, OpSpec, Output
from impasto.train.options import option


@dataclass
class QuickOptions:
    predict: bool = option(False, "lay the strokes with the predictor")
    refine: int = option(100, "search steps after it", min=0, max=1000)
    blend: float = option(0.5, "how much to blend", min=0.0, max=1.0)
    brush: str = option("oil", "the brush", choices=("oil", "marker"))
    device: str = field(default="cpu")  # internal: not an option users (or live runs) set


def _spec(live) -> OpSpec:
    return OpSpec(name="quick", help="a test op", description="A test op with live settings.", options=QuickOptions,
                  images=(ImageSlot("image", "the picture"),),
                  outputs=(Output("image", "image", "the picture", "image.png"),),
                  run=lambda ctx, images, options, wanted: OpOutcome({"image": torch.zeros(3, 1, 1)}), live=live)


def test_live_settings_are_options_of_the_op_with_values_they_accept():
    spec = _spec((("predict", True), ("refine", 0), ("blend", 1), ("brush", "marker")))
    assert spec.live_options == {"predict": True, "refine": 0, "blend": 1, "brush": "marker"}
    assert _spec(()).live_options == {}


@pytest.mark.parametrize("live, message", [
    ((("steps", 3),), "live setting 'steps': not one of the op's options (predict, refine, blend, brush)"),
    ((("device", "cuda"),), "live setting 'device': not one of the op's options"),  # internal fields are not options
    ((("refine", 0), ("refine", 1)), "live setting 'refine': given twice"),
    ((("predict", 1),), "live setting 'predict' must be true or false, got 1"),
    ((("predict", "true"),), "live setting 'predict' must be true or false, got 'true'"),
    ((("refine", True),), "live setting 'refine' must be a whole number, got True"),
    ((("refine", 2.5),), "live setting 'refine' must be a whole number, got 2.5"),
    ((("blend", "0.5"),), "live setting 'blend' must be a number, got '0.5'"),
    ((("refine", 5000),), "live setting 'refine' must be between 0 and 1000, got 5000"),
    ((("blend", -0.1),), "live setting 'blend' must be between 0 and 1, got -0.1"),
    ((("brush", "tape"),), "live setting 'brush' 'tape' is not one of oil, marker"),
    ((("predict",),), "live holds (option name, value) pairs"),
    (("predict",), "live holds (option name, value) pairs"),
])
def test_a_live_setting_the_op_cannot_take_is_refused_naming_it(live, message):
    with pytest.raises(ValueError, match="^op 'quick': ") as e:
        _spec(live)
    assert message in str(e.value)


def test_capabilities_carry_the_live_settings_as_json_values_over_the_wire():
    info = convert.op_info(_spec((("predict", True), ("refine", 0), ("blend", 0.25), ("brush", "marker"))))
    assert dict(info.live) == {"predict": "true", "refine": "0", "blend": "0.25", "brush": '"marker"'}
    again = pb.OpInfo.FromString(info.SerializeToString())  # the wire: a map field, number 10, beside the others
    assert {name: json.loads(text) for name, text in again.live.items()} == \
        {"predict": True, "refine": 0, "blend": 0.25, "brush": "marker"}
    assert pb.OpInfo.DESCRIPTOR.fields_by_name["live"].number == 10
    assert [f.number for f in pb.OpInfo.DESCRIPTOR.fields if f.name != "live"] == list(range(1, 10))
    web = json_format.MessageToDict(info, preserving_proto_field_name=True)  # what /v1/capabilities sends
    assert web["live"] == {"predict": "true", "refine": "0", "blend": "0.25", "brush": '"marker"'}
    assert "live" not in json_format.MessageToDict(convert.op_info(_spec(())), preserving_proto_field_name=True)
