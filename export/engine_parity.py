"""Engine parity: an engine's outputs against ONNX Runtime's on the same inputs, before it is cached.

The comparison takes callables (named arrays in, named arrays out), so it runs with or without
TensorRT: :func:`impasto.export.tensorrt.build_engine` passes the engine it just built, the
tests pass ONNX Runtime sessions. The reference is ONNX Runtime on the CPU running the fp32
graph (``model.onnx``); inputs are deterministic random arrays at each input's opt shape.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from impasto.export.repository import RepositoryModel

# Max abs error of an engine's outputs against ONNX Runtime on the fp32 graph (outputs in [0, 1]).
# fp32: TensorRT's kernels sum in another order than ONNX Runtime's, 10x the export's 1e-4.
# fp16: the export's bound for the fp16 variant against torch.
ENGINE_TOLERANCE = {"fp32": 1e-3, "fp16": 5e-2}
PARITY_SEED = 0

Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class EngineParity:
    """How far an engine's outputs are from ONNX Runtime's on the fp32 graph, on the same inputs."""

    model: str
    precision: str
    max_abs: float
    tolerance: float
    worst_output: str
    input_shapes: dict[str, tuple[int, ...]]
    seed: int

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_abs)) and self.max_abs <= self.tolerance

    def message(self) -> str:
        shapes = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in self.input_shapes.items())
        return (
            f"model '{self.model}': the {self.precision} TensorRT engine differs from ONNX Runtime by "
            f"{self.max_abs:.3g} on output '{self.worst_output}' (tolerance {self.tolerance:g}; inputs {shapes}, "
            f"seed {self.seed})"
        )


def parity_inputs(model: RepositoryModel, seed: int = PARITY_SEED) -> dict[str, np.ndarray]:
    """Deterministic random inputs at each input's opt shape (floats uniform in [0, 1))."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for t in model.inputs:
        shape = model.profile(t.name)[1]
        kind = t.numpy_dtype.kind
        if kind == "f":
            out[t.name] = rng.random(shape).astype(t.numpy_dtype)
        elif kind == "b":
            out[t.name] = rng.random(shape) < 0.5
        else:
            out[t.name] = rng.integers(0, 4, shape).astype(t.numpy_dtype)
    return out


def compare_outputs(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]) -> tuple[float, str]:
    """(max abs error, the output it is on) over ``reference``'s outputs; inf for a missing,
    misshapen or non-finite output."""
    worst, where = -1.0, ""
    for name, ref in reference.items():
        got = candidate.get(name)
        if got is None or np.shape(got) != np.shape(ref) or not np.isfinite(np.asarray(got, np.float32)).all():
            err = float("inf")
        elif np.size(ref) == 0:
            err = 0.0
        else:
            err = float(np.max(np.abs(np.asarray(got, np.float32) - np.asarray(ref, np.float32))))
        if err > worst:
            worst, where = err, name
    return max(worst, 0.0), where


def onnxruntime_runner(path: Path) -> Runner:
    """ONNX Runtime on the CPU running the graph at ``path``: the reference engines are held to."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda inputs: dict(zip(names, session.run(names, inputs)))


def check_engine_parity(
    model: RepositoryModel,
    candidate: Runner,
    precision: str,
    *,
    reference: Runner | None = None,
    tolerance: float | None = None,
    seed: int = PARITY_SEED,
) -> EngineParity:
    """Run ``candidate`` and ``reference`` (default: ONNX Runtime on ``model.onnx``) on the same inputs."""
    tolerance = ENGINE_TOLERANCE[precision] if tolerance is None else tolerance
    reference = reference or onnxruntime_runner(model.onnx_path("fp32"))
    inputs = parity_inputs(model, seed)
    expected = reference(dict(inputs))
    expected = {t.name: expected[t.name] for t in model.outputs if t.name in expected} or expected
    worst, where = compare_outputs(expected, candidate(dict(inputs)))
    shapes = {k: tuple(v.shape) for k, v in inputs.items()}
    return EngineParity(model.name, precision, worst, tolerance, where, shapes, seed)
