"""Float16 graphs decided in the graph itself (TensorRT strong typing).

TensorRT 11 dropped weakly-typed networks: the builder no longer picks layer precisions
from ``kFP16`` flags, it follows the tensor types written in the ONNX file (deployment
digest, headline and section 3.2). An fp16 bundle therefore carries fp16 initializers
and fp16 compute in its graphs, with explicit ``Cast`` nodes at the precision borders.

What runs in fp16 is the *feature region*: the forward closure, through
:data:`FP16_OPS`, of

* the image inputs (``images`` / ``image``), cast to fp16 by one ``Cast`` at the entry,
* the outputs of ``RoiAlign`` (the pooled features the box and re-id heads consume).

A node joins the region only when every float input is already fp16, a float
constant (converted to an fp16 initializer), or one of those entry tensors. Everything
else stays float32, with a ``Cast`` back to float32 wherever an fp16 tensor leaves the
region. As a consequence, and by construction rather than by a list of exceptions:

* ``RoiAlign`` runs in float32: ONNX ties ``X`` and ``rois`` to one type, and the rois
  (and the pixel grid they address) must not be rounded to fp16 - the same choice as
  torchvision's autocast kernel, which runs RoIAlign in float32;
* box decoding (``Exp``, ``Reshape``, ``Slice`` ... on the deltas), ``TopK``,
  ``Softmax``/``Sigmoid`` scores and ``NonMaxSuppression`` (float32-only in ONNX) stay
  float32, because none of those ops is in :data:`FP16_OPS`;
* the embedding L2 normalisation stays float32: ``ReduceL2`` is not in the region, so
  the ``Div`` by its (clamped) result has a float32 input and stays out as well.

Graph inputs keep their float32 type. The runtime preprocesses in float32 and the
manifest, Triton configs and trtexec shapes stay the same for both precisions; the one
entry ``Cast`` costs a single pass over the image on the device. Graph outputs are cast
back to float32 where they would otherwise be fp16.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from personsearch_runtime.atomic_files import atomic_write_bytes

from personsearch_export.errors import ExportError

__all__ = [
    "FEATURE_SOURCE_OPS",
    "FP16_OPS",
    "TYPE_AGNOSTIC_OPS",
    "Fp16Report",
    "convert_file_to_fp16",
    "convert_to_fp16",
    "emulate_fp16",
    "float_input_types",
    "holds_fp16",
    "install_converted_nodes",
    "known_element_types",
    "saturate_to_half",
]

#: Ops that may run in fp16 inside the feature region (the convolution trunk and heads).
#: Data-movement and index ops are deliberately absent: the region ends where features
#: turn into geometry or scores.
FP16_OPS: frozenset[str] = frozenset(
    {
        "Conv",
        "ConvTranspose",
        "BatchNormalization",
        "InstanceNormalization",
        "Relu",
        "LeakyRelu",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Gemm",
        "MatMul",
        "Flatten",
        "Identity",
        "ReduceMax",
        "ReduceMean",
    }
)

#: Ops that read only the shape or convert the type of an input, so they take an fp16
#: tensor as it is (a Cast in front would copy the whole tensor for nothing).
TYPE_AGNOSTIC_OPS: frozenset[str] = frozenset({"Shape", "Size", "Cast"})

#: Ops whose float32 outputs are features that may be cast down to fp16 for the heads.
FEATURE_SOURCE_OPS: frozenset[str] = frozenset({"RoiAlign"})

_FLOAT = TensorProto.FLOAT
_HALF = TensorProto.FLOAT16
#: Finite range of IEEE half precision.
_HALF_MAX = 65504.0


@dataclass
class Fp16Report:
    """What :func:`convert_to_fp16` did.

    Attributes:
        fp16_nodes: Number of nodes that now compute in fp16.
        fp32_nodes: Number of original nodes left in float32.
        casts_added: Cast nodes inserted at region borders.
        fp16_ops: Op type -> count of fp16 nodes.
        clipped_constants: Names of float constants whose values exceeded the fp16
            range and were saturated to +-65504.
    """

    fp16_nodes: int = 0
    fp32_nodes: int = 0
    casts_added: int = 0
    fp16_ops: dict[str, int] = field(default_factory=dict)
    clipped_constants: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        """JSON-ready dictionary."""
        return {
            "fp16_nodes": self.fp16_nodes,
            "fp32_nodes": self.fp32_nodes,
            "casts_added": self.casts_added,
            "fp16_ops": dict(sorted(self.fp16_ops.items())),
            "clipped_constants": list(self.clipped_constants),
        }


def known_element_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type (``TensorProto`` enum) of every tensor shape inference can name, initializers included."""
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types: dict[str, int] = {}
    for value in (*graph.input, *graph.value_info, *graph.output):
        elem = value.type.tensor_type.elem_type
        if elem:
            types[value.name] = elem
    for init in graph.initializer:
        types[init.name] = init.data_type
    return types


