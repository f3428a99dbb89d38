"""What TensorRT 10's ONNX parser (onnx-tensorrt) accepts, as a data table.

The facts come from the operator support matrix in onnx-tensorrt's
``docs/operators.md`` for TensorRT 10.15, whose header reads:

    "TensorRT 10.15 supports operators in the inclusive range of opset 9 to opset 24."

Every operator row of that matrix is listed in :data:`OPERATORS`, whether it is
marked supported (Y) or not (N), with the data types the document lists and its
restriction text paraphrased in one sentence.  The part of a restriction that
concerns a node attribute's *value* (and so can be checked by looking at the ONNX
graph alone) is also given as :class:`AttributeRule` entries; restrictions about
ranks, dynamic shapes, types, constant-ness of inputs or extra outputs stay as text.

Restrictions with a list-valued attribute (``dilations`` all ones, DeformConv's
symmetric ``pads``) and attribute presence (Constant's ``sparse_value`` and
string values) are kept as text only.

This module is a plain table: it imports nothing from TensorRT and needs no GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "OPERATORS",
    "OPSET_MAX",
    "OPSET_MIN",
    "SOURCE",
    "AttributeRule",
    "OpSupport",
]

SOURCE = (
    "onnx-tensorrt docs/operators.md, TensorRT 10.x (10.15: 'TensorRT 10.15 supports "
    "operators in the inclusive range of opset 9 to opset 24')"
)
OPSET_MIN: int = 9
OPSET_MAX: int = 24


@dataclass(frozen=True)
class AttributeRule:
    """A restriction on one attribute that can be checked statically."""

    attribute: str
    allowed: tuple  # allowed values (str as str, int as int); ONNX default applies when absent
    default: object  # the ONNX default value of the attribute when it is not set on the node
    note: str  # short human sentence


@dataclass(frozen=True)
class OpSupport:
    supported: bool
    types: tuple[str, ...]  # e.g. ("FP32", "FP16", "INT32"); empty if the doc lists none
    restriction: str = ""  # the doc's restriction, paraphrased in one sentence ("" if none)
    rules: tuple[AttributeRule, ...] = ()  # the statically checkable part of the restriction


# Type groups that recur in the document (used only to keep the table short).
_F2: tuple[str, ...] = ("FP32", "FP16")
_F3: tuple[str, ...] = ("FP32", "FP16", "BF16")
_F3I: tuple[str, ...] = _F3 + ("INT32", "INT64")
_F3IB: tuple[str, ...] = _F3I + ("BOOL",)
_BOOL: tuple[str, ...] = ("BOOL",)
_CONST_TYPES: tuple[str, ...] = (
    "FP32",
    "FP16",
    "BF16",
    "FP8",
    "FP4",
    "INT4",
    "INT32",
    "INT64",
    "BOOL",
)
_CAST_TYPES: tuple[str, ...] = ("FP32", "FP16", "BF16", "INT32", "INT64", "UINT8", "BOOL")

_NO = OpSupport(supported=False, types=())

_AXES_INIT = "The `axes` input must be an initializer."
_SEED = "The `seed` attribute is accepted but ignored by TensorRT."
_BIDIR = (
    "For bidirectional {0}s the forward and reverse passes must use the same activation functions."
)
_DILATIONS = "`dilations` must be empty or all ones."
_AXES_CONST = "`axes` must be resolvable to a constant at build time."


def _y(types: tuple[str, ...], restriction: str = "", *rules: AttributeRule) -> OpSupport:
    return OpSupport(supported=True, types=types, restriction=restriction, rules=tuple(rules))


# --- statically checkable attribute rules --------------------------------------------------

_RESIZE_RULES: tuple[AttributeRule, ...] = (
    AttributeRule(
        attribute="mode",
        allowed=("nearest", "linear"),
        default="nearest",
        note="TensorRT supports only 'nearest' and 'linear' resize modes ('cubic' is unsupported).",
    ),
    AttributeRule(
        attribute="coordinate_transformation_mode",
        allowed=(
            "half_pixel",
            "pytorch_half_pixel",
            "tf_half_pixel_for_nn",
            "asymmetric",
            "align_corners",
        ),
        default="half_pixel",
        note=(
            "TensorRT supports only the half_pixel, pytorch_half_pixel, tf_half_pixel_for_nn, "
            "asymmetric and align_corners coordinate transformations."
        ),
    ),
    AttributeRule(
        attribute="nearest_mode",
        allowed=("floor", "ceil", "round_prefer_floor", "round_prefer_ceil"),
        default="round_prefer_floor",
        note="TensorRT supports the floor, ceil, round_prefer_floor and round_prefer_ceil nearest modes.",
    ),
    AttributeRule(
        attribute="keep_aspect_ratio_policy",
        allowed=("stretch",),
        default="stretch",
        note="TensorRT supports only the 'stretch' aspect ratio policy.",
    ),
    AttributeRule(
        attribute="antialias",
        allowed=(0,),
        default=0,
        note="TensorRT does not support antialiased resizing.",
    ),
)

_LSTM_RULES: tuple[AttributeRule, ...] = (
    AttributeRule(
        attribute="input_forget",
        allowed=(0,),
        default=0,
        note="TensorRT requires LSTM `input_forget` to be 0 (no coupled input/forget gate).",
    ),
    AttributeRule(
        attribute="layout",
        allowed=(0,),
        default=0,
        note="TensorRT requires LSTM `layout` to be 0 (sequence-major tensors).",
    ),
)

_ATTENTION_RULES: tuple[AttributeRule, ...] = (
    AttributeRule(
        attribute="qk_matmul_output_mode",
        allowed=(0,),
        default=0,
        note="TensorRT does not support the Attention `qk_matmul_output_mode` attribute.",
    ),
    AttributeRule(
        attribute="softcap",
        allowed=(0.0,),
        default=0.0,
        note="TensorRT does not support Attention softcapping (`softcap`).",
    ),
)

_SCATTERND_RULES: tuple[AttributeRule, ...] = (
    AttributeRule(
        attribute="reduction",
        allowed=("none",),
        default="none",
        note="TensorRT supports ScatterND only without a reduction.",
    ),
)

_TOPK_RULES: tuple[AttributeRule, ...] = (
    AttributeRule(
        attribute="sorted",
        allowed=(1,),
        default=1,
        note="TensorRT requires TopK `sorted` to be 1.",
    ),
)

_TENSORSCATTER_RULES: tuple[AttributeRule, ...] = (
    AttributeRule(
        attribute="axis",
        allowed=(-2,),
        default=-2,
        note="TensorRT supports TensorScatter only along axis -2.",
    ),
)


# --- the table (one entry per row of the document, in the document's order) ---------------

OPERATORS: dict[str, OpSupport] = {
    "Abs": _y(_F3I),
    "Acos": _y(_F3),
    "Acosh": _y(_F3),
    "Add": _y(_F3I),
    "AffineGrid": _NO,
    "And": _y(_BOOL),
    "ArgMax": _y(_F3I),
    "ArgMin": _y(_F3I),
    "Asin": _y(_F3),
    "Asinh": _y(_F3),
    "Atan": _y(_F3),
    "Atanh": _y(_F3),
    "Attention": _y(
        _F3 + ("INT8", "FP8"),
        "Q, K, V and attn_mask must be 4D; the past_key/past_value/nonpad_kv_seqlen inputs, the "
        "present_key/present_value/qk_matmul_output outputs and the qk_matmul_output_mode/softcap "
        "attributes are unsupported, and head counts are taken from the second dimension of Q and K/V.",
        *_ATTENTION_RULES,
    ),
    "AveragePool": _y(_F3, "Only 2D or 3D pooling is supported, and " + _DILATIONS),
    "BatchNormalization": _y(_F3),
    "Bernoulli": _NO,
    "BitShift": _NO,
    "BitwiseAnd": _NO,
    "BitwiseNot": _NO,
    "BitwiseOr": _NO,
    "BitwiseXor": _NO,
    "BlackmanWindow": _y(_F2),
    "Cast": _y(_CAST_TYPES),
    "CastLike": _y(_CAST_TYPES),
    "Ceil": _y(_F3),
    "Col2Im": _NO,
    "Celu": _y(_F3),
    "CenterCropPad": _NO,
    "Clip": _y(_F3),
    "Compress": _NO,
    "Concat": _y(_F3IB),
    "ConcatFromSequence": _NO,
    "Constant": _y(
        _CONST_TYPES,
        "The `sparse_value`, `value_string` and `value_strings` attributes are unsupported.",
    ),
    "ConstantOfShape": _y(_CONST_TYPES),
    "Conv": _y(_F3),
    "ConvInteger": _NO,
    "ConvTranspose": _y(_F3),
    "Cos": _y(_F3),
    "Cosh": _y(_F3),
    "CumSum": _y(_F3, "The `axis` input must be a build-time constant."),
    "DFT": _NO,
    "DeformConv": _y(
        _F2,
        "The input must have 1 or 2 spatial dimensions, and `pads` must be equal at the beginning "
        "and end of each spatial axis.",
    ),
    "DepthToSpace": _y(_F3I),
    "DequantizeLinear": _y(("INT8", "FP8", "FP4", "INT4"), "`x_zero_point` must be zero."),
    "Det": _NO,
    "Div": _y(_F3I),
    "Dropout": _y(_F3, "The `is_training` input must be an initializer that evaluates to False."),
    "DynamicQuantizeLinear": OpSupport(
        supported=False,
        types=(),
        restriction=(
            "Not supported; TensorRT's IDynamicQuantize can instead be built from ONNX operators "
            "in a model local function."
        ),
    ),
    "Einsum": _y(_F3),
    "Elu": _y(_F3),
    "Equal": _y(_F3I),
    "Erf": _y(_F3),
    "Exp": _y(_F3),
    "Expand": _y(_F3IB),
    "EyeLike": _y(_F3IB, "The input must have static dimensions."),
    "Flatten": _y(_F3IB),
    "Floor": _y(_F3),
    "Gather": _y(_F3IB),
    "GatherElements": _y(_F3IB),
    "GatherND": _y(_F3IB),
    "Gelu": _y(_F3 + ("INT8", "INT32", "INT64")),
    "Gemm": _y(_F3),
    "GlobalAveragePool": _y(_F3),
    "GlobalLpPool": _y(_F3),
    "GlobalMaxPool": _y(_F3),
    "Greater": _y(_F3I),
    "GreaterOrEqual": _y(_F3I),
    "GridSample": _y(_F2, "The input must be 4D."),
    "GroupNormalization": _y(_F3),
    "GRU": _y(_F3, _BIDIR.format("GRU")),
    "HammingWindow": _y(_F2),
    "HannWindow": _y(_F2),
    "HardSigmoid": _y(_F3),
    "HardSwish": _y(_F3),
    "Hardmax": _y(_F3, "The input's `axis` dimension must be a build-time constant."),
    "Identity": _y(_F3IB),
    "If": _y(
        _F3IB,
        "The outputs of the two branches must have the same rank and must have different names.",
    ),
    "ImageScaler": _y(_F3),
    "ImageDecoder": _NO,
    "InstanceNormalization": _y(_F3),
    "IsInf": _y(_F3),
    "IsNaN": _y(_F3I),
    "LayerNormalization": _y(_F3, "Only the first output `Y` is supported."),
    "LeakyRelu": _y(_F3),
    "Less": _y(_F3I),
    "LessOrEqual": _y(_F3I),
    "Log": _y(_F3),
    "LogSoftmax": _y(_F3),
    "Loop": _y(
        _F3IB,
        "Scan outputs cannot have a dynamic length, and loop-carried dependencies must keep the "
        "same shape across iterations.",
    ),
    "LRN": _y(_F3),
    "LSTM": _y(
        _F3,
        _BIDIR.format("LSTM") + " `input_forget` and `layout` must be 0.",
        *_LSTM_RULES,
    ),
    "LpNormalization": _y(_F3),
    "LpPool": _y(_F3, _DILATIONS),
    "MatMul": _y(_F3),
    "MatMulInteger": _NO,
    "Max": _y(_F3I),
    "MaxPool": _y(
        _F3,
        "Only 2D or 3D pooling is supported, the `Indices` output is unsupported, and "
        + _DILATIONS,
    ),
    "MaxRoiPool": _NO,
    "MaxUnpool": _NO,
    "Mean": _y(_F3 + ("FP8", "INT32", "INT64")),
    "MeanVarianceNormalization": _y(_F3),
    "MelWeightMatrix": _NO,
    "Min": _y(_F3I),
    "Mish": _y(_F2),
    "Mod": _y(_F3I),
    "Mul": _y(_F3I),
    "Multinomial": _NO,
    "Neg": _y(_F3I),
    "NegativeLogLikelihoodLoss": _NO,
    "NonMaxSuppression": _y(_F2),
    "NonZero": _y(_F2),
    "Not": _y(_BOOL),
    "OneHot": _y(_F3IB, "The `depth` input must be a build-time constant."),
    "Optional": _NO,
    "OptionalGetElement": _NO,
    "OptionalHasElement": _NO,
    "Or": _y(_BOOL),
    "Pad": _y(_F3I),
    "ParametricSoftplus": _y(_F3),
    "Pow": _y(_F3I),
    "PRelu": _y(_F3),
    "QLinearConv": _NO,
    "QLinearMatMul": _NO,
    "QuantizeLinear": _y(_F3, "`y_zero_point` must be 0."),
    "RandomNormal": _y(_F3, _SEED),
    "RandomNormalLike": _y(_F3, _SEED),
    "RandomUniform": _y(_F3, _SEED),
    "RandomUniformLike": _y(_F3, _SEED),
    "Range": _y(_F3I),
    "Reciprocal": _y(_F3),
    "ReduceL1": _y(_F3I, _AXES_INIT),
    "ReduceL2": _y(_F3I, _AXES_INIT),
    "ReduceLogSum": _y(_F3I, _AXES_INIT),
    "ReduceLogSumExp": _y(_F3I, _AXES_INIT),
    "ReduceMax": _y(_F3I, _AXES_INIT),
    "ReduceMean": _y(_F3I, _AXES_INIT),
    "ReduceMin": _y(_F3I, _AXES_INIT),
    "ReduceProd": _y(_F3I, _AXES_INIT),
    "ReduceSum": _y(_F3I, _AXES_INIT),
    "ReduceSumSquare": _y(_F3I, _AXES_INIT),
    "RegexFullMatch": _NO,
    "Relu": _y(_F3I),
    "Reshape": _y(_F3IB),
    "Resize": _y(
        _F3,
        "Only the nearest/linear modes, the half_pixel, pytorch_half_pixel, tf_half_pixel_for_nn, "
        "asymmetric and align_corners coordinate transformations, the floor/ceil/round_prefer_floor/"
        "round_prefer_ceil nearest modes and the 'stretch' aspect ratio policy are supported, "
        "antialiasing is not, and a tensor `scales` input requires `axes` to be an iota of length "
        "rank(input).",
        *_RESIZE_RULES,
    ),
    "ReverseSequence": _y(_F3IB),
    "RMSNormalization": _y(_F3),
    "RNN": _y(_F3, _BIDIR.format("RNN")),
    "RoiAlign": _y(_F2),
    "RotaryEmbedding": _y(_F3, "The `position_ids` input must be INT64."),
    "Round": _y(_F3),
    "STFT": _y(
        ("FP32",),
        "The `frame_step` and `window` inputs must be initializers, and the signal must be real-valued.",
    ),
    "ScaledTanh": _y(_F3),
    "Scan": _y(_F3),
    "Scatter": _y(_F3I),
    "ScatterElements": _y(_F3I),
    "ScatterND": _y(_F3I, "A `reduction` other than 'none' is not supported.", *_SCATTERND_RULES),
    "Selu": _y(_F3),
    "SequenceAt": _NO,
    "SequenceConstruct": _NO,
    "SequenceEmpty": _NO,
    "SequenceErase": _NO,
    "SequenceInsert": _NO,
    "SequenceLength": _NO,
    "SequenceMap": _NO,
    "Shape": _y(_F3IB),
    "Shrink": _y(_F3I),
    "Sigmoid": _y(_F3),
    "Sign": _y(_F3I),
    "Sin": _y(_F3),
    "Sinh": _y(_F3),
    "Size": _y(_F3IB),
    "Slice": _y(_F3IB),
    "Softmax": _y(_F3),
    "SoftmaxCrossEntropyLoss": _NO,
    "Softplus": _y(_F3),
    "Softsign": _y(_F3),
    "SpaceToDepth": _y(_F3I),
    "Split": _y(_F3IB),
    "SplitToSequence": _NO,
    "Sqrt": _y(_F3),
    "Squeeze": _y(_F3IB, _AXES_CONST),
    "StringConcat": _NO,
    "StringNormalizer": _NO,
    "StringSplit": _NO,
    "Sub": _y(_F3I),
    "Sum": _y(_F3I),
    "Tan": _y(_F3),
    "Tanh": _y(_F3),
    "TensorScatter": _y(
        _F3 + ("INT32",),
        "`past_cache` and `update` must be 4D, and `axis` must be -2.",
        *_TENSORSCATTER_RULES,
    ),
    "TfIdfVectorizer": _NO,
    "ThresholdedRelu": _y(_F3),
    "Tile": _y(_F3IB),
    "TopK": _y(_F3I, "`sorted` must be 1, and the `K` input must be less than 3840.", *_TOPK_RULES),
    "Transpose": _y(_F3IB),
    "Trilu": _y(_F3IB),
    "Unique": _NO,
    "Unsqueeze": _y(_F3IB, _AXES_CONST),
    "Upsample": _y(_F3),
    "Where": _y(_F3IB),
    "Xor": _y(_BOOL),
}
