"""Pseudo scenes composed from Market-1501-style re-id crops."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from personsearch_train.data.pseudo_scenes import (
    MANIFEST_NAME,
    PseudoSceneSet,
    PseudoSceneSettings,
    compose_pseudo_scenes,
)
from personsearch_train.data.registry import load_split
from personsearch_train.data.reid_folders import ReidCropSet, load_market1501
from personsearch_train.errors import ConfigError, DatasetFormatError

# Dataset id -> crop count; 0 = distractors (label -1 after relabelling).
_CROPS_PER_ID = {2: 3, 7: 2, 11: 3, 15: 2, 23: 3, 0: 2}
_CORRUPT = "0009_c2s1_000200_01.jpg"
# (width, height) of the crops, cycled: Market-1501's 64x128 and two other aspect ratios.
_CROP_SIZES = ((64, 128), (48, 128), (80, 160))
# Mean absolute difference (0..255 scale) allowed between a pasted person and its
# resized crop. The scene is a quality-95 JPEG: flat colour survives almost exactly,
# but 4:2:0 chroma and 8x8 blocks smear a few pixels either side of a colour edge
# (box border, the crop's tone boundary), which on a 30-px-wide person is much of it.
_PIXEL_TOLERANCE = 3.0  # away from colour edges (>= 4 px)
_EDGE_TOLERANCE = 12.0  # over the whole visible box, edges included
_EDGE_MARGIN = 4
# Small canvases keep the compositions fast; the defaults are tested through the reader.
_SMALL = PseudoSceneSettings(canvas_size=(240, 400))


def _colours() -> list[tuple[int, int, int]]:
    # Every pair of these differs by at least 100 in some channel.
    return [c for c in itertools.product((30, 130, 230), repeat=3) if len(set(c)) > 1]


def write_market(root: Path, *, corrupt: bool = True, crops_per_id: dict[int, int] | None = None) -> Path:
    """A ``bounding_box_train`` folder of two-tone crops (a distinct colour pair each)."""
    folder = root / "bounding_box_train"
    folder.mkdir(parents=True)
    colours = _colours()
    k = 0
    for pid, count in (crops_per_id or _CROPS_PER_ID).items():
        for j in range(count):
            width, height = _CROP_SIZES[k % len(_CROP_SIZES)]
            crop = np.empty((height, width, 3), dtype=np.uint8)
            # Two tones, top and bottom, so a flipped or transposed paste would not match.
            crop[: height // 2] = colours[k % len(colours)]
            crop[height // 2 :] = colours[(k + 9) % len(colours)]
            cv2.imwrite(str(folder / f"{pid:04d}_c{j + 1}s1_{100 + k:06d}_01.jpg"), crop)
            k += 1
    if corrupt:
        (folder / _CORRUPT).write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG stream")
    return root


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _visible_masks(boxes: np.ndarray, shape: tuple[int, int]) -> list[np.ndarray]:
    """Per box, the ``[H, W]`` bool pixels of it that no later box (pasted on top) covers."""
    masks = []
    for k, box in enumerate(boxes.astype(int)):
        mask = np.zeros(shape, dtype=bool)
        mask[box[1] : box[3], box[0] : box[2]] = True
        for later in boxes[k + 1 :].astype(int):
            mask[later[1] : later[3], later[0] : later[2]] = False
        masks.append(mask)
    return masks


def _check_all_crops_once(result: PseudoSceneSet, crops: ReidCropSet) -> None:
    used = [name for scene in result.sources for name in scene]
    readable = sorted(n for n in crops.names if n != _CORRUPT)
    assert sorted(used) == readable  # every readable crop, each exactly once
    assert result.crops_used == len(readable)


@pytest.fixture
def market(tmp_path: Path) -> Path:
    return write_market(tmp_path / "Market-1501")


@pytest.fixture
def crops(market: Path) -> ReidCropSet:
    return load_market1501(market, "bounding_box_train")


def test_pasted_pixels_and_labels_are_the_crops(crops: ReidCropSet, tmp_path: Path) -> None:
    result = compose_pseudo_scenes(crops, tmp_path / "out", settings=_SMALL)
    label_of = dict(zip(crops.names, crops.pids.tolist(), strict=True))
    originals = {name: cv2.imread(str(path)) for name, path in zip(crops.names, crops.paths, strict=True)}
    assert result.num_scenes >= 3
    for record, names in zip(result.split.images, result.sources, strict=True):
        scene = cv2.imread(str(record.path))
        assert scene.shape == (240, 400, 3)
        assert record.pids.tolist() == [label_of[name] for name in names]
        for box, name, visible in zip(
            record.boxes, names, _visible_masks(record.boxes, scene.shape[:2]), strict=True
        ):
            x1, y1, x2, y2 = box.astype(int)
            assert np.array_equal(box, np.array([x1, y1, x2, y2], dtype=np.float32))  # whole pixels
            crop = originals[name]
            shrink = (y2 - y1) < crop.shape[0]
            expected = np.zeros_like(scene)
            expected[y1:y2, x1:x2] = cv2.resize(
                crop, (x2 - x1, y2 - y1), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            )
            m = _EDGE_MARGIN
            interior = np.zeros_like(visible)
            interior[y1 + m : y2 - m, x1 + m : x2 - m] = True
            middle = y1 + (y2 - y1) // 2
            interior[middle - m : middle + m] = False  # the crop's tone boundary
            interior &= visible
            assert interior.sum() > 0.2 * (y2 - y1) * (x2 - x1)
            diff = np.abs(scene.astype(np.float64) - expected)
            assert diff[interior].mean() < _PIXEL_TOLERANCE, (record.name, name, diff[interior].mean())
            assert diff[visible].mean() < _EDGE_TOLERANCE, (record.name, name, diff[visible].mean())
            # A wrong crop in this box would be far off: the colour pairs differ by >= 100.
            for other in [n for n in names if n != name]:
                wrong = np.zeros_like(scene)
                wrong[y1:y2, x1:x2] = cv2.resize(originals[other], (x2 - x1, y2 - y1))
                assert np.abs(scene[interior].astype(np.float64) - wrong[interior]).mean() > 20


def test_identities_usage_and_unreadable(crops: ReidCropSet, tmp_path: Path) -> None:
    settings = PseudoSceneSettings(canvas_size=(240, 400), people_per_scene=(5, 5), max_iou=0.3)
    result = compose_pseudo_scenes(crops, tmp_path / "out", settings=settings)
    _check_all_crops_once(result, crops)
    assert result.unreadable == (_CORRUPT,)
    manifest = json.loads(result.manifest.read_text())
    assert manifest["summary"]["unreadable"] == [_CORRUPT]
    labels_seen = []
    for record in result.split.images:
        labelled = record.pids[record.pids >= 0].tolist()
        assert len(labelled) == len(set(labelled)), record.name  # no identity twice in a scene
        labels_seen += record.pids.tolist()
    assert labels_seen.count(-1) == 2  # the two distractors, unlabelled
    # Training labels as the other train splits give them: 0..K-1 with label_to_pid.
    assert result.split.label_to_pid.tolist() == [2, 7, 9, 11, 15, 23]
    assert set(labels_seen) - {-1} == {0, 1, 3, 4, 5}  # identity 9 (label 2) had only the corrupt crop


def test_boxes_inside_with_limited_overlap_and_many_scales(crops: ReidCropSet, tmp_path: Path) -> None:
    result = compose_pseudo_scenes(crops, tmp_path / "out", settings=_SMALL)
    heights = set()
    for record in result.split.images:
        boxes = record.boxes
        assert boxes.dtype == np.float32 and boxes.shape[1] == 4
        assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2] <= 400) and np.all(boxes[:, 3] <= 240)
        assert np.all(boxes[:, 2:] > boxes[:, :2])
        for a, b in itertools.combinations(boxes, 2):
            assert _iou(a, b) <= _SMALL.max_iou + 1e-9
        for box, visible in zip(boxes, _visible_masks(boxes, (240, 400)), strict=True):
            area = (box[2] - box[0]) * (box[3] - box[1])
            assert visible.sum() >= _SMALL.min_visible * area
        heights.update((boxes[:, 3] - boxes[:, 1]).tolist())
    assert len(heights) >= 5
    assert min(heights) >= 0.3 * 240 - 1 and max(heights) <= 0.85 * 240 + 1
    assert max(heights) - min(heights) > 0.25 * 240  # small and tall people both occur


def test_later_people_leave_earlier_ones_visible(tmp_path: Path) -> None:
    # Crowded scenes with very different heights: IoU <= 0.2 alone would let a short
    # person sit wholly inside a tall one's box and be pasted over.
    market = write_market(tmp_path / "m", corrupt=False, crops_per_id={pid: 2 for pid in range(1, 41)})
    settings = PseudoSceneSettings(
        canvas_size=(120, 200), people_per_scene=(6, 6), person_height=(0.2, 1.0), placement_tries=200
    )
    result = compose_pseudo_scenes(load_market1501(market), tmp_path / "out", settings=settings)
    overlapping = 0
    for record in result.split.images:
        boxes = record.boxes
        for box, visible in zip(boxes, _visible_masks(boxes, (120, 200)), strict=True):
            area = (box[2] - box[0]) * (box[3] - box[1])
            assert visible.sum() >= settings.min_visible * area, record.name
            overlapping += visible.sum() < area
    assert overlapping >= 5  # the limit was tested on people that are partly covered


def test_a_person_without_room_moves_to_the_next_scene(crops: ReidCropSet, tmp_path: Path) -> None:
    # Tall people, no overlap allowed: at most three fit side by side, so the scenes
    # cannot take the five drawn; the ones left over must still each appear once.
    settings = PseudoSceneSettings(
        canvas_size=(240, 400), people_per_scene=(5, 5), person_height=(0.9, 1.0), max_iou=0.0
    )
    result = compose_pseudo_scenes(crops, tmp_path / "out", settings=settings)
    _check_all_crops_once(result, crops)
    assert max(len(r.boxes) for r in result.split.images) <= 3
    for record in result.split.images:
        for a, b in itertools.combinations(record.boxes, 2):
            assert _iou(a, b) == 0.0


def test_deterministic_read_back_and_recompose(crops: ReidCropSet, tmp_path: Path) -> None:
    first = compose_pseudo_scenes(crops, tmp_path / "a", settings=_SMALL)
    second = compose_pseudo_scenes(crops, tmp_path / "b", settings=_SMALL)
    assert not first.read_back and first.scenes_written == first.num_scenes
    assert first.manifest.read_bytes() == second.manifest.read_bytes()
    for a, b in zip(first.split.images, second.split.images, strict=True):
        assert a.path.read_bytes() == b.path.read_bytes()

    out = tmp_path / "a"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    again = compose_pseudo_scenes(crops, out, settings=_SMALL)
    assert again.read_back and again.scenes_written == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before  # nothing rewritten, nothing new
    assert again.sources == first.sources and again.unreadable == first.unreadable
    for a, b in zip(first.split.images, again.split.images, strict=True):
        assert a.name == b.name and a.path == b.path
        assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.pids, b.pids)

    one_each = PseudoSceneSettings(canvas_size=(240, 400), people_per_scene=(1, 1))
    single = compose_pseudo_scenes(crops, out, settings=one_each)
    assert not single.read_back and single.num_scenes == single.crops_used == 15
    fewer = compose_pseudo_scenes(crops, out, settings=_SMALL)  # back to the first settings
    assert not fewer.read_back and fewer.num_scenes < 15
    assert json.loads(fewer.manifest.read_text())["settings"] == _SMALL.to_json()
    # The scenes of the 1-per-scene composition that the new one does not have are gone.
    assert sorted(p.name for p in (out / "scenes").iterdir()) == [r.name for r in fewer.split.images]
    assert fewer.manifest.read_bytes() == second.manifest.read_bytes()


def test_a_changed_crop_list_recomposes(tmp_path: Path) -> None:
    market = write_market(tmp_path / "m")
    out = tmp_path / "out"
    compose_pseudo_scenes(load_market1501(market, "bounding_box_train"), out, settings=_SMALL)
    (market / "bounding_box_train" / "0007_c1s1_000103_01.jpg").unlink()
    result = compose_pseudo_scenes(load_market1501(market, "bounding_box_train"), out, settings=_SMALL)
    assert not result.read_back and result.crops_used == 14


def test_background_folder(crops: ReidCropSet, tmp_path: Path) -> None:
    folder = tmp_path / "backgrounds"
    folder.mkdir()
    colour = (200, 40, 90)
    cv2.imwrite(str(folder / "street.png"), np.full((300, 600, 3), colour, dtype=np.uint8))
    result = compose_pseudo_scenes(crops, tmp_path / "out", settings=_SMALL, backgrounds=folder)
    record = result.split.images[0]
    scene = cv2.imread(str(record.path)).astype(np.float64)
    outside = np.ones(scene.shape[:2], dtype=bool)
    for x1, y1, x2, y2 in record.boxes.astype(int):
        outside[y1:y2, x1:x2] = False
    outside = cv2.erode(outside.astype(np.uint8), np.ones((2 * _EDGE_MARGIN + 1,) * 2, np.uint8)) > 0
    assert np.abs(scene[outside] - colour).mean() < _PIXEL_TOLERANCE
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetFormatError, match="no background images"):
        compose_pseudo_scenes(crops, tmp_path / "out2", backgrounds=tmp_path / "empty")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"people_per_scene": (0, 3)}, r"people_per_scene must be \(min, max\) with 1 <= min <= max"),
        ({"people_per_scene": (4, 2)}, r"people_per_scene must be \(min, max\)"),
        ({"people_per_scene": (2,)}, r"people_per_scene must be a pair \(low, high\)"),
        ({"people_per_scene": (2.5, 3)}, "people_per_scene must hold two ints"),
        ({"canvas_size": (16, 800)}, r"canvas_size \(height, width\) must be at least 32"),
        ({"person_height": (0.0, 0.5)}, "person_height must be fractions"),
        ({"person_height": (0.6, 0.4)}, "person_height must be fractions"),
        ({"person_height": (0.5, 1.2)}, "person_height must be fractions"),
        ({"max_iou": 1.0}, r"max_iou must be in \[0, 1\)"),
        ({"max_iou": -0.1}, r"max_iou must be in \[0, 1\)"),
        ({"max_iou": "0.2"}, "max_iou must be a number"),
        ({"min_visible": 0.0}, r"min_visible must be in \(0, 1\]"),
        ({"placement_tries": 0}, "placement_tries must be at least 1"),
        ({"jpeg_quality": 101}, r"jpeg_quality must be in 1\.\.100"),
        ({"seed": -1}, "seed must not be negative"),
        ({"seed": True}, "seed must be an integer"),
    ],
)
def test_settings_validation(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PseudoSceneSettings(**options)


def test_settings_accept_lists() -> None:
    settings = PseudoSceneSettings(people_per_scene=[2, 3], canvas_size=[240, 320], person_height=[0.4, 1])
    assert settings.people_per_scene == (2, 3) and settings.person_height == (0.4, 1.0)
    assert settings == PseudoSceneSettings(
        people_per_scene=(2, 3), canvas_size=(240, 320), person_height=(0.4, 1.0)
    )


def test_no_usable_crop(tmp_path: Path) -> None:
    folder = tmp_path / "m" / "bounding_box_train"
    folder.mkdir(parents=True)
    for name in ("0002_c1s1_000001_01.jpg", "0003_c1s1_000002_01.jpg"):
        (folder / name).write_bytes(b"not an image")
    crops = load_market1501(tmp_path / "m", "bounding_box_train")
    with pytest.raises(DatasetFormatError, match=re.escape(f"{crops.root}: none of the 2 crops")):
        compose_pseudo_scenes(crops, tmp_path / "out", settings=_SMALL)
    assert not (tmp_path / "out" / MANIFEST_NAME).exists()


def test_dataset_ids_are_refused(market: Path, tmp_path: Path) -> None:
    crops = load_market1501(market, "bounding_box_train", relabel=False)
    with pytest.raises(ConfigError, match="relabel=True"):
        compose_pseudo_scenes(crops, tmp_path / "out", settings=_SMALL)


def test_registered_reader_feeds_the_training_dataset(market: Path) -> None:
    from personsearch_train.data.torch_dataset import PersonSearchTrainDataset

    with pytest.warns(
        UserWarning,
        match=re.escape(f"1 crops could not be decoded and are left out of the pseudo scenes ({_CORRUPT})"),
    ):
        split = load_split("market1501_scenes", market, "train")
    assert split.dataset == "market1501_scenes" and split.split == "train"
    assert split.root == market.resolve() and split.num_identities == 6
    assert (market / "pseudo_scenes" / MANIFEST_NAME).is_file()
    dataset = PersonSearchTrainDataset(split, flip_prob=0.0)
    image, target = dataset[0]
    record = split.images[0]
    assert tuple(image.shape) == (3, 480, 800) and str(image.dtype) == "torch.float32"
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert np.array_equal(target["boxes"].numpy(), record.boxes)
    assert np.array_equal(target["pids"].numpy(), record.pids)
    assert len(record.boxes) >= 1 and set(record.pids.tolist()) <= {-1, 0, 1, 3, 4, 5}
    with pytest.raises(ConfigError, match="pre-training source with a train split only"):
        load_split("market1501_scenes", market, "test")


def test_a_training_only_source_cannot_be_the_evaluated_dataset(market: Path) -> None:
    from personsearch_train.engine.config import config_from_dict

    def config(every: int = 1, **data: object) -> object:
        return config_from_dict({"method": "seqnet_oim", "data": data, "eval": {"every": every}})

    with pytest.raises(ConfigError, match=r"without a test split; list it under data\.mix"):
        config(dataset="market1501_scenes", root=str(market))
    # Pre-training on it without evaluation is allowed...
    quiet = config_from_dict(
        {
            "method": "seqnet_oim",
            "data": {"dataset": "market1501_scenes", "root": str(market)},
            "eval": {"every": 0},
        }
    )
    assert quiet.data.dataset == "market1501_scenes"
    # ...and so is mixing it into an evaluated person-search set.
    mixed = config(
        dataset="prw", root=str(market), mix=[{"dataset": "market1501_scenes", "root": str(market)}]
    )
    assert mixed.data.mix[0].dataset == "market1501_scenes"
