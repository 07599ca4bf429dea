"""TensorRT compatibility lint for ONNX graphs, without TensorRT.

The table below restates, as data, the ONNX operator support matrix that TensorRT's ONNX
parser publishes (source: ``onnx/onnx-tensorrt`` ``docs/operators.md`` for TensorRT 10.15,
opset range 9..24; TensorRT 11.2 states the same opset range). Only facts are taken from it:
which operators are supported, for which tensor types, and the per-operator restrictions.
On top of the table we check the things that bite a detector in practice (DEPLOYMENT
digest, sections 1.5 and "Pitfalls"):

* RoiAlign attributes left at their defaults: ONNX opset >= 16 defaults
  ``coordinate_transformation_mode`` to ``half_pixel`` and the TensorRT parser defaults a
  missing ``sampling_ratio`` to 1 while ONNX says 0 (adaptive); ``mode=max`` differs
  between ONNX, ORT and TensorRT; below opset 16 ``aligned=True`` is silently lost.
* Resize ``scales`` that are not build-time constants (older parsers require
  initializers; fold them first).
* int64 graph inputs, which TensorRT narrows to int32 in several importers.
* Data-dependent output shapes (NonZero / NonMaxSuppression / Unique feeding a graph
  output whose shape is not static), which need an ``IOutputAllocator`` at run time.

Every finding is an error (the parser or the numerics will go wrong) or a warning (works,
but has a cost or a caveat); :func:`lint_model` returns them and the ``lint-trt`` command
exits non-zero when any error is found.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper, numpy_helper

from personsearch_export.errors import ExportError

__all__ = [
    "TRT_OPSET_RANGE",
    "TRT_TOPK_K_MAX",
    "TRT_TOPK_MAX",
    "TRT_OPERATOR_TABLE",
    "TRT_TABLE_SOURCE",
    "Finding",
    "OpSupport",
    "lint_model",
    "lint_path",
]

#: Where :data:`TRT_OPERATOR_TABLE` comes from.
TRT_TABLE_SOURCE = "onnx/onnx-tensorrt docs/operators.md, TensorRT 10.15 (opset 9..24)"

#: Inclusive opset range of the ai.onnx domain that the TensorRT 10.15 / 11.x parser imports.
TRT_OPSET_RANGE = (9, 24)

# Short type names used in the support matrix.
_F = ("FP32", "FP16", "BF16")
_FI = (*_F, "INT32", "INT64")
_FIB = (*_FI, "BOOL")


@dataclass(frozen=True)
class OpSupport:
    """One row of TensorRT's ONNX operator support matrix.

    Attributes:
        supported: Whether the parser imports the operator at all.
        types: Tensor types listed for the operator's data input ("FP32", "INT64", ...).
        restriction: The restriction text of the matrix, in our words ("" when none).
    """

    supported: bool
    types: tuple[str, ...] = ()
    restriction: str = ""


def _y(types: tuple[str, ...], restriction: str = "") -> OpSupport:
    return OpSupport(True, types, restriction)


_NO = OpSupport(False)

#: ai.onnx operator -> TensorRT support, from the public support matrix (see module docstring).
TRT_OPERATOR_TABLE: dict[str, OpSupport] = {
    "Abs": _y(_FI),
    "Acos": _y(_F),
    "Acosh": _y(_F),
    "Add": _y(_FI),
    "AffineGrid": _NO,
    "And": _y(("BOOL",)),
    "ArgMax": _y(_FI),
    "ArgMin": _y(_FI),
    "Asin": _y(_F),
    "Asinh": _y(_F),
    "Atan": _y(_F),
    "Atanh": _y(_F),
    "Attention": _y((*_F, "INT8", "FP8"), "4-D Q/K/V only; KV-cache inputs and extra outputs unsupported"),
    "AveragePool": _y(_F, "2-D or 3-D pooling only; dilations must be empty or all ones"),
    "BatchNormalization": _y(_F),
    "Bernoulli": _NO,
    "BitShift": _NO,
    "BitwiseAnd": _NO,
    "BitwiseNot": _NO,
    "BitwiseOr": _NO,
    "BitwiseXor": _NO,
    "BlackmanWindow": _y(("FP32", "FP16")),
    "Cast": _y((*_FI, "UINT8", "BOOL")),
    "CastLike": _y((*_FI, "UINT8", "BOOL")),
    "Ceil": _y(_F),
    "Celu": _y(_F),
    "CenterCropPad": _NO,
    "Clip": _y(_F),
    "Col2Im": _NO,
    "Compress": _NO,
    "Concat": _y(_FIB),
    "ConcatFromSequence": _NO,
    "Constant": _y((*_FIB, "FP8", "FP4", "INT4"), "sparse_value and string values unsupported"),
    "ConstantOfShape": _y((*_FIB, "FP8", "FP4", "INT4")),
    "Conv": _y(_F),
    "ConvInteger": _NO,
    "ConvTranspose": _y(_F),
    "Cos": _y(_F),
    "Cosh": _y(_F),
    "CumSum": _y(_F, "axis must be a build-time constant"),
    "DFT": _NO,
    "DeformConv": _y(("FP32", "FP16"), "1-D or 2-D spatial input; symmetric pads"),
    "DepthToSpace": _y(_FI),
    "DequantizeLinear": _y(("INT8", "FP8", "FP4", "INT4"), "x_zero_point must be zero"),
    "Det": _NO,
    "Div": _y(_FI),
    "Dropout": _y(_F, "is_training must be an initializer that is False"),
    "DynamicQuantizeLinear": _NO,
    "Einsum": _y(_F),
    "Elu": _y(_F),
    "Equal": _y(_FI),
    "Erf": _y(_F),
    "Exp": _y(_F),
    "Expand": _y(_FIB),
    "EyeLike": _y(_FIB, "input must have static dimensions"),
    "Flatten": _y(_FIB),
    "Floor": _y(_F),
    "Gather": _y(_FIB),
    "GatherElements": _y(_FIB),
    "GatherND": _y(_FIB),
    "Gelu": _y((*_FI, "INT8")),
    "Gemm": _y(_F),
    "GlobalAveragePool": _y(_F),
    "GlobalLpPool": _y(_F),
    "GlobalMaxPool": _y(_F),
    "Greater": _y(_FI),
    "GreaterOrEqual": _y(_FI),
    "GridSample": _y(("FP32", "FP16"), "4-D input only"),
    "GroupNormalization": _y(_F),
    "GRU": _y(_F, "bidirectional GRUs need the same activations both ways"),
    "HammingWindow": _y(("FP32", "FP16")),
    "HannWindow": _y(("FP32", "FP16")),
    "HardSigmoid": _y(_F),
    "HardSwish": _y(_F),
    "Hardmax": _y(_F, "axis dimension must be a build-time constant"),
    "Identity": _y(_FIB),
    "If": _y(_FIB, "both branches must give outputs of the same rank with different names"),
    "ImageScaler": _y(_F),
    "ImageDecoder": _NO,
    "InstanceNormalization": _y(_F),
    "IsInf": _y(_F),
    "IsNaN": _y(_FI),
    "LayerNormalization": _y(_F, "only the first output Y is supported"),
    "LeakyRelu": _y(_F),
    "Less": _y(_FI),
    "LessOrEqual": _y(_FI),
    "Log": _y(_F),
    "LogSoftmax": _y(_F),
    "Loop": _y(_FIB, "scan outputs need a static length; carried shapes must not change"),
    "LRN": _y(_F),
    "LSTM": _y(_F, "input_forget and layout must be 0"),
    "LpNormalization": _y(_F),
    "LpPool": _y(_F, "dilations must be empty or all ones"),
    "MatMul": _y(_F),
    "MatMulInteger": _NO,
    "Max": _y(_FI),
    "MaxPool": _y(_F, "2-D or 3-D only; the Indices output is unsupported; dilations all ones"),
    "MaxRoiPool": _NO,
    "MaxUnpool": _NO,
    "Mean": _y((*_FI, "FP8")),
    "MeanVarianceNormalization": _y(_F),
    "MelWeightMatrix": _NO,
    "Min": _y(_FI),
    "Mish": _y(("FP32", "FP16")),
    "Mod": _y(_FI),
    "Mul": _y(_FI),
    "Multinomial": _NO,
    "Neg": _y(_FI),
    "NegativeLogLikelihoodLoss": _NO,
    "NonMaxSuppression": _y(("FP32", "FP16"), "output shape is data dependent"),
    "NonZero": _y(("FP32", "FP16"), "output shape is data dependent"),
    "Not": _y(("BOOL",)),
    "OneHot": _y(_FIB, "depth must be a build-time constant"),
    "Optional": _NO,
    "OptionalGetElement": _NO,
    "OptionalHasElement": _NO,
    "Or": _y(("BOOL",)),
    "Pad": _y(_FI),
    "ParametricSoftplus": _y(_F),
    "Pow": _y(_FI),
    "PRelu": _y(_F),
    "QLinearConv": _NO,
    "QLinearMatMul": _NO,
    "QuantizeLinear": _y(_F, "y_zero_point must be 0"),
    "RandomNormal": _y(_F, "seed is ignored"),
    "RandomNormalLike": _y(_F, "seed is ignored"),
    "RandomUniform": _y(_F, "seed is ignored"),
    "RandomUniformLike": _y(_F, "seed is ignored"),
    "Range": _y(_FI),
    "Reciprocal": _y(_F),
    "ReduceL1": _y(_FI, "axes must be an initializer"),
    "ReduceL2": _y(_FI, "axes must be an initializer"),
    "ReduceLogSum": _y(_FI, "axes must be an initializer"),
    "ReduceLogSumExp": _y(_FI, "axes must be an initializer"),
    "ReduceMax": _y(_FI, "axes must be an initializer"),
    "ReduceMean": _y(_FI, "axes must be an initializer"),
    "ReduceMin": _y(_FI, "axes must be an initializer"),
    "ReduceProd": _y(_FI, "axes must be an initializer"),
    "ReduceSum": _y(_FI, "axes must be an initializer"),
    "ReduceSumSquare": _y(_FI, "axes must be an initializer"),
    "RegexFullMatch": _NO,
    "Relu": _y(_FI),
    "Reshape": _y(_FIB),
    "Resize": _y(
        _F,
        "coordinate modes half_pixel/pytorch_half_pixel/tf_half_pixel_for_nn/asymmetric/align_corners; "
        "modes nearest/linear; aspect policy stretch; no antialiasing",
    ),
    "ReverseSequence": _y(_FIB),
    "RMSNormalization": _y(_F),
    "RNN": _y(_F, "bidirectional RNNs need the same activations both ways"),
    "RoiAlign": _y(("FP32", "FP16"), "imported as the ROIAlign_TRT plugin"),
    "RotaryEmbedding": _y(_F, "position_ids must be INT64"),
    "Round": _y(_F),
    "STFT": _y(("FP32",), "frame_step and window must be initializers; real input"),
    "ScaledTanh": _y(_F),
    "Scan": _y(_F),
    "Scatter": _y(_FI),
    "ScatterElements": _y(_FI),
    "ScatterND": _y(_FI, "reduction other than none is unsupported"),
    "Selu": _y(_F),
    "SequenceAt": _NO,
    "SequenceConstruct": _NO,
    "SequenceEmpty": _NO,
    "SequenceErase": _NO,
    "SequenceInsert": _NO,
    "SequenceLength": _NO,
    "SequenceMap": _NO,
    "Shape": _y(_FIB),
    "Shrink": _y(_FI),
    "Sigmoid": _y(_F),
    "Sign": _y(_FI),
    "Sin": _y(_F),
    "Sinh": _y(_F),
    "Size": _y(_FIB),
    "Slice": _y(_FIB),
    "Softmax": _y(_F),
    "SoftmaxCrossEntropyLoss": _NO,
    "Softplus": _y(_F),
    "Softsign": _y(_F),
    "SpaceToDepth": _y(_FI),
    "Split": _y(_FIB),
    "SplitToSequence": _NO,
    "Sqrt": _y(_F),
    "Squeeze": _y(_FIB, "axes must be resolvable to a constant"),
    "StringConcat": _NO,
    "StringNormalizer": _NO,
    "StringSplit": _NO,
    "Sub": _y(_FI),
    "Sum": _y(_FI),
    "Tan": _y(_F),
    "Tanh": _y(_F),
    "TensorScatter": _y((*_F, "INT32"), "4-D past_cache/update; axis -2"),
    "TfIdfVectorizer": _NO,
    "ThresholdedRelu": _y(_F),
    "Tile": _y(_FIB),
    "TopK": _y(_FI, "sorted must be 1; K must be a build-time constant below 3840"),
    "Transpose": _y(_FIB),
    "Trilu": _y(_FIB),
    "Unique": _NO,
    "Unsqueeze": _y(_FIB, "axes must be resolvable to a constant"),
    "Upsample": _y(_F),
    "Where": _y(_FIB),
    "Xor": _y(("BOOL",)),
}

#: Exclusive bound on the K of TensorRT's TopK layer, TensorRT 10.x and 11.x (from the
#: support matrix: "K < 3840"; NVIDIA's operator page words it as k <= 3840, so the
#: stricter reading is the one that builds everywhere).
TRT_TOPK_MAX = 3840
#: Largest TopK K that the lint accepts, and the cap the exporter puts on the RPN's
#: pre-NMS top-N (``personsearch export --rpn-pre-nms-top-n``).
TRT_TOPK_K_MAX = TRT_TOPK_MAX - 1

_RESIZE_COORD_MODES = {
    "half_pixel",
    "pytorch_half_pixel",
    "tf_half_pixel_for_nn",
    "asymmetric",
    "align_corners",
}
_RESIZE_MODES = {"nearest", "linear"}
_RESIZE_NEAREST_MODES = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}
#: Operators whose output shape depends on the input values.
_DATA_DEPENDENT_OPS = {"NonZero", "NonMaxSuppression", "Unique", "Compress"}

_TYPE_NAMES = {
    TensorProto.FLOAT: "FP32",
    TensorProto.FLOAT16: "FP16",
    TensorProto.BFLOAT16: "BF16",
    TensorProto.DOUBLE: "DOUBLE",
    TensorProto.INT32: "INT32",
    TensorProto.INT64: "INT64",
    TensorProto.INT8: "INT8",
    TensorProto.UINT8: "UINT8",
    TensorProto.BOOL: "BOOL",
    TensorProto.FLOAT8E4M3FN: "FP8",
    TensorProto.INT4: "INT4",
    TensorProto.FLOAT4E2M1: "FP4",
}
#: Data types TensorRT's parser accepts at all (DOUBLE is cast down to FP32).
_TRT_DATA_TYPES = set(_TYPE_NAMES.values())
_FLOAT_TYPES = {"FP32", "FP16", "BF16", "DOUBLE"}


@dataclass(frozen=True)
class Finding:
    """One lint result.

    Attributes:
        severity: ``"error"`` (the TensorRT parser rejects it or the numbers change) or
            ``"warning"`` (works, with a cost or caveat worth knowing).
        code: Stable short identifier, e.g. ``"unsupported-op"``, ``"roialign-default"``.
        message: What is wrong and what to do.
        node: Name (or ``op_type#index``) of the node concerned, "" for graph-level findings.
        model: File name of the ONNX model, filled in by :func:`lint_path`.
    """

    severity: str
    code: str
    message: str
    node: str = ""
    model: str = ""

    def to_dict(self) -> dict[str, str]:
        """Return the finding as a JSON-friendly dict."""
        return {
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "node": self.node,
            "model": self.model,
        }


@dataclass
class _Context:
    """What the per-node checks need to know about the graph."""

    opset: int
    constants: dict[str, onnx.TensorProto]
    types: dict[str, int]
    findings: list[Finding] = field(default_factory=list)

    def error(self, code: str, message: str, node: str = "") -> None:
        self.findings.append(Finding("error", code, message, node))

    def warn(self, code: str, message: str, node: str = "") -> None:
        self.findings.append(Finding("warning", code, message, node))


def _node_label(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"{node.op_type}#{index}"


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _as_str(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _input(node: onnx.NodeProto, i: int) -> str:
    """Name of the node's i-th input, "" when absent or omitted."""
    return node.input[i] if len(node.input) > i else ""


def _require_constant(ctx: _Context, node: onnx.NodeProto, label: str, i: int, what: str) -> None:
    name = _input(node, i)
    if name and name not in ctx.constants:
        ctx.error(
            "non-constant-input",
            f"{node.op_type} input '{what}' ({name}) is computed at run time; TensorRT needs it as a "
            "build-time constant (initializer or Constant node). Fold constants before export "
            "(e.g. 'polygraphy surgeon sanitize --fold-constants').",
            label,
        )


def _check_resize(ctx: _Context, node: onnx.NodeProto, label: str) -> None:
    a = _attrs(node)
    coord = _as_str(a.get("coordinate_transformation_mode", "half_pixel"))
    mode = _as_str(a.get("mode", "nearest"))
    nearest = _as_str(a.get("nearest_mode", "round_prefer_floor"))
    if coord not in _RESIZE_COORD_MODES:
        ctx.error(
            "resize-attribute", f"Resize coordinate_transformation_mode={coord!r} is not supported", label
        )
    if mode not in _RESIZE_MODES:
        ctx.error(
            "resize-attribute", f"Resize mode={mode!r} is not supported (nearest or linear only)", label
        )
    if mode == "nearest" and nearest not in _RESIZE_NEAREST_MODES:
        ctx.error("resize-attribute", f"Resize nearest_mode={nearest!r} is not supported", label)
    if int(a.get("antialias", 0)):
        ctx.error("resize-attribute", "Resize with antialias=1 is not supported", label)
    policy = _as_str(a.get("keep_aspect_ratio_policy", "stretch"))
    if policy != "stretch":
        ctx.error("resize-attribute", f"Resize keep_aspect_ratio_policy={policy!r} is not supported", label)
    # opset >= 11 layout: X, roi, scales, sizes; opset 10: X, scales.
    scales_index = 1 if ctx.opset < 11 else 2
    scales = _input(node, scales_index)
    if scales and scales not in ctx.constants:
        ctx.error(
            "resize-scales",
            f"Resize scales ({scales}) are not an initializer; TensorRT's parser needs constant scales "
            "(or give 'sizes' instead). Fold constants or export with a fixed scale factor.",
            label,
        )


def _check_topk(ctx: _Context, node: onnx.NodeProto, label: str) -> None:
    a = _attrs(node)
    if int(a.get("sorted", 1)) != 1:
        ctx.error("topk-attribute", "TopK with sorted=0 is not supported", label)
    k_name = _input(node, 1)
    if ctx.opset < 10:
        k_value = int(a.get("k", 0))
    elif k_name in ctx.constants:
        k_value = int(numpy_helper.to_array(ctx.constants[k_name]).reshape(-1)[0])
    else:
        ctx.error(
            "topk-k",
            f"TopK K ({k_name}) is computed at run time; TensorRT needs a build-time constant K "
            "(clamp it with a constant, e.g. min(K, n) folded, or pad to a fixed top-K).",
            label,
        )
        return
    if k_value >= TRT_TOPK_MAX:
        ctx.error(
            "topk-k",
            f"TopK K={k_value} but TensorRT accepts K < {TRT_TOPK_MAX}; if this is the RPN's pre-NMS "
            f"top-N, export with 'personsearch export --rpn-pre-nms-top-n {TRT_TOPK_K_MAX}' (or lower)",
            label,
        )


def _check_roialign(ctx: _Context, node: onnx.NodeProto, label: str) -> None:
    a = _attrs(node)
    if ctx.opset < 16:
        ctx.error(
            "roialign-opset",
            f"RoiAlign at opset {ctx.opset} has no coordinate_transformation_mode: aligned=True models "
            "are silently unshifted. Export at opset >= 16.",
            label,
        )
    elif "coordinate_transformation_mode" not in a:
        ctx.error(
            "roialign-default",
            "RoiAlign has no coordinate_transformation_mode; at opset >= 16 that means 'half_pixel' "
            "(aligned=True). Write it explicitly ('output_half_pixel' for aligned=False).",
            label,
        )
    if "sampling_ratio" not in a:
        ctx.error(
            "roialign-default",
            "RoiAlign has no sampling_ratio: ONNX Runtime uses 0 (adaptive) but TensorRT's parser uses 1. "
            "Write it explicitly.",
            label,
        )
    mode = _as_str(a.get("mode", "avg"))
    if mode != "avg":
        ctx.error(
            "roialign-mode",
            f"RoiAlign mode={mode!r}: max mode differs between ONNX/ORT/TensorRT and torchvision; use avg.",
            label,
        )
    for attr in ("output_height", "output_width", "spatial_scale", "mode"):
        if attr not in a:
            ctx.warn("roialign-default", f"RoiAlign attribute {attr} is left at its default; write it", label)
    rois = _input(node, 1)
    if ctx.types.get(node.input[0]) != ctx.types.get(rois) and rois in ctx.types:
        ctx.warn(
            "roialign-dtype",
            "RoiAlign features and rois differ in type; the TensorRT ROIAlign_TRT plugin requires rois "
            "of the feature type (fp16 rois lose precision on large images). Keep RoIAlign out of "
            "TensorRT graphs (split graphs) or run it in float32.",
            label,
        )


def _check_reduce(ctx: _Context, node: onnx.NodeProto, label: str) -> None:
    # Axes became an input in opset 18 (ReduceSum in opset 13).
    axes_is_input = ctx.opset >= 18 or (node.op_type == "ReduceSum" and ctx.opset >= 13)
    if axes_is_input:
        _require_constant(ctx, node, label, 1, "axes")


def _check_axes_input(ctx: _Context, node: onnx.NodeProto, label: str) -> None:
    if ctx.opset >= 13:
        _require_constant(ctx, node, label, 1, "axes")


def _check_dilations(ctx: _Context, node: onnx.NodeProto, label: str) -> None:
    dilations = _attrs(node).get("dilations")
    if dilations and any(int(d) != 1 for d in dilations):
        ctx.error(
            "pool-dilations", f"{node.op_type} with dilations {list(dilations)} is not supported", label
        )


def _check_maxpool(ctx: _Context, node: onnx.NodeProto, label: str) -> None:
    _check_dilations(ctx, node, label)
    if len(node.output) > 1 and node.output[1]:
        ctx.error("maxpool-indices", "MaxPool's Indices output is not supported by TensorRT", label)


def _check_scatternd(ctx: _Context, node: onnx.NodeProto, label: str) -> None:
    reduction = _as_str(_attrs(node).get("reduction", "none"))
    if reduction != "none":
        ctx.error("scatternd-reduction", f"ScatterND reduction={reduction!r} is not supported", label)


def _check_dropout(ctx: _Context, node: onnx.NodeProto, label: str) -> None:
    training = _input(node, 2)
    if training:
        if training not in ctx.constants:
            _require_constant(ctx, node, label, 2, "training_mode")
        elif bool(numpy_helper.to_array(ctx.constants[training]).reshape(-1)[0]):
            ctx.error("dropout-training", "Dropout in training mode cannot be built; export in eval()", label)


def _check_layernorm(ctx: _Context, node: onnx.NodeProto, label: str) -> None:
    if any(node.output[1:]):
        ctx.error("layernorm-outputs", "LayerNormalization: only the first output is supported", label)


def _check_onehot(ctx: _Context, node: onnx.NodeProto, label: str) -> None:
    _require_constant(ctx, node, label, 1, "depth")


def _check_cumsum(ctx: _Context, node: onnx.NodeProto, label: str) -> None:
    _require_constant(ctx, node, label, 1, "axis")


def _check_nms(ctx: _Context, node: onnx.NodeProto, label: str) -> None:
    for i, what in ((2, "max_output_boxes_per_class"), (3, "iou_threshold"), (4, "score_threshold")):
        _require_constant(ctx, node, label, i, what)


_NODE_CHECKS: dict[str, Callable[[_Context, onnx.NodeProto, str], None]] = {
    "Resize": _check_resize,
    "TopK": _check_topk,
    "RoiAlign": _check_roialign,
    "Squeeze": _check_axes_input,
    "Unsqueeze": _check_axes_input,
    "AveragePool": _check_dilations,
    "LpPool": _check_dilations,
    "MaxPool": _check_maxpool,
    "ScatterND": _check_scatternd,
    "Dropout": _check_dropout,
    "LayerNormalization": _check_layernorm,
    "OneHot": _check_onehot,
    "CumSum": _check_cumsum,
    "NonMaxSuppression": _check_nms,
    **{op: _check_reduce for op in TRT_OPERATOR_TABLE if op.startswith("Reduce")},
}


def _collect_types(model: onnx.ModelProto) -> dict[str, int]:
    graph = model.graph
    types: dict[str, int] = {}
    for vi in (*graph.input, *graph.output, *graph.value_info):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type
    return types


def _collect_constants(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    constants = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            a = {x.name: x for x in node.attribute}
            if "value" in a:
                constants[node.output[0]] = a["value"].t
    return constants


def _walk(graph: onnx.GraphProto) -> Iterable[onnx.NodeProto]:
    """Every node of the graph and of its If/Loop/Scan subgraphs."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _walk(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _walk(sub)


#: (op, input position) uses of an int64 graph input that TensorRT 10+ runs in int64 as
#: given: token ids as Gather indices, a mask cast to float, the input's own shape.
_INT64_SAFE_USES = frozenset({("Gather", 1), ("Cast", 0), ("Shape", 0)})


def _int64_uses_are_safe(graph: onnx.GraphProto, name: str) -> bool:
    uses = {(node.op_type, i) for node in graph.node for i, inp in enumerate(node.input) if inp == name}
    return bool(uses) and uses <= _INT64_SAFE_USES


def _check_io_types(ctx: _Context, model: onnx.ModelProto) -> None:
    graph = model.graph
    for vi in graph.input:
        elem = vi.type.tensor_type.elem_type
        name = _TYPE_NAMES.get(elem, TensorProto.DataType.Name(elem))
        if elem == TensorProto.INT64 and _int64_uses_are_safe(graph, vi.name):
            continue  # e.g. a text encoder's token ids and attention mask
        if elem == TensorProto.INT64:
            ctx.warn(
                "int64-input",
                f"graph input '{vi.name}' is int64; TensorRT narrows int64 to int32 in several layers "
                "(RoiAlign batch indices, shape math). Prefer int32 or float inputs for TensorRT graphs.",
            )
        elif name not in _TRT_DATA_TYPES:
            ctx.error("io-dtype", f"graph input '{vi.name}' has type {name}, which TensorRT does not support")
        elif name == "DOUBLE":
            ctx.warn("io-dtype", f"graph input '{vi.name}' is DOUBLE; TensorRT casts it down to FP32")
    for vi in graph.output:
        elem = vi.type.tensor_type.elem_type
        name = _TYPE_NAMES.get(elem, TensorProto.DataType.Name(elem))
        if name not in _TRT_DATA_TYPES:
            ctx.error(
                "io-dtype", f"graph output '{vi.name}' has type {name}, which TensorRT does not support"
            )


def _check_data_dependent_outputs(ctx: _Context, model: onnx.ModelProto) -> None:
    """Error when a graph output is downstream of a data-dependent op and has a non-static shape.

    A non-static dimension is allowed only when it is one of the graph inputs' symbolic
    dimensions (e.g. the batch), which the engine knows from its input shapes.
    """
    graph = model.graph
    tainted: dict[str, str] = {}
    for node in graph.node:  # nodes are topologically sorted in a valid ONNX graph
        source = next((tainted[i] for i in node.input if i in tainted), None)
        if node.op_type in _DATA_DEPENDENT_OPS:
            source = node.name or node.op_type
        if source:
            for out in node.output:
                tainted[out] = source
    input_params = {
        d.dim_param for vi in graph.input for d in vi.type.tensor_type.shape.dim if d.HasField("dim_param")
    }
    for vi in graph.output:
        if vi.name not in tainted:
            continue
        dims = vi.type.tensor_type.shape.dim
        dynamic = [
            i
            for i, d in enumerate(dims)
            if not d.HasField("dim_value") and not (d.HasField("dim_param") and d.dim_param in input_params)
        ]
        if dynamic or not vi.type.tensor_type.HasField("shape"):
            ctx.error(
                "data-dependent-shape",
                f"graph output '{vi.name}' depends on data-dependent op {tainted[vi.name]} and has a "
                f"non-static shape (dims {dynamic or 'unknown'}); TensorRT then needs an IOutputAllocator. "
                "Pad to a fixed top-K and return a valid count instead.",
            )


def lint_model(model: onnx.ModelProto) -> list[Finding]:
    """Check one ONNX model against what TensorRT's ONNX parser supports.

    Args:
        model: The model; it is not modified (shape inference runs on a copy).

    Returns:
        The findings, errors and warnings, in graph order; empty when the model is clean.
    """
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    inferred = model
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - lint on the declared types when inference fails
        inferred = model
    ctx = _Context(opset=opset, constants=_collect_constants(model.graph), types=_collect_types(inferred))
    lo, hi = TRT_OPSET_RANGE
    if not lo <= opset <= hi:
        ctx.error("opset", f"ai.onnx opset {opset} is outside TensorRT's supported range {lo}..{hi}")
    for o in model.opset_import:
        if o.domain not in ("", "ai.onnx"):
            ctx.warn(
                "custom-domain",
                f"the model imports domain '{o.domain}'; its ops need a TensorRT plugin library "
                "(trtexec --staticPlugins, Triton LD_PRELOAD)",
            )
    _check_io_types(ctx, model)
    seen_dds: set[str] = set()
    for index, node in enumerate(_walk(model.graph)):
        label = _node_label(node, index)
        if node.domain not in ("", "ai.onnx"):
            ctx.warn(
                "plugin-op", f"{node.domain}::{node.op_type} must be provided by a TensorRT plugin", label
            )
            continue
        support = TRT_OPERATOR_TABLE.get(node.op_type)
        if support is None or not support.supported:
            ctx.error(
                "unsupported-op",
                f"{node.op_type} is not supported by TensorRT's ONNX parser ({TRT_TABLE_SOURCE})",
                label,
            )
            continue
        check = _NODE_CHECKS.get(node.op_type)
        if check is not None:
            check(ctx, node, label)
        data_type = _TYPE_NAMES.get(ctx.types.get(_input(node, 0), 0))
        if data_type in _FLOAT_TYPES and support.types and data_type not in support.types:
            ctx.warn(
                "op-dtype",
                f"{node.op_type} on {data_type} data: TensorRT lists only {', '.join(support.types)}",
                label,
            )
        if node.op_type in _DATA_DEPENDENT_OPS and node.op_type not in seen_dds:
            seen_dds.add(node.op_type)
            ctx.warn(
                "data-dependent-op",
                f"{node.op_type} has a data-dependent output shape; TensorRT builds it but ONNX Runtime's "
                "TensorRT EP leaves it to another EP",
                label,
            )
    _check_data_dependent_outputs(ctx, inferred)
    return ctx.findings


def lint_path(path: str | Path) -> list[Finding]:
    """Lint one ``.onnx`` file.

    Args:
        path: The ONNX file (external data next to it is not needed: only the graph is read).

    Returns:
        The findings, each with ``model`` set to the file name.

    Raises:
        ExportError: The file cannot be read or is not an ONNX model (empty, truncated,
            corrupted).
    """
    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except DecodeError as exc:
        raise ExportError(
            f"{path} is not a readable ONNX model (truncated or corrupted: {exc}); "
            "re-export it or copy it again"
        ) from None
    # An empty file parses as an empty ModelProto: no IR version, no graph.
    if model.ir_version == 0 or not model.HasField("graph"):
        raise ExportError(
            f"{path} is not an ONNX model (empty, or truncated before its graph); "
            "re-export it or copy it again"
        )
    return [Finding(f.severity, f.code, f.message, f.node, path.name) for f in lint_model(model)]
