"""torch -> ONNX, and parity of the ONNX graph against torch on fresh random inputs.

Export goes through torch's ``torch.export``-based exporter at opset 18 (GridSample's and
Resize's semantics changed at opset 20, and TensorRT 10's parser stops at 20), with a
dynamic batch axis and dynamic spatial axes where the model declares them; the graph is
constant-folded by the exporter's optimiser and checked with ``onnx.checker``.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from impasto.export.registry import ExportableModel

log = logging.getLogger(__name__)

OPSET = 18
SUPPORTED_OPSETS = (17, 18)


class ExportError(RuntimeError):
    """The model could not be exported, or its export did not hold parity."""


@dataclass(frozen=True)
class Parity:
    """How far ONNX Runtime's outputs are from torch's, over every output and batch tried."""

    max_abs: float
    max_rel: float  # max abs error / max abs torch value, per output
    tolerance: float
    batches: tuple[int, ...]
    seed: int

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_abs)) and self.max_abs <= self.tolerance

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def _dynamic_shapes(spec: ExportableModel) -> tuple[dict[int, object], ...]:
    batch = torch.export.Dim("batch", min=1, max=max(spec.max_batch_size, 2))
    shapes = []
    for t in spec.inputs:
        axes: dict[int, object] = {0: batch}
        for i, d in enumerate(t.dims):
            if d == -1:
                axes[i + 1] = torch.export.Dim(f"{t.name}_{i + 1}")
        shapes.append(axes)
    return tuple(shapes)


def export_onnx(spec: ExportableModel, module: nn.Module, path: str | Path, opset: int = OPSET) -> onnx.ModelProto:
    """Export ``module`` (built from ``spec``) to ``path``; returns the checked graph."""
    if opset not in SUPPORTED_OPSETS:
        raise ExportError(f"opset {opset} is not supported: use one of {SUPPORTED_OPSETS} (TensorRT's parser and GridSample/Resize semantics)")
    path = Path(path)
    module = module.eval()
    example = spec.sample(3, torch.Generator().manual_seed(0))  # batch 3: never specialised away
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation chatter is not the user's business
            program = torch.onnx.export(
                module,
                example,
                input_names=[t.name for t in spec.inputs],
                output_names=[t.name for t in spec.outputs],
                opset_version=opset,
                dynamo=True,
                dynamic_shapes=_dynamic_shapes(spec),
                optimize=True,  # constant folding and redundant-node removal
                verbose=False,
            )
    except Exception as e:  # the exporter raises many types; say which model failed
        raise ExportError(f"could not export '{spec.name}' to ONNX: {e}") from e
    model = program.model_proto
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    onnx.save_model(model, str(tmp))
    tmp.replace(path)
    return model


def check_parity(
    spec: ExportableModel,
    module: nn.Module,
    onnx_path: str | Path,
    tolerance: float,
    batches: tuple[int, ...] = (1, 5),
    seed: int | None = None,
) -> Parity:
    """Run torch and ONNX Runtime (CPU) on the same fresh random inputs and compare outputs."""
    import onnxruntime as ort

    seed = int.from_bytes(os.urandom(4), "little") if seed is None else seed
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    rng = torch.Generator().manual_seed(seed)
    worst_abs, worst_rel = 0.0, 0.0
    for batch in batches:
        inputs = spec.sample(batch, rng)
        with torch.inference_mode():
            expected = module(*inputs)
        expected = expected if isinstance(expected, (tuple, list)) else (expected,)
        got = session.run(
            [t.name for t in spec.outputs], {t.name: x.numpy() for t, x in zip(spec.inputs, inputs)}
        )
        for e, o in zip(expected, got):
            e = e.float().numpy()
            err = float(np.max(np.abs(o.astype(np.float32) - e))) if e.size else 0.0
            if not np.isfinite(o).all():
                err = float("inf")
            worst_abs = max(worst_abs, err)
            worst_rel = max(worst_rel, err / max(float(np.max(np.abs(e))), 1e-12))
    return Parity(worst_abs, worst_rel, tolerance, tuple(batches), seed)
