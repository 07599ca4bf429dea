"""Per-person masks: written by the synthetic generator for every scene image, in the
readers' box order, and served by the training dataset flipped with the image."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from personsearch_train.data.cuhk_sysu import load_cuhk_sysu
from personsearch_train.data.person_masks import (
    MASK_ANY_PERSON,
    default_person_mask_dir,
    person_mask_path,
    read_person_mask,
)
from personsearch_train.data.prw import load_prw
from personsearch_train.data.structures import PersonSearchSplit
from personsearch_train.data.synthetic.generator import SyntheticManifest, generate_dataset
from personsearch_train.data.torch_dataset import PersonSearchTrainDataset, collate_batch
from personsearch_train.errors import DatasetFormatError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> SyntheticManifest:
    return generate_dataset(tmp_path_factory.mktemp("synth_masks") / "out", "tiny", seed=0, workers=1)


def _splits(manifest: SyntheticManifest, split: str) -> list[PersonSearchSplit]:
    return [load_cuhk_sysu(manifest.cuhk_sysu.root, split), load_prw(manifest.prw.root, split)]


@pytest.mark.parametrize("split", ["train", "test"])
def test_every_scene_image_has_a_mask_of_its_size(tiny: SyntheticManifest, split: str) -> None:
    for data in _splits(tiny, split):
        folder = default_person_mask_dir(data)
        assert folder == data.root / "person_masks"
        assert len(data.images) > 0
        for record in data.images:
            image = cv2.imread(str(record.path))
            mask = read_person_mask(person_mask_path(folder, record.path), image.shape[:2])
            assert mask.dtype == np.uint8 and mask.ndim == 2


def test_only_scene_formats_get_masks(tiny: SyntheticManifest) -> None:
    masks = sorted(p.relative_to(tiny.root).parts[:2] for p in tiny.root.rglob("*.png"))
    assert set(masks) == {("CUHK-SYSU", "person_masks"), ("PRW", "person_masks")}
    expected = sum(len(t.train) + len(t.test) for t in (tiny.cuhk_sysu, tiny.prw))
    assert len(masks) == expected


@pytest.mark.parametrize("dataset", ["cuhk_sysu", "prw"])
def test_mask_labels_follow_the_readers_box_order(tiny: SyntheticManifest, dataset: str) -> None:
    truth = tiny.cuhk_sysu if dataset == "cuhk_sysu" else tiny.prw
    data = _splits(tiny, "train")[0 if dataset == "cuhk_sysu" else 1]
    visibility = {s.name: s.visibility for s in truth.train}
    folder = default_person_mask_dir(data)
    assert folder is not None
    boxes_seen = boxes_total = 0
    for record in data.images:
        image = cv2.imread(str(record.path))
        mask = read_person_mask(person_mask_path(folder, record.path), image.shape[:2])
        assert int(mask.max()) <= len(record.boxes) and not (mask == MASK_ANY_PERSON).any()
        for k, box in enumerate(record.boxes):
            ys, xs = np.nonzero(mask == k + 1)
            boxes_total += 1
            if len(ys) == 0:
                # Only a person hidden entirely by occluders has no pixel.
                assert visibility[record.name][k] == 0.0, (record.name, k)
                continue
            boxes_seen += 1
            x1, y1, x2, y2 = box
            # Box k is tight around person k's drawn pixels (x2, y2 exclusive); 1 px slack.
            assert x1 - 1 <= xs.min() and xs.max() < x2 + 1, (record.name, k)
            assert y1 - 1 <= ys.min() and ys.max() < y2 + 1, (record.name, k)
    assert boxes_seen >= 0.9 * boxes_total > 0


def test_dataset_flips_the_mask_with_the_image(tiny: SyntheticManifest) -> None:
    data = load_prw(tiny.prw.root, "train")
    folder = default_person_mask_dir(data)
    assert folder is not None
    dataset = PersonSearchTrainDataset(data, flip_prob=0.5, seed=1, person_masks=folder)
    flips = set()
    items = [dataset[i] for i in range(12)]
    for index, (image, target) in enumerate(items):
        record = dataset.records[index]
        on_disk = cv2.imread(str(person_mask_path(folder, record.path)), cv2.IMREAD_UNCHANGED)
        mask = target["person_masks"]
        assert mask.dtype == torch.uint8 and tuple(mask.shape) == tuple(image.shape[1:])
        expected = np.fliplr(on_disk) if target["flipped"] else on_disk
        np.testing.assert_array_equal(mask.numpy(), expected)
        flips.add(target["flipped"])
        # The flipped boxes still enclose their flipped labels.
        for k, box in enumerate(target["boxes"].numpy()):
            ys, xs = np.nonzero(mask.numpy() == k + 1)
            if len(xs):
                assert box[0] - 1 <= xs.min() and xs.max() < box[2] + 1
    assert flips == {True, False}
    images, targets = collate_batch(items[:2])
    assert len(images) == 2 and all("person_masks" in t for t in targets)


def test_dataset_without_masks_has_no_mask_key(tiny: SyntheticManifest) -> None:
    dataset = PersonSearchTrainDataset(load_cuhk_sysu(tiny.cuhk_sysu.root, "train"))
    assert "person_masks" not in dataset[0][1]


def _copied_masks(tiny: SyntheticManifest, tmp_path: Path) -> tuple[PersonSearchSplit, Path]:
    data = load_cuhk_sysu(tiny.cuhk_sysu.root, "train")
    folder = tmp_path / "masks"
    shutil.copytree(data.root / "person_masks", folder)
    return data, folder


def test_missing_mask_is_a_clear_error(tiny: SyntheticManifest, tmp_path: Path) -> None:
    data, folder = _copied_masks(tiny, tmp_path)
    name = f"{data.images[3].path.stem}.png"
    (folder / name).unlink()
    with pytest.raises(DatasetFormatError, match=rf"{name}.*ellipse fallback"):
        PersonSearchTrainDataset(data, person_masks=folder)
    with pytest.raises(DatasetFormatError, match="not found"):
        PersonSearchTrainDataset(data, person_masks=tmp_path / "nowhere")
    # A file that goes away after construction is reported when its item is loaded.
    (folder / name).write_bytes(b"")
    dataset = PersonSearchTrainDataset(data, person_masks=folder)
    (folder / name).unlink()
    index = next(i for i, r in enumerate(dataset.records) if r.path.stem == data.images[3].path.stem)
    with pytest.raises(DatasetFormatError, match=name):
        dataset[index]


def test_wrong_mask_size_type_or_labels_are_clear_errors(tiny: SyntheticManifest, tmp_path: Path) -> None:
    data, folder = _copied_masks(tiny, tmp_path)
    dataset = PersonSearchTrainDataset(data, flip_prob=0.0, person_masks=folder)
    record = dataset.records[0]
    path = person_mask_path(folder, record.path)
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    h, w = mask.shape
    cv2.imwrite(str(path), mask[: h - 2])
    with pytest.raises(DatasetFormatError, match=rf"{path.name}.*image is {w}x{h}.*named after the image"):
        dataset[0]
    cv2.imwrite(str(path), np.dstack([mask] * 3))
    with pytest.raises(DatasetFormatError, match="single-channel uint8"):
        dataset[0]
    cv2.imwrite(str(path), mask.astype(np.uint16))
    with pytest.raises(DatasetFormatError, match="single-channel uint8"):
        dataset[0]
    bad = mask.copy()
    bad[0, 0] = len(record.boxes) + 1
    cv2.imwrite(str(path), bad)
    with pytest.raises(DatasetFormatError, match="annotation order"):
        dataset[0]
    # 255 (some person, not told which) is always allowed.
    any_person = np.where(mask > 0, MASK_ANY_PERSON, 0).astype(np.uint8)
    cv2.imwrite(str(path), any_person)
    np.testing.assert_array_equal(dataset[0][1]["person_masks"].numpy(), any_person)
