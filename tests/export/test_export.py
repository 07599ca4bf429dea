"""ONNX export: building blocks against references, refusals, atomic bundles, measured parity."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision
from personsearch_export.adapters import batched_nms_onnx, pad_selection, roi_align_onnx
from personsearch_export.checkpoint_io import load_checkpoint
from personsearch_export.errors import CheckpointError, ExportError
from personsearch_export.exporter import parse_image_size
from personsearch_export.onnx_export import check_opset
from personsearch_runtime.cli import main


def _export(module, inputs, names, outputs, dynamic, opset=17) -> ort.InferenceSession:
    path = Path(__import__("tempfile").mkdtemp()) / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            inputs,
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=names,
            output_names=outputs,
            dynamic_axes=dynamic,
        )
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]), onnx.load(str(path))


# --- building blocks --------------------------------------------------------------------------------------


def test_pad_selection_hand_computed():
    selected = torch.tensor([[0, 0, 5], [0, 0, 2], [2, 0, 7], [2, 0, 1], [2, 0, 3]])
    indices, valid, counts = pad_selection(selected, 3, 4)
    assert counts.tolist() == [2, 0, 3]
    assert valid.tolist() == [[True, True, False, False], [False] * 4, [True, True, True, False]]
    assert indices[valid].tolist() == [5, 2, 7, 1, 3]
    empty_indices, empty_valid, empty_counts = pad_selection(torch.zeros((0, 3), dtype=torch.int64), 2, 3)
    assert empty_counts.tolist() == [0, 0] and not empty_valid.any() and empty_indices.shape == (2, 3)


class _NmsPad(torch.nn.Module):
    def forward(self, boxes, scores):
        keep = batched_nms_onnx(boxes, scores, max_out=6, iou=0.5, score_thr=0.2)
        return pad_selection(keep, boxes.shape[0], 6)


def _random_boxes(gen, b, n):
    xy = torch.rand(b, n, 2, generator=gen) * 80
    wh = torch.rand(b, n, 2, generator=gen) * 40 + 2
    return torch.cat([xy, xy + wh], dim=2)


def test_nms_matches_torchvision_eagerly_and_in_onnx_runtime():
    gen = torch.Generator().manual_seed(0)
    boxes, scores = _random_boxes(gen, 3, 40), torch.rand(3, 40, generator=gen)
    indices, valid, counts = _NmsPad()(boxes, scores)
    for b in range(3):  # reference: torchvision per image
        cand = torch.nonzero(scores[b] > 0.2).squeeze(1)
        ref = cand[torchvision.ops.nms(boxes[b, cand], scores[b, cand], 0.5)][:6]
        assert indices[b, : counts[b]].tolist() == ref.tolist()
    sess, _ = _export(
        _NmsPad(),
        (boxes, scores),
        ["boxes", "scores"],
        ["indices", "valid", "counts"],
        {"boxes": {0: "B", 1: "N"}, "scores": {0: "B", 1: "N"}},
    )
    for b_, n_ in ((3, 40), (1, 7), (2, 60)):
        bx, sc = _random_boxes(gen, b_, n_), torch.rand(b_, n_, generator=gen)
        expected = [t.numpy() for t in _NmsPad()(bx, sc)]
        got = sess.run(None, {"boxes": bx.numpy(), "scores": sc.numpy()})
        for e, g in zip(expected, got, strict=True):
            np.testing.assert_array_equal(e, g)


class _Pool(torch.nn.Module):
    def __init__(self, aligned, sampling_ratio):
        super().__init__()
        from personsearch_train.layers.roi_align import RoIAlign

        self.roi = RoIAlign(output_size=5, spatial_scale=0.25, sampling_ratio=sampling_ratio, aligned=aligned)

    def forward(self, features, rois, batch_indices):
        return roi_align_onnx(features, rois, batch_indices, self.roi)


def test_striped_reid_head_exports_with_static_slices():
    """Stripe pooling over 7 res5 rows (bands overlap) exports and matches PyTorch in ORT."""
    from personsearch_export.adapters import ReidHeadAdapter
    from personsearch_train.models import create_model

    torch.manual_seed(0)
    model = create_model("seqnet_tiny", embedding_stripes=3).eval()
    pooled = torch.rand(5, model.backbone.out_channels, 14, 14)
    adapter = ReidHeadAdapter(model).eval()
    session, graph = _export(
        adapter, (pooled,), ["pooled"], ["embeddings", "scores", "deltas"], {"pooled": {0: "R"}}
    )
    assert not {"AdaptiveMaxPool2d", "MaxRoiPool"} & {n.op_type for n in graph.graph.node}
    more = torch.rand(9, *pooled.shape[1:])
    with torch.no_grad():
        expected = adapter(more)
    got = session.run(None, {"pooled": more.numpy()})
    for name, want, have in zip(("embeddings", "scores", "deltas"), expected, got, strict=True):
        np.testing.assert_allclose(have, want.numpy(), atol=1e-5, rtol=1e-4, err_msg=name)


@pytest.mark.parametrize("aligned, sampling_ratio", [(False, 2), (True, 2), (False, 0), (True, 0)])
def test_roi_align_writes_every_attribute_and_matches_torchvision(aligned, sampling_ratio):
    gen = torch.Generator().manual_seed(1)
    features = torch.rand(2, 3, 20, 24, generator=gen)
    rois = torch.tensor([[4.0, 6.0, 50.0, 70.0], [0.0, 0.0, 3.0, 2.0], [60.0, 40.0, 95.0, 79.0]])
    idx = torch.tensor([0, 1, 1])
    sess, model = _export(
        _Pool(aligned, sampling_ratio),
        (features, rois, idx),
        ["features", "rois", "idx"],
        ["pooled"],
        {"rois": {0: "R"}, "idx": {0: "R"}, "features": {0: "B", 2: "H", 3: "W"}},
    )
    node = next(n for n in model.graph.node if n.op_type == "RoiAlign")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs == {
        "coordinate_transformation_mode": b"half_pixel" if aligned else b"output_half_pixel",
        "mode": b"avg",
        "output_height": 5,
        "output_width": 5,
        "sampling_ratio": sampling_ratio,
        "spatial_scale": pytest.approx(0.25),
    }
    expected = torchvision.ops.roi_align(
        features,
        torch.cat([idx[:, None].float(), rois], 1),
        output_size=5,
        spatial_scale=0.25,
        sampling_ratio=sampling_ratio,
        aligned=aligned,
    )
    (got,) = sess.run(None, {"features": features.numpy(), "rois": rois.numpy(), "idx": idx.numpy()})
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)


# --- options and refusals ---------------------------------------------------------------------------------


def test_low_opset_is_refused_with_an_explanation(capsys):
    with pytest.raises(ExportError, match="coordinate_transformation_mode"):
        check_opset(15)
    check_opset(16)
    assert main(["export", "--checkpoint", "nowhere", "--out", "nowhere2", "--opset", "11"]) == 2
    assert "silently" in capsys.readouterr().err


def test_parse_image_size():
    p = parse_image_size("128,192")
    assert p.min == p.opt == p.max == (128, 192)
    p = parse_image_size("64,64/128,192/256,320")
    assert (p.min, p.opt, p.max) == ((64, 64), (128, 192), (256, 320))
    for bad in ("128", "1,2,3", "256,256/128,128/512,512", "16,16"):
        with pytest.raises(ExportError):
            parse_image_size(bad)


def _save(folder: Path, model_name: str, weights_model: torch.nn.Module, kwargs=None) -> Path:
    from personsearch_train.engine.checkpoint import save_checkpoint

    save_checkpoint(
        folder, "best", model=weights_model, metadata={"model": {"name": model_name, "kwargs": kwargs or {}}}
    )
    return folder / "best.safetensors"


def test_corrupt_checkpoint_is_refused(tmp_path, capsys):
    from personsearch_train.models import create_model

    weights = _save(tmp_path, "seqnet_tiny", create_model("seqnet_tiny"))
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path)
    assert main(["export", "--checkpoint", str(weights), "--out", str(tmp_path / "b")]) == 2
    assert "corrupt" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_checkpoint_of_another_model_is_refused(tmp_path):
    from personsearch_train.models import create_model

    _save(tmp_path, "seqnet_tiny", create_model("seqnet_tiny", embedding_dim=32), {"embedding_dim": 48})
    with pytest.raises(CheckpointError, match="do not belong to model 'seqnet_tiny'"):
        load_checkpoint(tmp_path / "best.json")
    (tmp_path / "x").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "x")


def test_interrupted_export_leaves_no_bundle(tmp_path, monkeypatch):
    from personsearch_export import exporter
    from personsearch_train.models import create_model

    _save(tmp_path / "ckpt", "seqnet_tiny", create_model("seqnet_tiny"))

    def half_written(loaded, folder, **kwargs):
        (folder / "detector.onnx").write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(exporter, "export_graphs", half_written)
    out = tmp_path / "bundles" / "b1"
    with pytest.raises(KeyboardInterrupt):
        exporter.export_bundle(tmp_path / "ckpt", out)
    assert not out.exists()
    assert list((tmp_path / "bundles").iterdir()) == []


# --- a real export (slow tier) ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from personsearch_export.exporter import export_bundle
    from personsearch_train.models import create_model

    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    # An untrained model scores ~0.5 everywhere; a 0.3 threshold gives many detections to compare.
    kwargs = {"box_score_thresh": 0.3}
    _save(root / "ckpt", "seqnet_tiny", create_model("seqnet_tiny", **kwargs).eval(), kwargs)
    report = export_bundle(root / "ckpt", root / "bundle", opset=17, max_detections=20, parity_cases=2)
    return root, report


@pytest.mark.slow
def test_export_writes_a_valid_bundle_with_fp32_parity(exported):
    from personsearch_runtime.bundle import SPLIT_ROLES, Bundle

    root, report = exported
    bundle = Bundle.load(root / "bundle")
    assert set(bundle.manifest.models) == {"detector", "query_encoder", *SPLIT_ROLES}
    assert bundle.manifest.postprocessing.max_detections == 20
    on_disk = json.loads((root / "bundle" / "parity.json").read_text())
    assert on_disk["passed"] and report["passed"]
    outputs = on_disk["outputs"]
    assert outputs["detector.boxes_px"]["worst"] <= 0.01
    assert outputs["detector.scores_abs"]["worst"] <= 1e-4
    assert outputs["detector.embeddings_cosine"]["worst"] >= 0.99999
    assert outputs["query_encoder.embeddings_cosine"]["worst"] >= 0.99999
    assert on_disk["compared_detections"] > 20  # the comparison saw real detections
    detector = onnx.load(str(root / "bundle" / "detector.onnx"))
    dims = [[d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in detector.graph.output]
    assert dims == [["B", 20, 4], ["B", 20], ["B", 20, 64], ["B"]]
    assert {n.op_type for n in detector.graph.node} >= {"RoiAlign", "NonMaxSuppression"}


@pytest.mark.slow
def test_bundle_passes_lint_and_verify(exported, tmp_path, capsys):
    root, _ = exported
    assert main(["lint-trt", str(root / "bundle")]) == 0
    assert (
        main(["verify", str(root / "bundle"), "--checkpoint", str(root / "ckpt"), "--parity-cases", "1"]) == 0
    )
    assert "PASSED" in capsys.readouterr().out
    assert main(["export-triton", str(root / "bundle"), "--out", str(tmp_path / "repo")]) == 0


@pytest.mark.slow
def test_verify_refuses_another_checkpoint(exported, tmp_path, capsys):
    from personsearch_train.models import create_model

    root, _ = exported
    torch.manual_seed(1)
    _save(tmp_path / "other", "seqnet_tiny", create_model("seqnet_tiny"))
    assert main(["verify", str(root / "bundle"), "--checkpoint", str(tmp_path / "other")]) == 2
    assert "not the checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_existing_bundle_is_kept_unless_overwrite(exported, capsys):
    root, _ = exported
    assert main(["export", "--checkpoint", str(root / "ckpt"), "--out", str(root / "bundle")]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluation_from_onnx_runtime_matches_pytorch(exported, tmp_path):
    """The trainer's search evaluation scores ONNX Runtime outputs like the PyTorch model's.

    With this untrained model the metrics themselves are near zero, so the test also
    checks the detections and query embeddings that feed them.
    """
    from personsearch_export.checkpoint_io import load_checkpoint
    from personsearch_export.parity import OnnxSearchModel
    from personsearch_train.data.registry import load_split
    from personsearch_train.data.synthetic.generator import generate_dataset
    from personsearch_train.engine.inference import predict_split
    from personsearch_train.evaluation.person_search import evaluate_search

    root, _ = exported
    generate_dataset(tmp_path / "syn", preset="tiny", seed=0, workers=1)
    split = load_split("cuhk_sysu", tmp_path / "syn" / "CUHK-SYSU", "test")
    torch_pred = predict_split(load_checkpoint(root / "ckpt").model, split, progress=False)
    onnx_pred = predict_split(OnnxSearchModel(root / "bundle"), split, progress=False)
    np.testing.assert_allclose(onnx_pred.query_embeddings, torch_pred.query_embeddings, atol=1e-5)
    # The detector takes image_sizes, so ONNX Runtime is fed the same padded batches as
    # PyTorch and clips to each unpadded image as PyTorch does: every image has the same
    # detections. The bundle keeps the top K=20 per image, PyTorch box_detections_per_img (32).
    torch_counts = np.minimum(np.diff(torch_pred.det_offsets), 20)
    onnx_counts = np.diff(onnx_pred.det_offsets)
    np.testing.assert_array_equal(onnx_counts, torch_counts)
    for gallery_size in (-1, 50):
        ref = evaluate_search(split, torch_pred, gallery_size=gallery_size)
        got = evaluate_search(split, onnx_pred, gallery_size=gallery_size)
        assert abs(ref.mean_ap - got.mean_ap) <= 1e-3
        assert abs(ref.top(1) - got.top(1)) <= 1e-3


@pytest.mark.slow
def test_stride_8_model_exports_with_its_roi_scale_and_parity(tmp_path):
    """A dilated-trunk model (res4 at stride 8) exports; RoIAlign and anchors follow the stride."""
    from personsearch_export.exporter import export_bundle
    from personsearch_runtime.bundle import Bundle
    from personsearch_train.models import create_model

    torch.manual_seed(0)
    kwargs = {"box_score_thresh": 0.3, "res4_stride": 8}
    _save(tmp_path / "ckpt", "seqnet_tiny", create_model("seqnet_tiny", **kwargs).eval(), kwargs)
    report = export_bundle(
        tmp_path / "ckpt", tmp_path / "bundle", opset=17, max_detections=20, parity_cases=1
    )
    assert report["passed"], report
    assert report["compared_detections"] > 20
    manifest = Bundle.load(tmp_path / "bundle").manifest
    assert manifest.split.box_roi_align.spatial_scale == pytest.approx(1 / 8)
    assert manifest.split.reid_roi_align.spatial_scale == pytest.approx(1 / 8)
