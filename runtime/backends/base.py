"""The backend interface: load a repository model, describe its tensors, infer a batch.

Every backend (ONNX Runtime, TensorRT) takes and returns named NumPy arrays with the batch
as the first axis, and checks requests against the model's config before running them, so
a wrong name, dtype, shape or batch size is an error that names the input, not a crash.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

import numpy as np

from impasto.export.repository import RepositoryModel, TensorInfo
from impasto.runtime.errors import InvalidArgument


class InferenceInputError(InvalidArgument):
    """A request that does not fit the model (the message names the input and the limit)."""


class Backend(ABC):
    """A loaded model that runs batches of named arrays."""

    name: str = ""

    def __init__(self, model: RepositoryModel):
        self.model = model
        # (min, max) shapes of inputs that have a profile: parsed once, checked on every request
        self.profiles = {t.name: model.profile(t.name)[::2] for t in model.inputs
                         if f"impasto.profile.{t.name}" in model.parameters}

    @property
    def inputs(self) -> tuple[TensorInfo, ...]:
        return self.model.inputs

    @property
    def outputs(self) -> tuple[TensorInfo, ...]:
        return self.model.outputs

    def describe(self) -> dict:
        return {
            "model": self.model.name,
            "version": self.model.version,
            "backend": self.name,
            "max_batch_size": self.model.max_batch_size,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }

    def check(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``inputs`` as contiguous arrays of the model's dtypes, or :class:`InferenceInputError`."""
        names = {t.name for t in self.inputs}
        unknown = sorted(set(inputs) - names)
        if unknown:
            raise InferenceInputError(f"model '{self.model.name}' has no input {unknown[0]!r} (inputs: {', '.join(sorted(names))})")
        out: dict[str, np.ndarray] = {}
        batch = None
        for t in self.inputs:
            if t.name not in inputs:
                raise InferenceInputError(f"model '{self.model.name}': input '{t.name}' is missing")
            a = np.asarray(inputs[t.name])
            where = f"model '{self.model.name}' input '{t.name}'"
            if a.dtype.kind not in "fiub":
                raise InferenceInputError(f"{where}: dtype {a.dtype} is not numeric (expected {t.dtype})")
            if a.ndim != len(t.dims) + 1:
                raise InferenceInputError(f"{where}: expected shape (batch, {', '.join(map(str, t.dims))}), got {a.shape}")
            if batch is None:
                batch = a.shape[0]
            elif a.shape[0] != batch:
                raise InferenceInputError(f"{where}: batch {a.shape[0]} differs from the other inputs' {batch}")
            if not 1 <= a.shape[0] <= max(self.model.max_batch_size, 1):
                raise InferenceInputError(f"{where}: batch size {a.shape[0]} is outside 1..{self.model.max_batch_size}")
            for axis, (want, got) in enumerate(zip(t.dims, a.shape[1:]), start=1):
                if want != -1 and want != got:
                    raise InferenceInputError(f"{where}: axis {axis} must be {want}, got {got} (shape {a.shape})")
            if t.name in self.profiles:
                low, high = self.profiles[t.name]
                for axis, (lo, hi, got) in enumerate(zip(low, high, a.shape)):
                    if not lo <= got <= hi:
                        raise InferenceInputError(f"{where}: axis {axis} is {got}, outside the profile's {lo}..{hi}")
            a = np.ascontiguousarray(a, dtype=t.numpy_dtype)
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                raise InferenceInputError(f"{where}: contains NaN or infinite values")
            out[t.name] = a
        return out

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch: named inputs (batch first) -> named outputs."""
        return self._run(self.check(inputs))

    @abstractmethod
    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None:
        """Release sessions and device memory."""
