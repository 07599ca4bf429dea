from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from personsearch_runtime.bundle import MANIFEST_NAME, SCHEMA_VERSION, Bundle, Manifest
from personsearch_runtime.errors import BundleError


def _copy(bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / "b"
    shutil.copytree(bundle, target)
    return target


def _edit(root: Path, change) -> None:  # noqa: ANN001
    path = root / MANIFEST_NAME
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))


def test_load_and_round_trip(tiny_bundle: Path) -> None:
    bundle = Bundle.load(tiny_bundle)
    m = bundle.manifest
    assert m.schema_version == SCHEMA_VERSION
    assert set(m.models) == {"detector", "query_encoder", "backbone_rpn", "box_head", "reid_head"}
    assert bundle.embedding_dim == 8 and m.postprocessing.max_detections == 4
    assert m.models["detector"].outputs[2].shape == ("B", 4, 8)
    again = Manifest.from_json(json.loads(m.dumps()))
    assert again == m
    det = m.models["detector"]
    lo, opt, hi = det.profile_shapes(det.inputs[0])
    assert lo == (1, 3, 32, 32) and opt == (2, 3, 96, 96) and hi == (8, 3, 192, 192)


def test_load_accepts_manifest_path(tiny_bundle: Path) -> None:
    assert Bundle.load(tiny_bundle / MANIFEST_NAME).root == tiny_bundle


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda o: o.update(schema_version=99), "schema_version"),
        (lambda o: o.update(surprise=1), "surprise"),
        (lambda o: o["preprocessing"].update(colour="BGR"), "preprocessing.colour"),
        (lambda o: o["preprocessing"].update(channel_order="BGR"), "preprocessing.channel_order"),
        (lambda o: o["preprocessing"].update(std=[0.2, 0.0, 0.2]), "preprocessing.std"),
        (lambda o: o.update(opset=11), "opset"),
        (
            lambda o: o["models"]["detector"]["inputs"][0].update(dtype="float128"),
            "models.detector.inputs[0].dtype",
        ),
        (
            lambda o: o["models"]["detector"]["inputs"][0].update(shape=["B", 3, "H"]),
            "models.detector.inputs[0].shape",
        ),
        (
            lambda o: o["models"]["detector"]["outputs"][2].update(shape=["B", 4, 9]),
            "models.detector.outputs[2].shape",
        ),
        (lambda o: o["models"]["detector"]["inputs"][0].update(shape=["B", 3, "Z", "W"]), "shape[2]"),
        (lambda o: o["models"]["detector"]["dims"]["B"].update(min=9), "models.detector.dims.B"),
        (lambda o: o["models"].pop("query_encoder"), "models.query_encoder"),
        (lambda o: o["models"].pop("box_head"), "models.box_head"),
        (lambda o: o["models"].update(segmenter={}), "models.segmenter"),
        (lambda o: o["postprocessing"].update(score_threshold=1.5), "postprocessing.score_threshold"),
        (lambda o: o["split"]["box_roi_align"].update(output_size=7), "models.box_head.inputs[0].shape"),
        (lambda o: o["embedding"].update(dim="256"), "embedding.dim"),
        # Optional image_sizes input: float32 [B, 2] (int64 is what TensorRT would narrow).
        (
            lambda o: o["models"]["detector"]["inputs"].append(
                {"name": "image_sizes", "dtype": "int64", "shape": ["B", 2]}
            ),
            "models.detector.inputs[1].dtype",
        ),
        (
            lambda o: o["models"]["backbone_rpn"]["inputs"].append(
                {"name": "image_sizes", "dtype": "float32", "shape": ["B"]}
            ),
            "models.backbone_rpn.inputs[1].shape",
        ),
        # The two-stage contract: reid_head refines boxes, both NMS thresholds are given.
        (lambda o: o["models"]["reid_head"]["outputs"].pop(2), "models.reid_head"),
        (
            lambda o: o["models"]["reid_head"]["outputs"][2].update(shape=["R", 8]),
            "models.reid_head.outputs[2].shape",
        ),
        (lambda o: o["postprocessing"].pop("reid_nms_threshold"), "postprocessing.reid_nms_threshold"),
        (lambda o: o["split"].pop("reid_box_coder"), "split.reid_box_coder"),
        (
            lambda o: o["split"].update(first_stage_max_detections=0),
            "split.first_stage_max_detections",
        ),
    ],
)
def test_bad_manifest_names_the_field(tiny_bundle: Path, tmp_path: Path, change, field: str) -> None:  # noqa: ANN001
    root = _copy(tiny_bundle, tmp_path)
    _edit(root, change)
    with pytest.raises(BundleError, match=None) as info:
        Bundle.load(root)
    assert field in str(info.value), str(info.value)


def test_missing_things_are_clear(tiny_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        Bundle.load(tmp_path / "nowhere")
    root = _copy(tiny_bundle, tmp_path)
    (root / "reid_head.onnx").unlink()
    with pytest.raises(BundleError, match=r"models\.reid_head\.file.*missing"):
        Bundle.load(root)
    (root / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        Bundle.load(root)
    (root / MANIFEST_NAME).unlink()
    with pytest.raises(BundleError, match="manifest.json is missing"):
        Bundle.load(root)


def test_hash_mismatch_is_detected(tiny_bundle: Path, tmp_path: Path) -> None:
    root = _copy(tiny_bundle, tmp_path)
    data = (root / "detector.onnx").read_bytes()
    (root / "detector.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match=r"models\.detector\.sha256"):
        Bundle.load(root)
    assert Bundle.load(root, verify_hashes=False).manifest.models["detector"].file == "detector.onnx"


def test_runtime_package_never_imports_onnx() -> None:
    src = Path(__file__).resolve().parents[2] / "runtime" / "personsearch_runtime"
    for path in src.rglob("*.py"):
        text = path.read_text()
        assert "import onnx\n" not in text and "from onnx " not in text, path
