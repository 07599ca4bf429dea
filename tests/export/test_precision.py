"""The fp16 graph pass: what stays float32, rounding emulation, and a real fp16 bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from personsearch_export.errors import ExportError
from personsearch_export.precision import convert_file_to_fp16, convert_to_fp16, emulate_fp16, holds_fp16

R = 3  # rois in the toy graph
F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16


def _types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.value_info, *g.output)}
    types.update({t.name: t.data_type for t in g.initializer})
    for node in g.node:
        if node.op_type == "Constant":
            types[node.output[0]] = node.attribute[0].t.data_type
    return types


def _input_types(model: onnx.ModelProto, op_type: str) -> list[list[int]]:
    """Element types of the (non-empty) inputs of every ``op_type`` node."""
    types = _types(model)
    return [[types[t] for t in n.input if t] for n in model.graph.node if n.op_type == op_type]


def _output_types(model: onnx.ModelProto, op_type: str) -> list[int]:
    types = _types(model)
    return [types[n.output[0]] for n in model.graph.node if n.op_type == op_type]


def _toy_detector() -> onnx.ModelProto:
    """Trunk -> RoiAlign -> head -> (box decoding, scores, NMS, TopK, L2-normalised embedding)."""
    rng = np.random.default_rng(0)

    def init(name, shape, scale=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    def const(name, value):
        return numpy_helper.from_array(np.asarray(value), name)

    nodes = [
        helper.make_node("Conv", ["images", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["feat"]),
        helper.make_node("Identity", ["w2"], ["w2_alias"]),  # exporter-style weight alias
        helper.make_node("Conv", ["feat", "w2_alias"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "feat"], ["res"]),
        helper.make_node(
            "RoiAlign",
            ["res", "rois", "batch_idx"],
            ["pooled"],
            coordinate_transformation_mode="output_half_pixel",
            mode="avg",
            output_height=2,
            output_width=2,
            sampling_ratio=2,
            spatial_scale=1.0,
        ),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "wh", "bh"], ["hidden"]),
        helper.make_node("Relu", ["hidden"], ["hidden_r"]),
        # box decoding: boxes = rois + exp(deltas) - 1 (shape of torchvision's decode, simplified)
        helper.make_node("Gemm", ["hidden_r", "wd"], ["deltas"]),
        helper.make_node("Exp", ["deltas"], ["scale"]),
        helper.make_node("Mul", ["scale", "rois"], ["scaled"]),
        helper.make_node("Sub", ["scaled", "one"], ["boxes"]),
        # scores
        helper.make_node("Gemm", ["hidden_r", "ws"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        helper.make_node("Gather", ["probs", "one_i"], ["person"], axis=1),
        helper.make_node("Reshape", ["boxes", "nms_box_shape"], ["nms_boxes"]),
        helper.make_node("Reshape", ["person", "nms_score_shape"], ["nms_scores"]),
        helper.make_node("NonMaxSuppression", ["nms_boxes", "nms_scores", "max_out", "iou", "thr"], ["keep"]),
        helper.make_node("TopK", ["person", "k1"], ["top_scores", "top_idx"], axis=0),
        # embedding: x / max(||x||, eps), as torch.nn.functional.normalize exports
        helper.make_node("Gemm", ["hidden_r", "we"], ["emb_raw"]),
        helper.make_node("ReduceL2", ["emb_raw"], ["norm"], axes=[1], keepdims=1),
        helper.make_node("Clip", ["norm", "eps"], ["norm_c"]),
        helper.make_node("Div", ["emb_raw", "norm_c"], ["embeddings"]),
    ]
    inits = [
        init("w1", (4, 3, 3, 3)),
        init("b1", (4,), 0.1),
        init("w2", (4, 4, 3, 3)),
        init("wh", (16, 8)),
        init("bh", (8,), 0.1),
        init("wd", (8, 4), 0.05),
        init("ws", (8, 2)),
        init("we", (8, 5)),
        const("one", np.float32(1.0)),
        const("one_i", np.int64(1)),
        const("nms_box_shape", np.array([1, -1, 4], np.int64)),
        const("nms_score_shape", np.array([1, 1, -1], np.int64)),
        const("max_out", np.array([R], np.int64)),
        const("iou", np.array([0.5], np.float32)),
        const("thr", np.array([0.0], np.float32)),
        const("k1", np.array([1], np.int64)),
        const("eps", np.float32(1e-12)),
    ]
    graph = helper.make_graph(
        nodes,
        "toy_detector",
        [
            helper.make_tensor_value_info("images", F32, [1, 3, 12, 12]),
            helper.make_tensor_value_info("rois", F32, [R, 4]),
            helper.make_tensor_value_info("batch_idx", TensorProto.INT64, [R]),
        ],
        [
            helper.make_tensor_value_info("boxes", F32, [R, 4]),
            helper.make_tensor_value_info("keep", TensorProto.INT64, [None, 3]),
            helper.make_tensor_value_info("top_scores", F32, [1]),
            helper.make_tensor_value_info("embeddings", F32, [R, 5]),
            helper.make_tensor_value_info("hidden", F32, [R, 8]),  # an fp16-region tensor as an output
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "images": rng.random((1, 3, 12, 12), dtype=np.float32),
        "rois": np.array([[0.5, 1.0, 6.0, 9.0], [2.0, 2.0, 11.0, 7.5], [1.0, 0.0, 4.0, 4.0]], np.float32),
        "batch_idx": np.zeros(R, np.int64),
    }


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


@pytest.fixture(scope="module")
def toy_fp16() -> tuple[onnx.ModelProto, onnx.ModelProto]:
    fp32 = _toy_detector()
    fp16, report = convert_to_fp16(fp32)
    assert report.fp16_ops == {"Add": 1, "Conv": 2, "Flatten": 1, "Gemm": 4, "Relu": 2}
    return fp32, fp16


def test_blocked_ops_get_float32_inputs(toy_fp16):
    _, model = toy_fp16
    # RoiAlign: X and rois share one type in ONNX, so features are cast up and rois stay float32.
    assert _input_types(model, "RoiAlign") == [[F32, F32, TensorProto.INT64]]
    assert _input_types(model, "NonMaxSuppression") == [[F32, F32, TensorProto.INT64, F32, F32]]
    assert _input_types(model, "TopK") == [[F32, TensorProto.INT64]]
    assert _input_types(model, "ReduceL2") == [[F32]]
    assert _input_types(model, "Clip") == [[F32, F32]]
    # The normalising Div and box decoding (Exp, Mul with rois, Sub) stay float32 as well.
    assert _input_types(model, "Div") == [[F32, F32]]
    assert _input_types(model, "Exp") == [[F32]]
    assert _input_types(model, "Mul") == [[F32, F32]]
    assert _input_types(model, "Sub") == [[F32, F32]]
    assert _input_types(model, "Softmax") == [[F32]]


def test_trunk_and_heads_compute_in_fp16_with_fp16_weights(toy_fp16):
    fp32, model = toy_fp16
    for op in ("Conv", "Gemm", "Relu", "Add", "Flatten"):
        assert set(_output_types(model, op)) == {F16}, op
    for conv in (n for n in model.graph.node if n.op_type in ("Conv", "Gemm")):
        assert all(_types(model)[t] == F16 for t in conv.input), conv.input
    # Weights exist once, in fp16 (the Identity alias was resolved, the float32 copies dropped).
    by_name = {t.name: t for t in model.graph.initializer}
    assert {"w1", "w2", "wh", "we"}.isdisjoint(by_name)
    assert by_name["w2_fp16"].data_type == F16 and "w2_alias" not in _types(model)
    assert sorted(t.name for t in model.graph.initializer if t.data_type == F16) == [
        f"{w}_fp16" for w in ("b1", "bh", "w1", "w2", "wd", "we", "wh", "ws")
    ]
    # Entry: one Cast from the float32 images input; the pooled features re-enter the same way.
    casts = {n.input[0]: n for n in model.graph.node if n.op_type == "Cast"}
    assert casts["images"].attribute[0].i == F16 and casts["pooled"].attribute[0].i == F16
    # Inputs and outputs keep their types and names.
    for before, after in zip(
        (*fp32.graph.input, *fp32.graph.output), (*model.graph.input, *model.graph.output), strict=True
    ):
        assert (before.name, before.type.tensor_type.elem_type) == (
            after.name,
            after.type.tensor_type.elem_type,
        )
    assert holds_fp16(model) and not holds_fp16(fp32)


def test_converted_graph_runs_in_onnx_runtime_close_to_float32(toy_fp16):
    fp32, fp16 = toy_fp16
    feeds = _feeds()
    ref = _run(fp32, feeds)
    for got in (_run(fp16, feeds), _run(emulate_fp16(fp16), feeds)):
        np.testing.assert_allclose(got[0], ref[0], atol=5e-3)  # boxes (pixels)
        np.testing.assert_array_equal(got[1], ref[1])  # NMS selection
        np.testing.assert_allclose(got[2], ref[2], atol=2e-3)  # top score
        cos = (got[3] * ref[3]).sum(1) / np.linalg.norm(got[3], axis=1) / np.linalg.norm(ref[3], axis=1)
        assert cos.min() > 0.9999
        np.testing.assert_allclose(np.linalg.norm(got[3], axis=1), 1.0, atol=1e-6)  # fp32 L2 norm
        assert got[4].dtype == np.float32


def test_emulation_rounds_every_fp16_tensor_exactly():
    """emulate_fp16 == numpy fp16 storage with float32 arithmetic, bit for bit."""
    x = np.linspace(-3.0, 3.0, 64, dtype=np.float32).reshape(1, 1, 8, 8) * np.float32(1.0001)
    c = np.float32(1.2345678)
    d = np.float32(-0.333333)
    graph = helper.make_graph(
        [helper.make_node("Mul", ["images", "c"], ["m"]), helper.make_node("Add", ["m", "d"], ["y"])],
        "g",
        [helper.make_tensor_value_info("images", F32, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", F32, [1, 1, 8, 8])],
        [numpy_helper.from_array(c, "c"), numpy_helper.from_array(d, "d")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    fp16, _ = convert_to_fp16(model)
    h = np.float16
    m = (x.astype(h).astype(np.float32) * np.float32(h(c))).astype(h)
    expected = (m.astype(np.float32) + np.float32(h(d))).astype(h).astype(np.float32)
    (got,) = _run(emulate_fp16(fp16), {"images": x})
    np.testing.assert_array_equal(got, expected)
    # The unrounded float32 result differs, so the test would notice dropped rounding.
    assert not np.array_equal(x * c + d, expected)


def test_refusals():
    fp32 = _toy_detector()
    fp16, _ = convert_to_fp16(fp32)
    with pytest.raises(ExportError, match="already holds float16"):
        convert_to_fp16(fp16)
    with pytest.raises(ExportError, match="none of the float32 entry inputs"):
        convert_to_fp16(fp32, entry_inputs=["rois_typo"])
    assert _input_types(fp32, "Conv")[0][0] == F32  # the input model is not modified


def test_file_conversion_replaces_the_file_in_one_step(tmp_path: Path) -> None:
    path = tmp_path / "detector.onnx"
    onnx.save(_toy_detector(), str(path))
    report = convert_file_to_fp16(path)
    assert report.fp16_ops and holds_fp16(onnx.load(str(path)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["detector.onnx"]  # no temporary left
    # A refused conversion (the file already holds fp16) leaves the file as it was.
    before = path.read_bytes()
    with pytest.raises(ExportError, match="already holds float16"):
        convert_file_to_fp16(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["detector.onnx"]


# --- a real fp16 export (slow tier) -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported_fp16(tmp_path_factory):
    import torch
    from personsearch_export.exporter import export_bundle
    from personsearch_train.models import create_model
    from test_export import _save

    root = tmp_path_factory.mktemp("export16")
    torch.manual_seed(0)
    kwargs = {"box_score_thresh": 0.3}
    _save(root / "ckpt", "seqnet_tiny", create_model("seqnet_tiny", **kwargs).eval(), kwargs)
    report = export_bundle(
        root / "ckpt", root / "bundle", opset=17, precision="fp16", max_detections=20, parity_cases=2
    )
    return root, report


@pytest.mark.slow
def test_fp16_bundle_loads_with_the_graph_dtypes(exported_fp16):
    from personsearch_runtime.bundle import Bundle

    root, _ = exported_fp16
    bundle = Bundle.load(root / "bundle")
    assert bundle.manifest.precision == "fp16"
    names = {TensorProto.FLOAT: "float32", TensorProto.FLOAT16: "float16", TensorProto.INT64: "int64"}
    for role, spec in bundle.manifest.models.items():
        model = onnx.load(str(bundle.model_path(role)))
        assert holds_fp16(model), role
        for specs, values in ((spec.inputs, model.graph.input), (spec.outputs, model.graph.output)):
            graph_types = {v.name: names[v.type.tensor_type.elem_type] for v in values}
            assert {t.name: t.dtype for t in specs} == graph_types, role
        assert spec.inputs[0].dtype == "float32"  # images enter as float32, cast in the graph


@pytest.mark.slow
def test_fp16_bundle_keeps_rois_nms_topk_and_l2_norm_in_float32(exported_fp16):
    root, _ = exported_fp16
    detector = onnx.load(str(root / "bundle" / "detector.onnx"))
    encoder = onnx.load(str(root / "bundle" / "query_encoder.onnx"))
    for model in (detector, encoder):
        assert all(types[:2] == [F32, F32] for types in _input_types(model, "RoiAlign"))
        assert all(types == [F32] for types in _input_types(model, "ReduceL2"))
        assert set(_output_types(model, "Conv")) == {F16}
        assert set(_output_types(model, "Gemm")) == {F16}
    nms = _input_types(detector, "NonMaxSuppression")
    assert len(nms) == 3 and all(types[:2] == [F32, F32] for types in nms)
    assert _input_types(detector, "TopK") and all(t[0] == F32 for t in _input_types(detector, "TopK"))
    assert all(t[0] == F32 for t in _input_types(detector, "Exp"))  # box decoding


@pytest.mark.slow
def test_fp16_parity_is_measured_and_within_tolerance(exported_fp16, capsys):
    from personsearch_export.parity import TOLERANCES
    from personsearch_runtime.cli import main

    root, report = exported_fp16
    on_disk = json.loads((root / "bundle" / "parity.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert on_disk["precision"] == "fp16" and "emulated" in on_disk["backend"]
    tol = TOLERANCES["fp16"]
    out = on_disk["outputs"]
    assert out["detector.boxes_px"]["worst"] <= tol["boxes_px"]
    assert out["detector.scores_abs"]["worst"] <= tol["scores_abs"]
    assert out["detector.embeddings_cosine"]["worst"] >= tol["embeddings_cosine"]
    assert out["query_encoder.embeddings_cosine"]["worst"] >= tol["embeddings_cosine"]
    assert out["detector.unmatched_fraction"]["worst"] <= tol["unmatched_fraction"]
    # fp16 rounding is visible: the errors are not the float32 ones.
    assert out["detector.boxes_px"]["worst"] > 0 and out["detector.embeddings_cosine"]["worst"] < 1.0
    assert on_disk["passed"] and on_disk["compared_detections"] > 20
    assert main(["lint-trt", str(root / "bundle")]) == 0
    capsys.readouterr()


@pytest.mark.slow
def test_fp16_graphs_run_natively_in_onnx_runtime_cpu(exported_fp16):
    root, _ = exported_fp16
    model = onnx.load(str(Path(root) / "bundle" / "detector.onnx"))
    feeds = {"images": np.random.default_rng(0).standard_normal((1, 3, 128, 160)).astype(np.float32)}
    if len(model.graph.input) == 2:  # optional real-image sizes [B, 2] (height, width), float32
        feeds[model.graph.input[1].name] = np.array([[128.0, 160.0]], np.float32)
    boxes, scores, embeddings, counts = _run(model, feeds)
    assert boxes.dtype == scores.dtype == embeddings.dtype == np.float32
    assert np.isfinite(boxes).all() and np.isfinite(embeddings).all() and counts.shape == (1,)


def test_constants_beyond_the_fp16_range_are_saturated_and_reported():
    graph = helper.make_graph(
        [helper.make_node("Mul", ["images", "big"], ["y"])],
        "g",
        [helper.make_tensor_value_info("images", F32, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("y", F32, [1, 1, 2, 2])],
        [numpy_helper.from_array(np.array([1e5, -7e4, 3.0], np.float32)[:, None, None][:1], "big")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    fp16, report = convert_to_fp16(model)
    assert report.clipped_constants == ["big"]
    (big,) = [numpy_helper.to_array(t) for t in fp16.graph.initializer if t.name == "big_fp16"]
    assert big.dtype == np.float16 and float(big.ravel()[0]) == 65504.0
