"""CUHK-SYSU reader on small files in the real MATLAB layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from personsearch_train.data import load_cuhk_sysu
from personsearch_train.errors import ConfigError, DatasetFormatError
from reader_layouts import CUHK_IMAGES, CUHK_POOL, CUHK_PROTOCOLS, CUHK_TRAIN


def test_fixture_has_the_nesting_the_reference_readers_index(cuhk_root: Path) -> None:
    # The reference readers index the loaded arrays positionally; this pins the fixture
    # layout to those access paths, so the reader tests below run on the real nesting.
    annotation = cuhk_root / "annotation"
    img = scipy.io.loadmat(annotation / "Images.mat")["Img"].squeeze()
    name, _, boxes = img[0]
    assert str(name[0]) == "s1.jpg"
    assert np.asarray([b[0] for b in boxes[0]]).reshape(-1, 4)[1].tolist() == [100, 50, 40, 80]
    pool = scipy.io.loadmat(annotation / "pool.mat")["pool"].squeeze()
    assert [str(a[0]) for a in pool] == CUHK_POOL
    train = scipy.io.loadmat(annotation / "test" / "train_test" / "Train.mat")["Train"].squeeze()
    scenes = train[0][0, 0][2].squeeze()
    (im_name, box, _), _ = scenes
    assert str(im_name[0]) == "s1.jpg" and box.squeeze().tolist() == [100, 50, 40, 80]
    protocol = scipy.io.loadmat(annotation / "test" / "train_test" / "TestG50.mat")["TestG50"].squeeze()
    assert str(protocol["Query"][1]["imname"][0, 0][0]) == "s2.jpg"
    assert protocol[0]["Query"][0, 0][1].squeeze().tolist() == [12, 14, 22, 44]
    (g_name, g_box, _), (_, empty_box, _) = protocol[0]["Gallery"].squeeze()
    assert str(g_name[0]) == "s2.jpg" and g_box.size == 4 and empty_box.size == 0


def test_train_split(cuhk_root: Path) -> None:
    with pytest.warns(UserWarning, match="1 identity boxes"):
        split = load_cuhk_sysu(cuhk_root, "train")
    assert split.dataset == "cuhk_sysu" and split.split == "train"
    assert [r.name for r in split.images] == ["s1.jpg", "s3.jpg", "s6.jpg"]
    s1, s3, s6 = split.images
    # the w = 0 box is dropped
    np.testing.assert_array_equal(s1.boxes, np.array([[10, 20, 40, 80], [100, 50, 140, 130]], np.float32))
    assert s1.boxes.dtype == np.float32 and s1.pids.dtype == np.int64
    # Train entry 1 labels nothing, so entries 0 and 2 become labels 0 and 1.
    np.testing.assert_array_equal(split.label_to_pid, [0, 2])
    assert split.num_identities == 2
    assert s1.pids.tolist() == [1, 0]
    np.testing.assert_array_equal(s3.boxes, np.array([[50.5, 60, 75.5, 110]], np.float32))
    assert s3.pids.tolist() == [1]
    assert s6.pids.tolist() == [0]
    assert s1.path == cuhk_root.resolve() / "Image" / "SSM" / "s1.jpg"
    assert split.queries == () and dict(split.galleries) == {}


def test_test_split(cuhk_root: Path) -> None:
    split = load_cuhk_sysu(cuhk_root, "test")
    assert [r.name for r in split.images] == CUHK_POOL
    s4, s2, s5 = split.images
    np.testing.assert_array_equal(s4.boxes, np.array([[12, 14, 34, 58], [300, 30, 320, 70]], np.float32))
    assert s4.pids.tolist() == [0, -1]  # query 0's box
    assert s2.pids.tolist() == [1, 0]  # query 1's box, query 0's gallery box
    np.testing.assert_array_equal(s5.boxes, np.array([[7, 8, 16, 18]], np.float32))  # w < 0 dropped
    assert s5.pids.tolist() == [1]
    assert [(q.name, q.pid) for q in split.queries] == [("s4.jpg", 0), ("s2.jpg", 1)]
    np.testing.assert_array_equal(split.queries[1].box, np.array([0, 0, 20, 40], np.float32))
    assert split.label_to_pid.size == 0
    assert sorted(split.galleries) == [50, 100]
    g50 = split.galleries[50]
    assert [e.name for e in g50[0]] == ["s2.jpg", "s5.jpg"]
    np.testing.assert_array_equal(g50[0][0].box, np.array([200, 100, 230, 170], np.float32))
    assert g50[0][1].box is None
    g100 = split.galleries[100]
    assert [e.name for e in g100[1]] == ["s4.jpg", "s5.jpg"]
    assert g100[1][0].box is None
    np.testing.assert_array_equal(g100[1][1].box, np.array([7, 8, 16, 18], np.float32))


def test_requested_gallery_sizes(cuhk_root: Path) -> None:
    split = load_cuhk_sysu(cuhk_root, "test", gallery_sizes=[100])
    assert list(split.galleries) == [100]
    with pytest.raises(DatasetFormatError, match=r"TestG500\.mat: file not found"):
        load_cuhk_sysu(cuhk_root, "test", gallery_sizes=[50, 500])


def test_bad_split(cuhk_root: Path) -> None:
    with pytest.raises(ConfigError, match="'val'"):
        load_cuhk_sysu(cuhk_root, "val")


def test_missing_file_is_named(cuhk_root: Path) -> None:
    (cuhk_root / "annotation" / "pool.mat").unlink()
    with pytest.raises(DatasetFormatError, match=r"annotation/pool\.mat: file not found"):
        load_cuhk_sysu(cuhk_root, "test")


def test_wrong_variable_is_named(cuhk_root: Path) -> None:
    scipy.io.savemat(cuhk_root / "annotation" / "pool.mat", {"Pool": np.array(["s1.jpg"], dtype=object)})
    with pytest.raises(DatasetFormatError, match=r"pool\.mat: no variable pool"):
        load_cuhk_sysu(cuhk_root, "test")


def test_corrupt_file_is_named(cuhk_root: Path) -> None:
    (cuhk_root / "annotation" / "Images.mat").write_bytes(b"this is not a MATLAB file at all" * 10)
    with pytest.raises(DatasetFormatError, match=r"Images\.mat: not a readable MATLAB file"):
        load_cuhk_sysu(cuhk_root, "train")


def test_malformed_box_is_located(tmp_path: Path, cuhk_writer) -> None:
    images = [("s1.jpg", [(1, 2, 3)]), *CUHK_IMAGES[1:]]
    root = cuhk_writer(tmp_path / "CUHK-SYSU", images, CUHK_POOL, CUHK_TRAIN, CUHK_PROTOCOLS)
    with pytest.raises(DatasetFormatError, match=r"Images\.mat: Img\(1\)\.box\(1\): expected a box"):
        load_cuhk_sysu(root, "train")


def test_struct_with_missing_fields(tmp_path: Path, cuhk_writer) -> None:
    root = cuhk_writer(tmp_path / "CUHK-SYSU", CUHK_IMAGES, CUHK_POOL, CUHK_TRAIN, CUHK_PROTOCOLS)
    two_fields = np.empty((1, 1), dtype=[("imname", object), ("nAppear", object)])
    two_fields["imname"][0, 0] = "s1.jpg"
    two_fields["nAppear"][0, 0] = np.array([[1.0]])
    scipy.io.savemat(root / "annotation" / "Images.mat", {"Img": two_fields})
    with pytest.raises(
        DatasetFormatError, match=r"Img\(1\): expected a struct with fields \(imname, nAppear, box\)"
    ):
        load_cuhk_sysu(root, "train")


def test_protocols_with_different_queries(tmp_path: Path, cuhk_writer) -> None:
    protocols = {50: CUHK_PROTOCOLS[50], 100: list(reversed(CUHK_PROTOCOLS[100]))}
    root = cuhk_writer(tmp_path / "CUHK-SYSU", CUHK_IMAGES, CUHK_POOL, CUHK_TRAIN, protocols)
    with pytest.raises(DatasetFormatError, match=r"TestG100\.mat: its queries differ"):
        load_cuhk_sysu(root, "test")


def test_pool_image_missing_from_images(tmp_path: Path, cuhk_writer) -> None:
    root = cuhk_writer(
        tmp_path / "CUHK-SYSU", CUHK_IMAGES, [*CUHK_POOL, "s9.jpg"], CUHK_TRAIN, CUHK_PROTOCOLS
    )
    with pytest.raises(DatasetFormatError, match=r"pool\.mat: pool image s9\.jpg is not in .*Images\.mat"):
        load_cuhk_sysu(root, "test")


def test_gallery_image_outside_pool(tmp_path: Path, cuhk_writer) -> None:
    protocols = {50: [CUHK_PROTOCOLS[50][0], ("s2.jpg", (0, 0, 20, 40), [("s1.jpg", None)])]}
    root = cuhk_writer(tmp_path / "CUHK-SYSU", CUHK_IMAGES, CUHK_POOL, CUHK_TRAIN, protocols)
    with pytest.raises(DatasetFormatError, match=r"TestG50\.mat: TestG50\(2\)\.Gallery names image s1\.jpg"):
        load_cuhk_sysu(root, "test")


def test_train_identity_in_unknown_image(tmp_path: Path, cuhk_writer) -> None:
    train = [*CUHK_TRAIN, [("s9.jpg", (1, 2, 3, 4))]]
    root = cuhk_writer(tmp_path / "CUHK-SYSU", CUHK_IMAGES, CUHK_POOL, train, CUHK_PROTOCOLS)
    with pytest.raises(DatasetFormatError, match=r"Train\.mat: Train\{4\} names image s9\.jpg"):
        load_cuhk_sysu(root, "train")
