"""Fixtures for exporter tests: a toy bundle whose graphs honour the bundle contracts.

The toy graphs are tiny hand-built ONNX models (no trained model needed) so that the
TensorRT lint, trtexec command generation and Triton repository tests run in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from personsearch_runtime.bundle import (
    DimRange,
    EmbeddingSpec,
    Manifest,
    ModelSpec,
    Postprocessing,
    Preprocessing,
    Provenance,
    RoIAlignSpec,
    SplitSpec,
    TensorSpec,
    file_sha256,
    write_manifest,
)

OPSET = 17
K, D, C, S, P = 5, 8, 4, 7, 6


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _vi(name: str, elem: int, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "toy", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _batch_expand(prefix: str, src: str, value: np.ndarray, out: str, tail: list[int]) -> tuple[list, list]:
    """Nodes broadcasting a constant ``value`` to [batch(src), *tail]."""
    nodes = [
        helper.make_node("Shape", [src], [f"{prefix}_shape"]),
        helper.make_node("Slice", [f"{prefix}_shape", "zero1", "one1"], [f"{prefix}_b"]),
        helper.make_node("Concat", [f"{prefix}_b", f"{prefix}_tail"], [f"{prefix}_full"], axis=0),
        helper.make_node("Expand", [f"{prefix}_value", f"{prefix}_full"], [out]),
    ]
    inits = [_init(f"{prefix}_tail", np.array(tail, np.int64)), _init(f"{prefix}_value", value)]
    return nodes, inits


_COMMON = [_init("zero1", np.array([0], np.int64)), _init("one1", np.array([1], np.int64))]


def detector_model() -> onnx.ModelProto:
    nodes, inits = [], list(_COMMON)
    for prefix, value, out, tail in (
        ("bx", np.zeros((1, K, 4), np.float32), "boxes", [K, 4]),
        ("sc", np.zeros((1, K), np.float32), "scores", [K]),
        ("em", np.zeros((1, K, D), np.float32), "embeddings", [K, D]),
        ("vc", np.zeros((1,), np.int64), "valid_counts", []),
    ):
        n, i = _batch_expand(prefix, "images", value, out, tail)
        nodes += n
        inits += i
    return _model(
        nodes,
        [_vi("images", TensorProto.FLOAT, ["B", 3, "H", "W"])],
        [
            _vi("boxes", TensorProto.FLOAT, ["B", K, 4]),
            _vi("scores", TensorProto.FLOAT, ["B", K]),
            _vi("embeddings", TensorProto.FLOAT, ["B", K, D]),
            _vi("valid_counts", TensorProto.INT64, ["B"]),
        ],
        inits,
    )


def query_encoder_model() -> onnx.ModelProto:
    nodes = [helper.make_node("MatMul", ["boxes", "w"], ["embeddings"])]
    return _model(
        nodes,
        [_vi("image", TensorProto.FLOAT, [1, 3, "H", "W"]), _vi("boxes", TensorProto.FLOAT, ["M", 4])],
        [_vi("embeddings", TensorProto.FLOAT, ["M", D])],
        [_init("w", np.ones((4, D), np.float32))],
    )


def backbone_rpn_model() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Conv", ["images", "wconv"], ["features"], strides=[16, 16], kernel_shape=[16, 16])
    ]
    inits = [*_COMMON, _init("wconv", np.ones((C, 3, 16, 16), np.float32) / 768)]
    for prefix, value, out, tail in (
        ("pr", np.zeros((1, P, 4), np.float32), "proposals", [P, 4]),
        ("pc", np.zeros((1,), np.int64), "proposal_counts", []),
    ):
        n, i = _batch_expand(prefix, "images", value, out, tail)
        nodes += n
        inits += i
    return _model(
        nodes,
        [_vi("images", TensorProto.FLOAT, ["B", 3, "H", "W"])],
        [
            _vi("features", TensorProto.FLOAT, ["B", C, "Hf", "Wf"]),
            _vi("proposals", TensorProto.FLOAT, ["B", P, 4]),
            _vi("proposal_counts", TensorProto.INT64, ["B"]),
        ],
        inits,
    )


def head_model(out_names: tuple[str, ...], width: int) -> onnx.ModelProto:
    """roi_features -> [R, width], [R] and, with a third name, [R, 4] box deltas (the reid head)."""
    nodes = [
        helper.make_node("Flatten", ["roi_features"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w"], [out_names[0]]),
        helper.make_node("ReduceMean", ["flat"], [out_names[1]], axes=[1], keepdims=0),
    ]
    outputs = [
        _vi(out_names[0], TensorProto.FLOAT, ["R", width]),
        _vi(out_names[1], TensorProto.FLOAT, ["R"]),
    ]
    inits = [_init("w", np.ones((C * S * S, width), np.float32))]
    if len(out_names) == 3:
        nodes.append(helper.make_node("Gemm", ["flat", "w4"], [out_names[2]]))
        outputs.append(_vi(out_names[2], TensorProto.FLOAT, ["R", 4]))
        inits.append(_init("w4", np.zeros((C * S * S, 4), np.float32)))
    return _model(nodes, [_vi("roi_features", TensorProto.FLOAT, ["R", C, S, S])], outputs, inits)


IMAGE_DIMS = (DimRange("B", 1, 1, 4), DimRange("H", 256, 576, 928), DimRange("W", 256, 768, 1504))


def _spec(role: str, file: str, model: onnx.ModelProto, dims: tuple[DimRange, ...]) -> ModelSpec:
    def tensors(values) -> tuple[TensorSpec, ...]:
        out = []
        for vi in values:
            elem = vi.type.tensor_type.elem_type
            dtype = {TensorProto.FLOAT: "float32", TensorProto.INT64: "int64"}[elem]
            shape = tuple(d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim)
            out.append(TensorSpec(vi.name, dtype, shape))
        return tuple(out)

    return ModelSpec(role, file, "0" * 64, tensors(model.graph.input), tensors(model.graph.output), dims)


def make_toy_bundle(root: Path) -> Path:
    """Write a complete, valid toy bundle into ``root`` and return it."""
    root.mkdir(parents=True, exist_ok=True)
    models = {
        "detector": (detector_model(), IMAGE_DIMS),
        "query_encoder": (query_encoder_model(), (IMAGE_DIMS[1], IMAGE_DIMS[2], DimRange("M", 1, 4, 16))),
        "backbone_rpn": (
            backbone_rpn_model(),
            (*IMAGE_DIMS, DimRange("Hf", 16, 36, 58), DimRange("Wf", 16, 48, 94)),
        ),
        "box_head": (head_model(("box_deltas", "box_scores"), 4), (DimRange("R", 1, 128, 512),)),
        "reid_head": (
            head_model(("embeddings", "person_scores", "box_deltas"), D),
            (DimRange("R", 1, 32, 256),),
        ),
    }
    specs = {}
    for role, (model, dims) in models.items():
        file = f"{role}.onnx"
        onnx.save(model, str(root / file))
        spec = _spec(role, file, model, dims)
        specs[role] = ModelSpec(
            spec.role, spec.file, file_sha256(root / file), spec.inputs, spec.outputs, spec.dims
        )
    roi = RoIAlignSpec(output_size=S, spatial_scale=1 / 16, sampling_ratio=2, aligned=False)
    manifest = Manifest(
        models=specs,
        precision="fp32",
        opset=OPSET,
        preprocessing=Preprocessing(),
        postprocessing=Postprocessing(max_detections=K),
        embedding=EmbeddingSpec(dim=D, normalized=True),
        provenance=Provenance(
            "ab" * 32, "toy", "0.1.0", "2.14.1", onnx.__version__, "2026-11-23T00:00:00+00:00"
        ),
        split=SplitSpec(box_roi_align=roi, reid_roi_align=roi),
    )
    write_manifest(root, manifest)
    return root


@pytest.fixture
def toy_bundle(tmp_path: Path) -> Path:
    """A valid toy bundle directory."""
    return make_toy_bundle(tmp_path / "bundle")
