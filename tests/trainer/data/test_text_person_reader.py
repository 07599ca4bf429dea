"""Text-to-image person JSON readers (CUHK-PEDES, ICFG-PEDES, RSTPReid, UFine)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from personsearch_train.data import load_text_person
from personsearch_train.errors import ConfigError, DatasetFormatError


def _write(path: Path, entries: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


def _pedes_entries(image_key: str = "file_path") -> list[dict]:
    return [
        {
            "split": "train",
            "id": 1,
            image_key: "train/a.jpg",
            "captions": ["a1", "a2"],
            "processed_tokens": [],
        },
        {
            "split": "test",
            "id": 12,
            image_key: "test/t.jpg",
            "captions": ["t1", "t2"],
            "processed_tokens": [],
        },
        {"split": "train", "id": 2, image_key: "train/b.jpg", "captions": ["b1"], "processed_tokens": []},
        {"split": "val", "id": 20, image_key: "val/v.jpg", "captions": ["v1"], "processed_tokens": []},
        {
            "split": "train",
            "id": 1,
            image_key: "train/c.jpg",
            "captions": ["c1", "c2", "c3"],
            "processed_tokens": [],
        },
        {"split": "test", "id": 11, image_key: "test/u.jpg", "captions": ["u1"], "processed_tokens": []},
    ]


def test_cuhk_pedes_train(tmp_path: Path) -> None:
    root = tmp_path / "CUHK-PEDES"
    _write(root / "reid_raw.json", _pedes_entries())
    split = load_text_person(root, "cuhk_pedes", "train")
    assert split.image_paths == tuple(
        root.resolve() / "imgs" / p for p in ("train/a.jpg", "train/b.jpg", "train/c.jpg")
    )
    assert split.image_pids.tolist() == [0, 1, 0]  # IRRA: pid = id - 1
    np.testing.assert_array_equal(split.label_to_pid, [1, 2])
    assert split.captions == ("a1", "a2", "b1", "c1", "c2", "c3")
    assert split.caption_image.tolist() == [0, 0, 1, 2, 2, 2]
    assert split.caption_pids.tolist() == [0, 0, 1, 0, 0, 0]
    assert split.image_pids.dtype == np.int64 and split.caption_pids.dtype == np.int64
    assert split.num_identities == 2


def test_cuhk_pedes_test_and_val_keep_ids(tmp_path: Path) -> None:
    root = tmp_path / "CUHK-PEDES"
    _write(root / "reid_raw.json", _pedes_entries())
    test = load_text_person(root, "cuhk_pedes", "test")
    assert test.image_pids.tolist() == [12, 11]
    assert test.captions == ("t1", "t2", "u1")
    assert test.caption_pids.tolist() == [12, 12, 11]
    assert test.caption_image.tolist() == [0, 0, 1]
    assert test.label_to_pid.size == 0
    val = load_text_person(root, "cuhk_pedes", "val")
    assert val.image_pids.tolist() == [20]


def test_icfg_pedes_alternative_file_name(tmp_path: Path) -> None:
    root = tmp_path / "ICFG-PEDES"
    entries = [
        {"split": "train", "id": 0, "file_path": "a.jpg", "captions": ["x"]},
        {"split": "train", "id": 1, "file_path": "b.jpg", "captions": ["y"]},
    ]
    _write(root / "ICFG_PEDES.json", entries)
    split = load_text_person(root, "icfg_pedes", "train")
    assert split.image_pids.tolist() == [0, 1]  # 0-based ids used as they are
    np.testing.assert_array_equal(split.label_to_pid, [0, 1])


def test_rstpreid_uses_img_path(tmp_path: Path) -> None:
    root = tmp_path / "RSTPReid"
    _write(root / "data_captions.json", _pedes_entries(image_key="img_path"))
    split = load_text_person(root, "rstpreid", "test")
    assert split.image_paths[0] == root.resolve() / "imgs" / "test/t.jpg"
    # an entry with file_path instead of img_path is refused with the key named
    _write(root / "data_captions.json", _pedes_entries())
    with pytest.raises(DatasetFormatError, match=r"data_captions\.json: entry 0 has no key 'img_path'"):
        load_text_person(root, "rstpreid", "test")


def test_ufine3c_keeps_source(tmp_path: Path) -> None:
    root = tmp_path / "UFine3C"
    entries = [
        {
            "id": 2250,
            "source": "UFine6926",
            "split": "test",
            "file_path": "images/7446.jpg",
            "captions": ["a", "b"],
        },
        {"id": 7, "source": "CUHK-PEDES", "split": "test", "file_path": "images/1.jpg", "captions": ["c"]},
    ]
    _write(root / "UFine3C.json", entries)
    split = load_text_person(root, "ufine3c", "test")
    assert split.image_sources == ("UFine6926", "CUHK-PEDES")
    assert split.image_paths[0] == root.resolve() / "images" / "7446.jpg"  # relative to the dataset folder
    assert split.caption_pids.tolist() == [2250, 2250, 7]


def test_ufine6926_annotation_file_override(tmp_path: Path) -> None:
    root = tmp_path / "UFine6926"
    _write(
        root / "my_annotations.json",
        [{"split": "train", "id": 1, "file_path": "images/1.jpg", "captions": ["a"]}],
    )
    with pytest.raises(DatasetFormatError, match=r"UFine6926\.json: file not found"):
        load_text_person(root, "ufine6926", "train")
    split = load_text_person(root, "ufine6926", "train", annotation_file="my_annotations.json")
    assert split.image_pids.tolist() == [0] and split.label_to_pid.tolist() == [1]
    assert split.image_sources == ("",)


def test_malformed_json(tmp_path: Path) -> None:
    root = tmp_path / "CUHK-PEDES"
    (root).mkdir()
    (root / "reid_raw.json").write_text("[{", encoding="utf-8")
    with pytest.raises(DatasetFormatError, match=r"reid_raw\.json: not a readable JSON file"):
        load_text_person(root, "cuhk_pedes", "train")
    _write(root / "reid_raw.json", {"split": "train"})
    with pytest.raises(DatasetFormatError, match=r"reid_raw\.json: expected a JSON list"):
        load_text_person(root, "cuhk_pedes", "train")
    _write(
        root / "reid_raw.json", [{"split": "train", "id": 1, "file_path": "a.jpg", "captions": "one string"}]
    )
    with pytest.raises(
        DatasetFormatError, match=r"reid_raw\.json: entry 0: 'captions' must be a list of strings"
    ):
        load_text_person(root, "cuhk_pedes", "train")
    _write(root / "reid_raw.json", [{"split": "train", "id": "x1", "file_path": "a.jpg", "captions": []}])
    with pytest.raises(DatasetFormatError, match=r"entry 0: 'id' must be an integer"):
        load_text_person(root, "cuhk_pedes", "train")
    _write(root / "reid_raw.json", [{"split": "test", "id": 1, "file_path": "a.jpg", "captions": []}])
    with pytest.raises(DatasetFormatError, match=r"reid_raw\.json: no entries with split 'train'"):
        load_text_person(root, "cuhk_pedes", "train")


def test_missing_file_and_bad_names(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError, match=r"reid_raw\.json: file not found"):
        load_text_person(tmp_path, "cuhk_pedes", "train")
    with pytest.raises(ConfigError, match="unknown text-person dataset"):
        load_text_person(tmp_path, "flickr30k", "train")
    with pytest.raises(ConfigError, match="split"):
        load_text_person(tmp_path, "cuhk_pedes", "gallery")