def saturate_to_half(array: np.ndarray, name: str, report: Fp16Report) -> np.ndarray:
    """``array`` as float16, values beyond +-65504 saturated (and ``name`` recorded in ``report``)."""
    finite = np.isfinite(array)
    if np.any(np.abs(array[finite]) > _HALF_MAX):
        report.clipped_constants.append(name)
        array = np.where(finite, np.clip(array, -_HALF_MAX, _HALF_MAX), array)
    return array.astype(np.float16)


class _Rewriter:
    """Builds the new node list; one shared Cast per (tensor, direction)."""

    def __init__(self, model: onnx.ModelProto, report: Fp16Report) -> None:
        self.graph = model.graph
        self.report = report
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.constant_nodes: dict[str, onnx.NodeProto] = {}
        # The TorchScript exporter dedups equal weights into Identity aliases of one
        # initializer; follow them so aliased weights are still seen as constants.
        self.aliases: dict[str, str] = {}
        for node in self.graph.node:
            if node.op_type == "Constant" and len(node.output) == 1:
                self.constant_nodes[node.output[0]] = node
            elif node.op_type == "Identity" and self.source(node.input[0]) is not None:
                self.aliases[node.output[0]] = self.source(node.input[0])
        used = {n.name for n in self.graph.node} | {t for n in self.graph.node for t in (*n.input, *n.output)}
        used |= {v.name for v in (*self.graph.input, *self.graph.output)} | set(self.initializers)
        self.used = used
        self.casts: dict[tuple[str, int], str] = {}
        self.half_constants: dict[str, str] = {}
        self.new_nodes: list[onnx.NodeProto] = []
        self.new_initializers: list[onnx.TensorProto] = []

    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self.used:
            name, i = f"{base}_{i}", i + 1
        self.used.add(name)
        return name

    def cast(self, tensor: str, to: int) -> str:
        key = (tensor, to)
        if key not in self.casts:
            suffix = "fp16" if to == _HALF else "fp32"
            out = self.fresh(f"{tensor}_{suffix}")
            node = helper.make_node("Cast", [tensor], [out], name=self.fresh(f"Cast_{out}"), to=to)
            self.new_nodes.append(node)
            self.casts[key] = out
            self.report.casts_added += 1
        return self.casts[key]

    def source(self, tensor: str) -> str | None:
        """The initializer or Constant output ``tensor`` is (an alias of), else None."""
        tensor = self.aliases.get(tensor, tensor)
        if tensor in self.initializers or tensor in self.constant_nodes:
            return tensor
        return None

    def constant_array(self, tensor: str) -> np.ndarray | None:
        tensor = self.aliases.get(tensor, tensor)
        if tensor in self.initializers:
            return numpy_helper.to_array(self.initializers[tensor])
        node = self.constant_nodes.get(tensor)
        if node is not None:
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
        return None

    def half_constant(self, tensor: str) -> str:
        tensor = self.aliases.get(tensor, tensor)
        if tensor not in self.half_constants:
            array = self.constant_array(tensor)
            assert array is not None
            name = self.fresh(f"{tensor}_fp16")
            self.new_initializers.append(
                numpy_helper.from_array(saturate_to_half(array, tensor, self.report), name)
            )
            self.half_constants[tensor] = name
        return self.half_constants[tensor]


