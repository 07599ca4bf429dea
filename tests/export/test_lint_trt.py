"""lint-trt: every planted TensorRT problem is caught; clean graphs pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from personsearch_export.trt_support import TRT_OPERATOR_TABLE, lint_model
from personsearch_runtime.cli import main


def _model(nodes, inputs, outputs, inits=(), opset=17, extra_opsets=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    opsets = [helper.make_opsetid("", opset), *extra_opsets]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def _f(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _i64(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.INT64, shape)


def _init(name, value):
    return numpy_helper.from_array(np.asarray(value), name)


def _codes(model, severity=None):
    return {f.code for f in lint_model(model) if severity is None or f.severity == severity}


def _roialign(opset=16, **attrs):
    node = helper.make_node("RoiAlign", ["x", "rois", "idx"], ["y"], **attrs)
    return _model(
        [node],
        [_f("x", [1, 4, 16, 16]), _f("rois", [3, 4]), _i64("idx", [3])],
        [_f("y", [3, 4, 7, 7])],
        opset=opset,
    )


FULL_ROI = dict(
    coordinate_transformation_mode="output_half_pixel",
    sampling_ratio=2,
    mode="avg",
    output_height=7,
    output_width=7,
    spatial_scale=0.0625,
)


def test_clean_graph_has_no_findings():
    model = _model(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["y"]),
        ],
        [_f("x", ["B", 3, "H", "W"])],
        [_f("y", ["B", 2, "H", "W"])],
        [_init("w", np.ones((2, 3, 3, 3), np.float32))],
    )
    assert lint_model(model) == []


def test_table_covers_the_ops_we_care_about():
    for op in ("Conv", "RoiAlign", "NonMaxSuppression", "TopK", "Resize", "Gather"):
        assert TRT_OPERATOR_TABLE[op].supported
    for op in ("MaxRoiPool", "Unique", "SequenceAt", "ConvInteger"):
        assert not TRT_OPERATOR_TABLE[op].supported


def test_unsupported_operator_is_an_error():
    node = helper.make_node("MaxRoiPool", ["x", "rois"], ["y"], pooled_shape=[7, 7])
    model = _model([node], [_f("x", [1, 4, 16, 16]), _f("rois", [3, 5])], [_f("y", [3, 4, 7, 7])])
    assert "unsupported-op" in _codes(model, "error")


def test_fully_specified_roialign_passes():
    findings = lint_model(_roialign(**FULL_ROI))
    assert not [f for f in findings if f.severity == "error"]
    assert not [f for f in findings if f.code.startswith("roialign")]


@pytest.mark.parametrize("missing", ["coordinate_transformation_mode", "sampling_ratio"])
def test_roialign_defaults_are_errors(missing):
    attrs = {k: v for k, v in FULL_ROI.items() if k != missing}
    findings = [f for f in lint_model(_roialign(**attrs)) if f.code == "roialign-default"]
    assert any(f.severity == "error" and missing in f.message for f in findings)


def test_roialign_max_mode_and_low_opset():
    assert "roialign-mode" in _codes(_roialign(**{**FULL_ROI, "mode": "max"}), "error")
    low = {k: v for k, v in FULL_ROI.items() if k != "coordinate_transformation_mode"}
    assert "roialign-opset" in _codes(_roialign(opset=11, **low), "error")


def test_roialign_unwritten_output_size_is_a_warning():
    attrs = {k: v for k, v in FULL_ROI.items() if k != "output_height"}
    assert "roialign-default" in _codes(_roialign(**attrs), "warning")


def test_resize_with_computed_scales_is_an_error():
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["sf", "sf"], ["scales"]),
        helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest"),
    ]
    model = _model(nodes, [_f("x", [1, 3, 8, 8])], [_f("y", [1, 3, 8, 8])])
    assert "resize-scales" in _codes(model, "error")


def test_resize_with_initializer_scales_passes_and_cubic_fails():
    def resize(mode):
        node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode=mode)
        return _model(
            [node],
            [_f("x", [1, 3, 8, 8])],
            [_f("y", [1, 3, 16, 16])],
            [_init("scales", np.array([1, 1, 2, 2], np.float32))],
        )

    assert _codes(resize("linear"), "error") == set()
    assert "resize-attribute" in _codes(resize("cubic"), "error")


def test_int64_input_is_flagged_and_strict_fails(tmp_path):
    model = _model([helper.make_node("Add", ["ids", "ids"], ["y"])], [_i64("ids", [4])], [_i64("y", [4])])
    findings = lint_model(model)
    assert [f.code for f in findings] == ["int64-input"]
    assert findings[0].severity == "warning"
    path = tmp_path / "int64.onnx"
    onnx.save(model, str(path))
    assert main(["lint-trt", str(path)]) == 0
    assert main(["lint-trt", "--strict", str(path)]) == 1


def test_int64_token_ids_and_masks_are_not_flagged():
    # A text encoder's ids index an embedding table and its mask is cast to float: TensorRT
    # 10+ takes int64 there as it is.
    table = numpy_helper.from_array(np.zeros((10, 2), np.float32), "table")
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["vectors"], axis=0),
        helper.make_node("Cast", ["mask"], ["y"], to=TensorProto.FLOAT),
    ]
    model = _model(nodes, [_i64("ids", [4]), _i64("mask", [4])], [_f("vectors", [4, 2]), _f("y", [4])])
    model.graph.initializer.append(table)
    assert "int64-input" not in _codes(model)


def test_data_dependent_output_shape_is_an_error():
    nodes = [helper.make_node("NonZero", ["x"], ["y"])]
    model = _model(nodes, [_f("x", [4, 4])], [_i64("y", [2, "N"])])
    codes = _codes(model)
    assert "data-dependent-shape" in _codes(model, "error")
    assert "data-dependent-op" in codes


def test_data_dependent_op_padded_to_static_output_is_only_a_warning():
    # NMS feeding a fixed-size padded output (our detector's layout) is fine for TensorRT.
    nodes = [
        helper.make_node("NonMaxSuppression", ["boxes", "scores", "maxk", "iou", "thr"], ["sel"]),
        helper.make_node("Shape", ["sel"], ["n"]),
        helper.make_node("Slice", ["n", "zero", "one"], ["n0"]),
        helper.make_node("Sub", ["k", "n0"], ["padlen"]),
        helper.make_node("Concat", ["zero", "padlen", "zero", "zero"], ["pads"], axis=0),
        helper.make_node("Pad", ["sel", "pads"], ["padded"]),
    ]
    inits = [
        _init("maxk", np.array([10], np.int64)),
        _init("iou", np.array([0.5], np.float32)),
        _init("thr", np.array([0.1], np.float32)),
        _init("zero", np.array([0], np.int64)),
        _init("one", np.array([1], np.int64)),
        _init("k", np.array([10], np.int64)),
    ]
    model = _model(
        nodes, [_f("boxes", [1, 20, 4]), _f("scores", [1, 1, 20])], [_i64("padded", [10, 3])], inits
    )
    assert _codes(model, "error") == set()
    assert "data-dependent-op" in _codes(model, "warning")


def test_nms_with_computed_threshold_is_an_error():
    nodes = [
        helper.make_node("Identity", ["thr_in"], ["thr"]),
        helper.make_node("NonMaxSuppression", ["boxes", "scores", "maxk", "iou", "thr"], ["sel"]),
    ]
    model = _model(
        nodes,
        [_f("boxes", [1, 20, 4]), _f("scores", [1, 1, 20]), _f("thr_in", [1])],
        [_i64("sel", [10, 3])],
        [_init("maxk", np.array([10], np.int64)), _init("iou", np.array([0.5], np.float32))],
    )
    assert "non-constant-input" in _codes(model, "error")


def test_topk_runtime_k_and_oversized_k():
    def topk(k_init=None):
        nodes = [helper.make_node("TopK", ["x", "k"], ["v", "i"])]
        inputs = [_f("x", [1, 5000])]
        inits = []
        if k_init is None:
            inputs.append(_i64("k", [1]))
        else:
            inits.append(_init("k", np.array([k_init], np.int64)))
        return _model(nodes, inputs, [_f("v", [1, "K"]), _i64("i", [1, "K"])], inits)

    assert "topk-k" in _codes(topk(None), "error")
    assert "topk-k" in _codes(topk(4000), "error")
    assert "topk-k" not in _codes(topk(100))


def test_reduce_with_runtime_axes_is_an_error_at_opset_18():
    nodes = [helper.make_node("ReduceMax", ["x", "axes"], ["y"], keepdims=0)]
    model = _model(nodes, [_f("x", [2, 3]), _i64("axes", [1])], [_f("y", [2])], opset=18)
    assert "non-constant-input" in _codes(model, "error")


def test_opset_out_of_range_and_custom_domain():
    relu = _model([helper.make_node("Relu", ["x"], ["y"])], [_f("x", [2])], [_f("y", [2])], opset=8)
    assert "opset" in _codes(relu, "error")
    plugin = _model(
        [helper.make_node("RoIAlign", ["x"], ["y"], domain="psdk")],
        [_f("x", [2])],
        [_f("y", [2])],
        extra_opsets=[helper.make_opsetid("psdk", 1)],
    )
    assert {"plugin-op", "custom-domain"} <= _codes(plugin, "warning")


def test_maxpool_indices_output_is_an_error():
    node = helper.make_node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2])
    model = _model([node], [_f("x", [1, 1, 4, 4])], [_f("y", [1, 1, 3, 3]), _i64("idx", [1, 1, 3, 3])])
    assert "maxpool-indices" in _codes(model, "error")


def test_subgraph_nodes_are_checked():
    then_graph = helper.make_graph(
        [helper.make_node("MaxRoiPool", ["x", "r"], ["t"], pooled_shape=[1, 1])], "then", [], [_f("t", [1])]
    )
    else_graph = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [], [_f("e", [1])])
    node = helper.make_node("If", ["c"], ["y"], then_branch=then_graph, else_branch=else_graph)
    model = _model(
        [node],
        [helper.make_tensor_value_info("c", TensorProto.BOOL, []), _f("x", [1]), _f("r", [1, 5])],
        [_f("y", [1])],
    )
    assert "unsupported-op" in _codes(model, "error")


def test_cli_on_bundle_passes_and_on_bad_file_fails(toy_bundle: Path, tmp_path, capsys):
    assert main(["lint-trt", str(toy_bundle)]) == 0
    bad = tmp_path / "bad.onnx"
    onnx.save(_roialign(opset=16, mode="avg"), str(bad))
    out_json = tmp_path / "findings.json"
    assert main(["lint-trt", str(bad), "--json", str(out_json)]) == 1
    text = capsys.readouterr().out
    assert "roialign-default" in text and "FAIL" in text
    assert "roialign-default" in out_json.read_text()


def test_cli_rejects_other_files(tmp_path, capsys):
    other = tmp_path / "x.txt"
    other.write_text("hi")
    assert main(["lint-trt", str(other)]) == 2
    assert "neither a bundle directory nor an .onnx file" in capsys.readouterr().err
