"""Static TensorRT compatibility report for an ONNX graph: runs anywhere, no GPU, no TensorRT.

Every operator (subgraphs included), attribute value with a known restriction, the opset and
the data types at the graph's edges are checked against :mod:`impasto.export.tensorrt_support`,
the table of what TensorRT's ONNX parser accepts. A known-unsupported construct fails the
export unless the user allows that operator explicitly (say, because they ship a plugin).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import onnx
from onnx import TensorProto, helper

from impasto.export import tensorrt_support as trt_table

# Element types TensorRT can take at a network's inputs and outputs.
EDGE_TYPES = {
    TensorProto.FLOAT: "FP32",
    TensorProto.FLOAT16: "FP16",
    TensorProto.BFLOAT16: "BF16",
    TensorProto.INT32: "INT32",
    TensorProto.INT64: "INT64",
    TensorProto.INT8: "INT8",
    TensorProto.UINT8: "UINT8",
    TensorProto.BOOL: "BOOL",
}


@dataclass(frozen=True)
class OpUse:
    """One operator type as used in the graph, and what TensorRT's table says of it."""

    op: str
    count: int
    status: str  # "supported" | "unsupported" | "unknown" | "restricted" (an attribute value)
    detail: str = ""


@dataclass
class CompatibilityReport:
    source: str
    opset: int
    ops: list[OpUse] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # each names the node/input and the rule
    allowed: list[str] = field(default_factory=list)  # problems the user allowed

    @property
    def ok(self) -> bool:
        return not self.problems

    def table(self) -> str:
        """A plain-text table: operator, count, status, restriction."""
        width = max([len(u.op) for u in self.ops] + [8])
        lines = [f"TensorRT compatibility (opset {self.opset}; table: {self.source})"]
        lines += [f"  {u.op:<{width}} {u.count:>4}  {u.status:<11} {u.detail}".rstrip() for u in self.ops]
        lines += [f"  problem: {p}" for p in self.problems] + [f"  allowed: {p}" for p in self.allowed]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "opset": self.opset,
            "ok": self.ok,
            "ops": [u.__dict__ for u in self.ops],
            "problems": self.problems,
            "allowed": self.allowed,
        }


def _walk(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _walk(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _walk(g)


def _attribute(node: onnx.NodeProto, name: str, default: object) -> object:
    for attr in node.attribute:
        if attr.name == name:
            value = helper.get_attribute_value(attr)
            return value.decode() if isinstance(value, bytes) else value
    return default


def check_tensorrt(model: onnx.ModelProto, allow: Iterable[str] = ()) -> CompatibilityReport:
    """Check ``model`` against TensorRT's ONNX parser table; ``allow`` lists operators to let through."""
    allow = set(allow)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    report = CompatibilityReport(trt_table.SOURCE, opset)

    def problem(op: str, text: str) -> None:
        (report.allowed if op in allow else report.problems).append(text)

    if not trt_table.OPSET_MIN <= opset <= trt_table.OPSET_MAX:
        problem("opset", f"opset {opset} is outside TensorRT's range {trt_table.OPSET_MIN}-{trt_table.OPSET_MAX}")

    counts: Counter[str] = Counter()
    status: dict[str, tuple[str, str]] = {}
    for node in _walk(model.graph):
        op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
        counts[op] += 1
        where = f"node '{node.name or node.output[0]}' ({op})"
        support = trt_table.OPERATORS.get(op)
        if support is None:
            status[op] = ("unknown", "not in TensorRT's operator table (custom domain or newer operator)")
            problem(op, f"{where}: operator not known to TensorRT's ONNX parser")
            continue
        if not support.supported:
            status[op] = ("unsupported", support.restriction)
            problem(op, f"{where}: TensorRT's ONNX parser does not support {op}")
            continue
        status.setdefault(op, ("supported", support.restriction))
        for rule in support.rules:
            value = _attribute(node, rule.attribute, rule.default)
            if value not in rule.allowed:
                status[op] = ("restricted", rule.note)
                problem(op, f"{where}: {rule.attribute}={value!r} is not supported ({rule.note})")

    for value in [*model.graph.input, *model.graph.output]:
        elem = value.type.tensor_type.elem_type
        if elem not in EDGE_TYPES:
            name = TensorProto.DataType.Name(elem)
            problem("dtype", f"graph input/output '{value.name}' has type {name}, which TensorRT cannot bind")

    report.ops = [OpUse(op, n, *status[op]) for op, n in sorted(counts.items())]
    return report