def float_input_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type (``TensorProto`` enum) of each graph input, by name."""
    return {v.name: v.type.tensor_type.elem_type for v in model.graph.input}


def convert_to_fp16(
    model: onnx.ModelProto,
    *,
    entry_inputs: Sequence[str] | None = None,
    fp16_ops: Iterable[str] = FP16_OPS,
    feature_source_ops: Iterable[str] = FEATURE_SOURCE_OPS,
) -> tuple[onnx.ModelProto, Fp16Report]:
    """Rewrite a float32 graph so its convolution trunk and heads compute in fp16.

    See the module docstring for which nodes are converted and why. The input model is
    not modified. Input and output types are unchanged (float32 in, float32 out).

    Args:
        model: A checked float32 ONNX model (nodes in topological order, as exporters
            write them).
        entry_inputs: Graph inputs that enter the fp16 region through a ``Cast``;
            default: every rank-4 float32 input (image batches ``[B, 3, H, W]`` and
            pooled roi features ``[R, C, S, S]``), never box inputs.
        fp16_ops: Op types allowed to compute in fp16.
        feature_source_ops: Op types whose outputs enter the fp16 region through a ``Cast``.

    Returns:
        The converted model (checked, with fresh shape inference) and a report.

    Raises:
        ExportError: When the model already contains fp16 tensors, has no entry input
            to start from, has control-flow subgraphs, or the converted graph fails the ONNX checker.
    """
    fp16_ops = frozenset(fp16_ops)
    feature_source_ops = frozenset(feature_source_ops)
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    types = known_element_types(model)
    if _HALF in types.values():
        raise ExportError(f"graph {graph.name!r} already holds float16 tensors; convert a float32 graph")
    inputs = float_input_types(model)
    if entry_inputs is None:
        entry_inputs = [
            v.name
            for v in graph.input
            if v.type.tensor_type.elem_type == _FLOAT and len(v.type.tensor_type.shape.dim) == 4
        ]
    entries = {name for name in entry_inputs if inputs.get(name) == _FLOAT}
    if not entries:
        raise ExportError(
            f"graph {graph.name!r} has none of the float32 entry inputs {list(entry_inputs)} "
            f"(inputs: {list(inputs)}); nothing to convert"
        )
    nested = sorted(
        {
            n.op_type
            for n in graph.node
            if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute)
        }
    )
    if nested:
        # Subgraphs read outer tensors by name; rewriting their types is not supported.
        raise ExportError(
            f"graph {graph.name!r} has control-flow nodes {nested}; the fp16 pass handles flat graphs only"
        )
    report = Fp16Report()
    rw = _Rewriter(model, report)
    half: set[str] = set()  # tensors that now hold fp16 values
    downcastable = set(entries)
    for node in graph.node:
        if node.op_type in feature_source_ops:
            downcastable.update(o for o in node.output if o)

    def is_float_constant(tensor: str) -> bool:
        array = rw.constant_array(tensor)
        return array is not None and array.dtype == np.float32

    def joins_region(node: onnx.NodeProto) -> bool:
        if node.op_type not in fp16_ops or node.domain not in ("", "ai.onnx"):
            return False
        fed = False
        for tensor in node.input:
            if not tensor:
                continue
            if tensor in half or tensor in downcastable:
                fed = True
            elif is_float_constant(tensor):
                continue
            elif types.get(tensor, 0) in (0, _FLOAT, TensorProto.DOUBLE):
                # A float32 tensor from outside the region (or one of unknown type):
                # the node belongs to the float32 side.
                return False
        return fed

    for node in graph.node:
        if joins_region(node):
            new_inputs = []
            for tensor in node.input:
                if not tensor or tensor in half:
                    new_inputs.append(tensor)
                elif tensor in downcastable:
                    new_inputs.append(rw.cast(tensor, _HALF))
                elif is_float_constant(tensor):
                    new_inputs.append(rw.half_constant(tensor))
                else:
                    new_inputs.append(tensor)
            del node.input[:]
            node.input.extend(new_inputs)
            rw.new_nodes.append(node)
            for out in node.output:
                # MaxPool's optional Indices output stays int64.
                if out and types.get(out, _FLOAT) == _FLOAT:
                    half.add(out)
            report.fp16_nodes += 1
            report.fp16_ops[node.op_type] = report.fp16_ops.get(node.op_type, 0) + 1
        else:
            if node.op_type not in TYPE_AGNOSTIC_OPS and any(t in half for t in node.input):
                new_inputs = [rw.cast(t, _FLOAT) if t in half else t for t in node.input]
                del node.input[:]
                node.input.extend(new_inputs)
            rw.new_nodes.append(node)
            report.fp32_nodes += 1

    # Graph outputs produced in the region: the producer writes NAME_fp16, a Cast writes NAME.
    for value in graph.output:
        if value.name not in half:
            continue
        inner = rw.fresh(f"{value.name}_fp16")
        for node in rw.new_nodes:
            node.input[:] = [inner if t == value.name else t for t in node.input]
            node.output[:] = [inner if t == value.name else t for t in node.output]
        rw.new_nodes.append(
            helper.make_node("Cast", [inner], [value.name], name=rw.fresh(f"Cast_{value.name}"), to=_FLOAT)
        )
        report.casts_added += 1

    # Casts are appended just before their first consumer, so the node list stays in
    # topological order. Constant nodes now used only through fp16 copies are dropped.
    nodes = list(rw.new_nodes)
    outputs = {v.name for v in graph.output}
    while True:
        referenced = {t for n in nodes for t in n.input} | outputs
        pruned = [
            n for n in nodes if not (n.op_type in ("Constant", "Identity") and n.output[0] not in referenced)
        ]
        if len(pruned) == len(nodes):
            break
        nodes = pruned
    report.fp32_nodes -= len(rw.new_nodes) - len(nodes)
    return install_converted_nodes(model, nodes, rw.new_initializers, what="graph"), report


def install_converted_nodes(
    model: onnx.ModelProto,
    nodes: list[onnx.NodeProto],
    new_initializers: list[onnx.TensorProto],
    *,
    what: str,
) -> onnx.ModelProto:
    """Put a conversion pass's rewritten nodes into ``model`` and check the result.

    Initializers no node reads any more are dropped (their fp16 copies replace them),
    stale ``value_info`` is cleared and the shapes inferred again, strictly.

    Args:
        model: The model being converted (changed in place).
        nodes: Its new node list, in topological order.
        new_initializers: Initializers the pass added (fp16 copies, constants).
        what: What the model is, for the error message (``"graph"``, ``"text graph"``).

    Returns:
        The model with inferred shapes.

    Raises:
        ExportError: The converted model does not pass the ONNX checker.
    """
    graph = model.graph
    del graph.node[:]
    graph.node.extend(nodes)
    referenced = {t for n in nodes for t in n.input} | {v.name for v in graph.output}
    kept = [t for t in graph.initializer if t.name in referenced]
    del graph.initializer[:]
    graph.initializer.extend([*kept, *new_initializers])
    del graph.value_info[:]
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(
            f"fp16 conversion of {what} {graph.name!r} produced an invalid model: {exc}"
        ) from exc
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def convert_file_to_fp16(
    path: str | Path,
    *,
    convert: Callable[[onnx.ModelProto], tuple[onnx.ModelProto, Fp16Report]] | None = None,
) -> Fp16Report:
    """Convert the float32 ONNX file at ``path`` to fp16 in place (atomically).

    Args:
        path: The ONNX file.
        convert: The conversion pass; :func:`convert_to_fp16` with its default entry
            inputs when None (the text encoder's pass is
            :func:`personsearch_export.text_graphs.convert_text_encoder_to_fp16`).

    Raises:
        ExportError: As the pass.
    """
    path = Path(path)
    converted, report = (convert or convert_to_fp16)(onnx.load(str(path)))
    atomic_write_bytes(path, converted.SerializeToString())
    return report


def holds_fp16(model: onnx.ModelProto) -> bool:
    """Whether any initializer, Constant or Cast of the graph produces float16."""
    graph = model.graph
    if any(t.data_type == _HALF for t in graph.initializer):
        return True
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == _HALF:
                return True
            if node.op_type == "Constant" and attr.name == "value" and attr.t.data_type == _HALF:
                return True
    return False


def emulate_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float32 graph that reproduces the fp16 graph's rounding, for CPU parity runs.

    ONNX Runtime's CPU provider lacks fp16 kernels for most ops of the region (Conv,
    Relu, ...); it then runs them in float32 and, while inserting its own casts,
    removes ours, so a plain CPU run of an fp16 graph rounds only the weights and never
    the activations (measured with onnxruntime 1.32). This graph keeps every rounding
    step explicit instead: fp16 weights are stored as their (exact) float32 values and
    each fp16 tensor - every output of a region node and every entry ``Cast`` - is
    rounded through a ``Cast`` to float16 and back, which ONNX Runtime keeps. Arithmetic
    inside a node is float32, i.e. fp16 storage with float32 accumulation, which is what
    TensorRT's fp16 convolution and GEMM kernels do by default.

    Args:
        model: A graph written by :func:`convert_to_fp16` (float32 inputs and outputs).

    Returns:
        A checked float32 model with the same inputs and outputs.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    types = known_element_types(model)
    for init in graph.initializer:
        if init.data_type == _HALF:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32), init.name))
    used = {t for n in graph.node for t in (*n.input, *n.output)} | {n.name for n in graph.node}
    nodes: list[onnx.NodeProto] = []

    def fresh(base: str) -> str:
        name, i = base, 1
        while name in used:
            name, i = f"{base}_{i}", i + 1
        used.add(name)
        return name

    def round_trip(src: str, dst: str) -> None:
        half = fresh(f"{dst}_as_fp16")
        nodes.append(helper.make_node("Cast", [src], [half], name=fresh(f"Round16_{dst}"), to=_HALF))
        nodes.append(helper.make_node("Cast", [half], [dst], name=fresh(f"Back32_{dst}"), to=_FLOAT))

    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == _HALF:
                    attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float32)))
            nodes.append(node)
            continue
        if node.op_type == "Cast" and any(a.name == "to" and a.i == _HALF for a in node.attribute):
            round_trip(node.input[0], node.output[0])
            continue
        rounded = [o for o in node.output if o and types.get(o) == _HALF]
        renamed = {o: fresh(f"{o}_fp32") for o in rounded}
        node.output[:] = [renamed.get(o, o) for o in node.output]
        nodes.append(node)
        for out, inner in renamed.items():
            round_trip(inner, out)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    onnx.checker.check_model(model, full_check=True)
    return model
