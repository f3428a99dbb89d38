"""The feed-forward models that ``impasto export`` knows, each described once.

An :class:`ExportableModel` says how to build the torch module (from the shipped weights or
a checkpoint the user names), what its inputs and outputs are, how to draw random inputs for
parity checks, and how it should be batched and served. Exporting, the fp16 variant, the
TensorRT report and the model repository are the same code for every entry: a new model
family (SPADE, SketchyGAN, ...) plugs in as one more module in ``export/families/`` that calls
:func:`register` (and is listed in ``_FAMILY_MODULES``). The families are imported on the
first :func:`model_names` or :func:`get_model`, not when this module is, so that they can
import it without a cycle.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class UnknownModelError(KeyError):
    """A model name that no registered exporter knows (the message lists the known ones)."""

    def __str__(self) -> str:
        return str(self.args[0])


class InvalidModelNameError(ValueError):
    """A model name that could escape the repository folder or is not a plain identifier."""


def validate_model_name(name: str) -> str:
    """``name`` if it is a safe model-repository folder name, else :class:`InvalidModelNameError`.

    Names are lower-case letters, digits, '_' and '-', at most 64 characters: never a path.
    """
    if not isinstance(name, str) or not MODEL_NAME.match(name):
        raise InvalidModelNameError(
            f"model name {name!r} is not allowed: use 1-64 lower-case letters, digits, '_' or '-', "
            "starting with a letter or digit (no paths)"
        )
    return name


@dataclass(frozen=True)
class TensorSpec:
    """One input or output, without the batch axis (dims of -1 are dynamic).

    ``profile`` gives (min, opt, max) for each dynamic dim, in order; the batch axis's
    profile comes from the model's batching settings.
    """

    name: str
    dims: tuple[int, ...]
    dtype: str = "FP32"
    profile: tuple[tuple[int, int, int], ...] = ()

    def __post_init__(self) -> None:
        if self.profile and len(self.profile) != sum(d == -1 for d in self.dims):
            raise ValueError(f"tensor '{self.name}': give one (min, opt, max) per dynamic dim")


@dataclass(frozen=True)
class ExportableModel:
    """A feed-forward model as the export pipeline sees it."""

    name: str
    description: str
    build: Callable[[Path | None], nn.Module]  # checkpoint path (None = shipped) -> eval module
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    sample: Callable[[int, torch.Generator], tuple[torch.Tensor, ...]]  # batch, rng -> inputs
    max_batch_size: int = 64
    preferred_batch_sizes: tuple[int, ...] = (8, 32)
    max_queue_delay_us: int = 2000
    fp32_scopes: tuple[str, ...] = ()  # module paths kept in fp32 by the fp16 variant
    tolerance: float = 1e-4  # fp32 ONNX vs torch, max abs error on outputs in [0, 1]
    tolerance_fp16: float = 5e-2
    metadata: dict[str, str] = field(default_factory=dict)
    shipped: Callable[[], bool] = lambda: True  # weights ship with the package? (`export --all` skips those without)

    def __post_init__(self) -> None:
        for t in self.inputs:
            if -1 in t.dims and not t.profile:
                raise ValueError(f"model '{self.name}': input '{t.name}' has dynamic dims but no (min, opt, max) profile")

    def batch_profile(self) -> tuple[int, int, int]:
        """(min, opt, max) batch sizes for TensorRT optimisation profiles."""
        opt = max((b for b in self.preferred_batch_sizes if b <= self.max_batch_size), default=1)
        return 1, opt, self.max_batch_size


_REGISTRY: dict[str, Callable[[], ExportableModel]] = {}

# one module per model family in export/families/, each calling register() when imported
_FAMILY_MODULES = ("impasto.export.families.renderer", "impasto.export.families.spade",
                   "impasto.export.families.sketchygan", "impasto.export.families.colorizer",
                   "impasto.export.families.warper", "impasto.export.families.stroke_predictor")
_families_loaded = False


def register(name: str, factory: Callable[[], ExportableModel]) -> None:
    """Make ``name`` exportable; ``factory`` is called lazily, when the model is asked for."""
    _REGISTRY[validate_model_name(name)] = factory


def _load_families() -> None:
    """Import the built-in families once; each registers its models (lazily: the families import this module)."""
    global _families_loaded
    if _families_loaded:
        return
    for module in _FAMILY_MODULES:
        importlib.import_module(module)
    _families_loaded = True


def model_names() -> list[str]:
    """Every exportable model's name, sorted."""
    _load_families()
    return sorted(_REGISTRY)


def get_model(name: str) -> ExportableModel:
    """The registered model called ``name`` (validated first: never used as a path unchecked)."""
    validate_model_name(name)
    _load_families()
    if name not in _REGISTRY:
        raise UnknownModelError(f"unknown model '{name}': exportable models are {', '.join(model_names())}")
    return _REGISTRY[name]()
