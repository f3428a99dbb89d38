"""What engine ops read from a served model's repository config, and the size a model works at.

``impasto export`` writes a model's parameters into its repository config (``impasto.kind``,
``impasto.stride``, ``impasto.image_size``, the TensorRT optimisation profile of each input
as ``impasto.profile.INPUT`` = ``min;opt;max`` shapes, ...); the ops get them through
``RunContext.model_parameters``. The semantic, sketch and colorize ops share these readers,
and the sketch and colorize ops share :func:`working_size`.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["PREFIX", "profile_sides", "recorded_side", "working_size"]

PREFIX = "impasto."
ANY_SIDES = (1, 1 << 14)  # what a model without a recorded profile is taken to accept


def profile_sides(parameters: Mapping[str, str], input_name: str, default: tuple[int, int] = ANY_SIDES
                  ) -> tuple[int, int]:
    """(min, max) H and W of input ``input_name``'s optimisation profile (``min;opt;max``, NxCxHxW each), else ``default``."""
    try:
        shapes = [[int(v) for v in part.split("x")]
                  for part in parameters.get(f"{PREFIX}profile.{input_name}", "").split(";")]
        return max(shapes[0][2], shapes[0][3]), min(shapes[2][2], shapes[2][3])
    except (ValueError, IndexError):
        return default


def recorded_side(parameters: Mapping[str, str]) -> int:
    """The side the model was trained at (``impasto.image_size``); 0 when not recorded or unreadable."""
    try:
        return max(0, int(parameters.get(f"{PREFIX}image_size", "0")))
    except ValueError:
        return 0


def working_size(height: int, width: int, stride: int, sides: tuple[int, int], side: int = 0
                 ) -> tuple[int, int, int, int]:
    """(h, w, padded h, padded w): the size a model sees an (height, width) input at, and that size padded.

    With ``side`` the input is scaled so that its longer side is ``side`` (a model draws best
    at the scale it was trained at: its lines are so many pixels apart). Without, it keeps its
    size. Either way, one larger than the served range ``sides`` is scaled down so that the
    longer side fits, a tiny one up so that the shorter side reaches the range's minimum (unless
    the longer side would then not fit). Padding goes up to the next multiple of ``stride``, and
    to the range's minimum.
    """
    s, (lo, hi) = stride, sides
    lo, hi = -(-lo // s) * s, max(hi // s * s, s)
    scale = min(side / max(height, width) if side else 1.0, hi / max(height, width))
    if min(height, width) * scale < lo:
        scale = min(lo / min(height, width), hi / max(height, width))
    h, w = max(1, min(round(height * scale), hi)), max(1, min(round(width * scale), hi))
    return h, w, max(-(-h // s) * s, lo), max(-(-w // s) * s, lo)
