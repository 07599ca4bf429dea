"""COCO person json, CrowdHuman odgt and Market-1501 folder readers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from personsearch_train.data import load_coco_persons, load_crowdhuman, load_market1501
from personsearch_train.data.reid_folders import parse_market1501_name
from personsearch_train.errors import ConfigError, DatasetFormatError


def _coco() -> dict:
    return {
        "images": [
            {"id": 7, "file_name": "000007.jpg", "width": 640, "height": 480},
            {"id": 3, "file_name": "000003.jpg", "width": 640, "height": 480},
            {"id": 9, "file_name": "000009.jpg", "width": 640, "height": 480},
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 3,
                "category_id": 1,
                "bbox": [10.5, 20, 30, 60],
                "iscrowd": 0,
                "area": 1800,
            },
            {"id": 2, "image_id": 3, "category_id": 3, "bbox": [0, 0, 50, 50], "iscrowd": 0, "area": 2500},
            {"id": 3, "image_id": 7, "category_id": 1, "bbox": [100, 100, 200, 150], "iscrowd": 1, "area": 1},
            {"id": 4, "image_id": 7, "category_id": 1, "bbox": [5, 6, 7, 8], "iscrowd": 0, "area": 56},
            {"id": 5, "image_id": 3, "category_id": 1, "bbox": [1, 1, 0, 8], "iscrowd": 0, "area": 0},
            {"id": 6, "image_id": 9, "category_id": 3, "bbox": [1, 1, 4, 8], "iscrowd": 0, "area": 32},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
    }


def test_coco_persons(tmp_path: Path) -> None:
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(_coco()))
    records = load_coco_persons(path, tmp_path / "images")
    assert [r.name for r in records] == ["000007.jpg", "000003.jpg"]  # json order; image 9 has no person
    np.testing.assert_array_equal(records[0].boxes, np.array([[5, 6, 12, 14]], np.float32))  # crowd excluded
    np.testing.assert_array_equal(
        records[1].boxes, np.array([[10.5, 20, 40.5, 80]], np.float32)
    )  # no car, no w=0
    assert records[1].pids.tolist() == [-1]
    assert records[1].path == (tmp_path / "images").resolve() / "000003.jpg"
    assert len(load_coco_persons(path, tmp_path, keep_empty=True)) == 3


def test_coco_malformed(tmp_path: Path) -> None:
    path = tmp_path / "instances.json"
    data = _coco()
    data["categories"] = [{"id": 3, "name": "car"}]
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetFormatError, match=r"instances\.json: no category named 'person'"):
        load_coco_persons(path, tmp_path)
    data = _coco()
    data["annotations"][0]["bbox"] = [1, 2, 3]
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetFormatError, match=r"instances\.json: annotations\[0\]\.bbox: expected a box"):
        load_coco_persons(path, tmp_path)
    data = _coco()
    data["annotations"][0]["image_id"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetFormatError, match=r"annotations\[0\]: image_id 99 is not in 'images'"):
        load_coco_persons(path, tmp_path)
    with pytest.raises(DatasetFormatError, match=r"nothing\.json: file not found"):
        load_coco_persons(tmp_path / "nothing.json", tmp_path)


def _odgt_lines() -> list[dict]:
    person = {
        "tag": "person",
        "fbox": [-5, 10, 40, 100],
        "vbox": [0, 12, 30, 80],
        "hbox": [5, 12, 10, 12],
        "head_attr": {"ignore": 0, "occ": 0, "unsure": 0},
        "extra": {"box_id": 0, "occ": 1},
    }
    ignored = {**person, "fbox": [200, 10, 40, 100], "extra": {"box_id": 1, "occ": 0, "ignore": 1}}
    mask = {"tag": "mask", "fbox": [300, 0, 80, 80], "extra": {"box_id": 2, "ignore": 1}}
    return [
        {"ID": "273271,c9db000d5146c15", "gtboxes": [person, ignored, mask]},
        {"ID": "273271,1017c000ac1360b7", "gtboxes": [mask]},
    ]


def test_crowdhuman(tmp_path: Path) -> None:
    path = tmp_path / "annotation_train.odgt"
    path.write_text("\n".join(json.dumps(line) for line in _odgt_lines()) + "\n")
    full = load_crowdhuman(path, tmp_path / "Images")
    assert [r.name for r in full] == ["273271,c9db000d5146c15.jpg"]
    np.testing.assert_array_equal(full[0].boxes, np.array([[-5, 10, 35, 110]], np.float32))  # not clipped
    assert full[0].pids.tolist() == [-1]
    visible = load_crowdhuman(path, tmp_path / "Images", box="visible")
    np.testing.assert_array_equal(visible[0].boxes, np.array([[0, 12, 30, 92]], np.float32))
    head = load_crowdhuman(path, tmp_path / "Images", box="head")
    np.testing.assert_array_equal(head[0].boxes, np.array([[5, 12, 15, 24]], np.float32))
    assert len(load_crowdhuman(path, tmp_path, keep_empty=True)) == 2
    with pytest.raises(ConfigError):
        load_crowdhuman(path, tmp_path, box="body")


def test_crowdhuman_malformed(tmp_path: Path) -> None:
    path = tmp_path / "annotation_val.odgt"
    path.write_text(json.dumps(_odgt_lines()[0]) + "\n{not json\n")
    with pytest.raises(DatasetFormatError, match=r"annotation_val\.odgt: line 2 is not valid JSON"):
        load_crowdhuman(path, tmp_path)
    line = _odgt_lines()[0]
    del line["gtboxes"][0]["vbox"]
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(DatasetFormatError, match=r"annotation_val\.odgt: line 1: gtboxes\[0\] has no 'vbox'"):
        load_crowdhuman(path, tmp_path, box="visible")


def _touch(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_market1501_train(tmp_path: Path) -> None:
    root = tmp_path / "Market-1501"
    _touch(
        root / "bounding_box_train",
        [
            "0007_c3s2_000123_00.jpg",
            "0002_c1s1_000451_03.jpg",
            "0002_c2s1_000500_01.jpg",
            "-1_c1s1_000001_00.jpg",
            "Thumbs.db",
        ],
    )
    crops = load_market1501(root)
    assert crops.names == ("0002_c1s1_000451_03.jpg", "0002_c2s1_000500_01.jpg", "0007_c3s2_000123_00.jpg")
    assert crops.pids.tolist() == [0, 0, 1]
    np.testing.assert_array_equal(crops.label_to_pid, [2, 7])
    assert crops.cameras.tolist() == [1, 2, 3]
    assert crops.sequences.tolist() == [1, 1, 2]
    assert crops.frames.tolist() == [451, 500, 123]
    assert crops.paths[0] == (root / "bounding_box_train").resolve() / "0002_c1s1_000451_03.jpg"
    with_junk = load_market1501(root, include_junk=True)
    assert with_junk.names[0] == "-1_c1s1_000001_00.jpg" and with_junk.pids.tolist() == [-1, 0, 0, 1]


def test_market1501_test_keeps_ids_and_distractors(tmp_path: Path) -> None:
    root = tmp_path / "Market-1501"
    _touch(
        root / "bounding_box_test", ["0000_c1s1_000001_01.jpg", "0003_c4s2_000010_02.jpg", "-1_c2s1_1_1.jpg"]
    )
    crops = load_market1501(root, "bounding_box_test")
    assert crops.pids.tolist() == [0, 3] and crops.label_to_pid.size == 0
    relabelled = load_market1501(root, "bounding_box_test", relabel=True)
    assert relabelled.pids.tolist() == [-1, 0] and relabelled.label_to_pid.tolist() == [3]


def test_market1501_malformed(tmp_path: Path) -> None:
    root = tmp_path / "Market-1501"
    _touch(root / "query", ["0001_c1s1_000451_00.jpg", "person_1.jpg"])
    with pytest.raises(DatasetFormatError, match=r"query/person_1\.jpg: not a Market-1501 crop name"):
        load_market1501(root, "query")
    with pytest.raises(DatasetFormatError, match=r"gt_bbox: folder not found"):
        load_market1501(root, "gt_bbox")
    _touch(root / "empty", ["readme.txt"])
    with pytest.raises(DatasetFormatError, match=r"empty: no Market-1501 crops"):
        load_market1501(root, "empty")
    assert parse_market1501_name("1501_c6s4_001877_02.jpg") == (1501, 6, 4, 1877, 2)
