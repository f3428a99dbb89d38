"""``impasto export``: one registered model -> a checked, parity-tested entry of a model repository.

The steps are the same for every model: build it from its checkpoint, export fp32 ONNX,
check it against TensorRT's parser table, measure parity against torch, derive the fp16
variant and measure its parity, then install both graphs and a Triton config atomically.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch

from impasto.export.compatibility import CompatibilityReport, check_tensorrt
from impasto.export.fp16 import convert_to_fp16, count_precisions
from impasto.export.onnx import OPSET, ExportError, Parity, check_parity, export_onnx
from impasto.export.registry import ExportableModel, get_model
from impasto.export.repository import ONNX_FP16, ONNX_FP32, sha256, write_model

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    model: str
    folder: Path
    parity: Parity
    parity_fp16: Parity | None
    compatibility: CompatibilityReport
    fp16_nodes: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "folder": str(self.folder),
            "parity_fp32": self.parity.to_dict(),
            "parity_fp16": self.parity_fp16.to_dict() if self.parity_fp16 else None,
            "fp16_nodes": self.fp16_nodes,
            "tensorrt": self.compatibility.to_dict(),
        }


def _build(spec: ExportableModel, checkpoint: Path | None) -> torch.nn.Module:
    name = spec.name
    try:
        return spec.build(checkpoint)
    except FileNotFoundError as e:
        raise ExportError(f"model '{name}': {e}") from None
    except Exception as e:  # safetensors/torch errors on a damaged file: name the file
        source = checkpoint if checkpoint is not None else "its shipped weights"
        raise ExportError(f"model '{name}': could not load {source}: {e}") from None


def export_model(
    name: str,
    repo: str | Path,
    *,
    checkpoint: str | Path | None = None,
    opset: int = OPSET,
    fp16: bool = True,
    allow: Iterable[str] = (),
    version: int = 1,
    seed: int | None = None,
    step: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export registered model ``name`` into ``repo``; raises :class:`ExportError` on any failed check."""
    spec = get_model(name)
    step = step or (lambda s: log.info("%s: %s", name, s))
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    step("loading weights")
    module = _build(spec, checkpoint)
    with tempfile.TemporaryDirectory(prefix="impasto-export-") as tmp:
        fp32_path = Path(tmp) / ONNX_FP32
        step(f"exporting ONNX (opset {opset})")
        graph = export_onnx(spec, module, fp32_path, opset=opset)
        report = check_tensorrt(graph, allow=allow)
        if not report.ok:
            raise ExportError(
                f"model '{name}' uses constructs TensorRT's ONNX parser does not support:\n"
                + "\n".join(f"  {p}" for p in report.problems)
                + "\n(pass --allow-unsupported OP to export anyway, e.g. when you ship a TensorRT plugin)"
            )
        step("checking parity (fp32)")
        parity = check_parity(spec, module, fp32_path, spec.tolerance, seed=seed)
        if not parity.ok:
            raise ExportError(
                f"model '{name}': ONNX Runtime differs from torch by {parity.max_abs:.3g} "
                f"(tolerance {parity.tolerance:g}, seed {parity.seed})"
            )
        files = {ONNX_FP32: fp32_path}
        parameters = {
            "opset": str(opset),
            "onnx_sha256": sha256(fp32_path),
            "parity_fp32_max_abs": f"{parity.max_abs:.3g}",
            "parity_fp32_max_rel": f"{parity.max_rel:.3g}",
            "source": str(checkpoint) if checkpoint else "shipped",
            "torch": torch.__version__,
        }
        parity16, nodes = None, {}
        if fp16:
            step("converting to fp16 and checking parity")
            half = convert_to_fp16(graph, keep_scopes=spec.fp32_scopes)
            fp16_path = Path(tmp) / ONNX_FP16
            onnx.save_model(half, str(fp16_path))
            nodes = count_precisions(half)
            parity16 = check_parity(spec, module, fp16_path, spec.tolerance_fp16, seed=seed)
            if not parity16.ok:
                raise ExportError(
                    f"model '{name}': the fp16 variant differs from torch by {parity16.max_abs:.3g} "
                    f"(tolerance {parity16.tolerance:g}); keep more of it in fp32 (fp32_scopes) or use --no-fp16"
                )
            files[ONNX_FP16] = fp16_path
            parameters.update(
                fp16_model=ONNX_FP16,
                fp16_sha256=sha256(fp16_path),
                parity_fp16_max_abs=f"{parity16.max_abs:.3g}",
                parity_fp16_max_rel=f"{parity16.max_rel:.3g}",
                fp16_kept_fp32=",".join(spec.fp32_scopes),
            )
        step("writing the model repository")
        folder = write_model(repo, spec, files, parameters, version=version)
    return ExportResult(name, folder, parity, parity16, report, nodes)
