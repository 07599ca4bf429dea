"""PRW reader on small files in the real layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from personsearch_train.data import load_prw
from personsearch_train.data.prw import camera_of
from personsearch_train.errors import ConfigError, DatasetFormatError
from reader_layouts import PRW_QUERIES, PRW_TEST, PRW_TRAIN


def test_fixture_has_the_reference_nesting(prw_root: Path) -> None:
    names = scipy.io.loadmat(prw_root / "frame_train.mat")["img_index_train"]
    assert [img[0][0] + ".jpg" for img in names][0] == "c1s1_000151.jpg"
    assert b"\r\n" in (prw_root / "query_info.txt").read_bytes()


def test_train_split(prw_root: Path) -> None:
    split = load_prw(prw_root, "train")
    assert [r.name for r in split.images] == ["c1s1_000151.jpg", "c2s1_000200.jpg", "c3s2_000010.jpg"]
    assert [r.camera for r in split.images] == [1, 2, 3]
    first, second, third = split.images
    # x = -4 is clipped to 0 before x2 = x + w (SeqNet order): [0, 7, 20, 47].
    np.testing.assert_array_equal(
        first.boxes, np.array([[10, 20, 40, 80], [100, 50, 140, 130], [0, 7, 20, 47]], np.float32)
    )
    np.testing.assert_array_equal(split.label_to_pid, [3, 5, 932])
    assert first.pids.tolist() == [1, -1, 0]  # 5 -> 1, -2 -> -1, 3 -> 0
    # anno_file variable; 1.5 + 10.2 = 11.7 and 2.7 + 20.9 = 23.6 truncated
    np.testing.assert_array_equal(second.boxes, np.array([[1, 2, 11, 23]], np.float32))
    assert second.pids.tolist() == [1]
    assert third.pids.tolist() == [2, -1]  # anno_previous variable
    assert first.path == prw_root.resolve() / "frames" / "c1s1_000151.jpg"
    assert split.queries == ()


def test_fractional_boxes_kept_when_asked(prw_root: Path) -> None:
    split = load_prw(prw_root, "train", integer_boxes=False)
    np.testing.assert_allclose(split.images[1].boxes, np.array([[1.5, 2.7, 11.7, 23.6]], np.float32))


def test_test_split(prw_root: Path) -> None:
    split = load_prw(prw_root, "test")
    assert [r.name for r in split.images] == [f"{name}.jpg" for name in PRW_TEST]
    assert [r.camera for r in split.images] == [1, 4, 6, 2]
    assert split.images[0].pids.tolist() == [7, -1]  # raw ids kept
    assert split.images[2].pids.tolist() == [9]
    assert split.images[3].boxes.shape == (0, 4) and split.images[3].pids.shape == (0,)
    assert split.label_to_pid.size == 0
    assert [(q.name, q.pid, q.camera) for q in split.queries] == [
        ("c1s3_000500.jpg", 7, 1),
        ("c6s2_000033.jpg", 9, 6),
    ]
    # 10.5 + 20 = 30.5, 10.25 + 40.6 = 50.85 -> truncated; -1.5 -> -1 -> clipped to 0
    np.testing.assert_array_equal(split.queries[0].box, np.array([10, 10, 30, 50], np.float32))
    np.testing.assert_array_equal(split.queries[1].box, np.array([0, 0, 8, 10], np.float32))


def test_queries_fractional_and_lf(tmp_path: Path, prw_writer) -> None:
    root = prw_writer(tmp_path / "PRW", PRW_TRAIN, PRW_TEST, PRW_QUERIES, line_end="\n")
    split = load_prw(root, "test", integer_boxes=False)
    np.testing.assert_allclose(split.queries[0].box, np.array([10.5, 10.25, 30.5, 50.85], np.float32))
    np.testing.assert_allclose(split.queries[1].box, np.array([0, 0, 8.5, 10], np.float32))


def test_camera_of() -> None:
    assert camera_of("c3s1_012345.jpg") == 3
    with pytest.raises(DatasetFormatError, match="no camera id"):
        camera_of("frame_0001.jpg")


def test_no_box_variable_is_named(prw_root: Path) -> None:
    scipy.io.savemat(prw_root / "annotations" / "c1s1_000151.jpg.mat", {"boxes": np.zeros((1, 5))})
    with pytest.raises(
        DatasetFormatError,
        match=r"PRW/annotations/c1s1_000151\.jpg\.mat: no variable box_new, anno_file or anno_previous",
    ):
        load_prw(prw_root, "train")


def test_missing_annotation_is_named(prw_root: Path) -> None:
    (prw_root / "annotations" / "c4s1_000020.jpg.mat").unlink()
    with pytest.raises(DatasetFormatError, match=r"c4s1_000020\.jpg\.mat: file not found"):
        load_prw(prw_root, "test")


def test_wrong_box_shape(prw_root: Path) -> None:
    scipy.io.savemat(prw_root / "annotations" / "c2s1_000200.jpg.mat", {"box_new": np.zeros((2, 4))})
    with pytest.raises(DatasetFormatError, match=r"c2s1_000200\.jpg\.mat: variable box_new must be an M x 5"):
        load_prw(prw_root, "train")


def test_unexpected_negative_id(prw_root: Path) -> None:
    scipy.io.savemat(
        prw_root / "annotations" / "c2s1_000200.jpg.mat", {"box_new": np.array([[-3, 1, 1, 5, 5]])}
    )
    with pytest.raises(DatasetFormatError, match=r"c2s1_000200\.jpg\.mat: unexpected negative person id -3"):
        load_prw(prw_root, "train")


def test_bad_query_line(prw_root: Path) -> None:
    (prw_root / "query_info.txt").write_bytes(b"7 10 10 20 40 c1s3_000500\r\n9 1 2 3 c6s2_000033\r\n")
    with pytest.raises(DatasetFormatError, match=r"query_info\.txt: line 2 has 5 fields"):
        load_prw(prw_root, "test")


def test_query_frame_not_in_test_list(prw_root: Path) -> None:
    (prw_root / "query_info.txt").write_bytes(b"7 10 10 20 40 c1s1_000151\r\n")
    with pytest.raises(DatasetFormatError, match=r"query_info\.txt: query 1 names frame c1s1_000151"):
        load_prw(prw_root, "test")


def test_missing_frame_list_variable(prw_root: Path) -> None:
    scipy.io.savemat(prw_root / "frame_test.mat", {"img_index_train": np.array(["x"], dtype=object)})
    with pytest.raises(DatasetFormatError, match=r"frame_test\.mat: no variable img_index_test"):
        load_prw(prw_root, "test")


def test_bad_split(prw_root: Path) -> None:
    with pytest.raises(ConfigError):
        load_prw(prw_root, "gallery")
