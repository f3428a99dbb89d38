"""fp16 variant of an fp32 ONNX graph: half-precision compute, fp32 at the edges.

Nodes whose operators are safe in half precision run in fp16; normalisations, reductions,
exponentials and anything inside ``keep_scopes`` (module paths recorded by torch's exporter)
stay fp32, as do the graph's inputs and outputs. Cast nodes are inserted exactly where a
value crosses between the two, and constants used only by fp16 nodes are stored in fp16.
The result is also what TensorRT 10 and later build fp16 engines from: a strongly-typed
network takes its precisions from the graph instead of from builder flags.
"""

from __future__ import annotations

import ast
from collections import defaultdict

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Operators computed in fp16 (others stay fp32). Elementwise arithmetic, matrix products,
# convolutions, activations, resampling and pure data movement are safe in half precision.
FP16_OPS = frozenset(
    """Add Sub Mul Div Neg Abs Max Min Sqrt MatMul Gemm Conv ConvTranspose Relu LeakyRelu PRelu
    Sigmoid Tanh HardSigmoid Erf Sin Cos Clip Where Resize Concat Reshape Transpose Slice Split
    Gather GatherND Expand Squeeze Unsqueeze Flatten Tile Pad Identity DepthToSpace SpaceToDepth
    MaxPool AveragePool GlobalAveragePool""".split()
)
# Kept fp32 even though they could run in fp16: their statistics overflow or lose precision.
KEEP_FP32_OPS = frozenset(
    """BatchNormalization InstanceNormalization LayerNormalization GroupNormalization Softmax
    LogSoftmax Exp Log Pow ReduceMean ReduceSum ReduceL2 ReduceMax ReduceMin ReduceProd""".split()
)
# Inputs whose type the operator fixes to float32 regardless of the data type (Resize's roi, scales).
FP32_INPUTS = {"Resize": {1, 2}}

SCOPES_KEY = "pkg.torch.onnx.name_scopes"
FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16


def node_scopes(node: onnx.NodeProto) -> list[str]:
    """Module paths (from the exported module) that produced ``node``, as torch's exporter records them."""
    for prop in node.metadata_props:
        if prop.key == SCOPES_KEY:
            try:
                return list(ast.literal_eval(prop.value))  # ['', 'encoder', 'encoder.net', ..., op]
            except (ValueError, SyntaxError):
                return []
    return []


def _in_scope(node: onnx.NodeProto, keep_scopes: tuple[str, ...]) -> bool:
    return any(s == k or s.startswith(k + ".") for s in node_scopes(node) for k in keep_scopes)


def convert_to_fp16(model: onnx.ModelProto, keep_scopes: tuple[str, ...] = ()) -> onnx.ModelProto:
    """A copy of ``model`` computing in fp16 where safe, with fp32 inputs and outputs."""
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in model.graph.node for a in n.attribute):
        raise ValueError("fp16 conversion of graphs with control flow (If/Loop/Scan) is not supported")
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *g.input, *g.output]}
    types.update({t.name: t.data_type for t in g.initializer})
    for n in g.node:
        if n.op_type == "Constant":
            types[n.output[0]] = next((a.t.data_type for a in n.attribute if a.name == "value"), 0)

    # nodes by position (protobuf wrappers are not stable objects, so no id()-keyed sets)
    graph_nodes = [onnx.NodeProto.FromString(n.SerializeToString()) for n in g.node]
    half = {k for k, n in enumerate(graph_nodes) if n.op_type in FP16_OPS and not _in_scope(n, keep_scopes)}

    def wants_half(k: int, i: int) -> bool:
        return k in half and i not in FP32_INPUTS.get(graph_nodes[k].op_type, ())

    consumers: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for k, n in enumerate(graph_nodes):
        for i, v in enumerate(n.input):
            consumers[v].append((k, i))
    outputs = {o.name for o in g.output}

    # where each float value lives: fp16 if made by an fp16 node, or a constant only fp16 nodes read
    home: dict[str, int] = {}
    for t in g.initializer:
        if t.data_type == FLOAT:
            used = consumers.get(t.name, [])
            if used and all(wants_half(n, i) for n, i in used) and t.name not in outputs:
                t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
                home[t.name] = HALF
            else:
                home[t.name] = FLOAT
    for k, n in enumerate(graph_nodes):
        for v in n.output:
            if types.get(v) != FLOAT:
                continue
            if n.op_type == "Constant":
                used = consumers.get(v, [])
                if used and all(wants_half(c, i) for c, i in used) and v not in outputs:
                    attr = next(a for a in n.attribute if a.name == "value")
                    attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16)))
                    home[v] = HALF
                else:
                    home[v] = FLOAT
            else:
                home[v] = HALF if k in half else FLOAT
    for v in g.input:
        if types.get(v.name) == FLOAT:
            home[v.name] = FLOAT

    # graph outputs made in fp16: the producer writes "<name>__fp16", a final Cast restores <name>
    tail: list[onnx.NodeProto] = []
    for out in g.output:
        if home.get(out.name) == HALF:
            inner = f"{out.name}__fp16"
            for n in graph_nodes:
                n.output[:] = [inner if v == out.name else v for v in n.output]
                n.input[:] = [inner if v == out.name else v for v in n.input]
            home[inner] = HALF
            tail.append(helper.make_node("Cast", [inner], [out.name], to=FLOAT, name=f"{out.name}__to_fp32"))

    casts: dict[tuple[str, int], str] = {}
    nodes: list[onnx.NodeProto] = []
    for k, n in enumerate(graph_nodes):
        for i, v in enumerate(n.input):
            if v not in home:
                continue  # not a float value (or an optional empty input)
            need = HALF if wants_half(k, i) else FLOAT
            if home[v] != need:
                key = (v, need)
                if key not in casts:
                    suffix = "fp16" if need == HALF else "fp32"
                    casts[key] = f"{v}__to_{suffix}"
                    nodes.append(helper.make_node("Cast", [v], [casts[key]], to=need, name=f"{v}__cast_{suffix}"))
                n.input[i] = casts[key]
        nodes.append(n)
    g.ClearField("node")
    g.node.extend(nodes + tail)
    g.ClearField("value_info")
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model)
    return model


def node_precisions(model: onnx.ModelProto) -> dict[str, str]:
    """Each compute node (by name, else its first output) -> "fp16" or "fp32", as the graph computes it.

    Cast and Constant nodes are left out. TensorRT 8/9 builds of the fp16 engine use this to
    pin to fp32 the nodes the fp16 variant keeps in fp32 (see :mod:`impasto.export.tensorrt`).
    """
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *model.graph.output]}
    out: dict[str, str] = {}
    for n in model.graph.node:
        if n.op_type in ("Cast", "Constant") or not n.output:
            continue
        kinds = {types.get(v) for v in n.output}
        if HALF in kinds:
            out[n.name or n.output[0]] = "fp16"
        elif FLOAT in kinds:
            out[n.name or n.output[0]] = "fp32"
    return out


def count_precisions(model: onnx.ModelProto) -> dict[str, int]:
    """How many compute nodes run in fp16 and in fp32 (Cast and Constant nodes not counted)."""
    counts = {"fp16": 0, "fp32": 0}
    for precision in node_precisions(model).values():
        counts[precision] += 1
    return counts
