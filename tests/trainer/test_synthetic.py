"""Synthetic person-search data: read back through the real-format readers, determinism,
layout details and non-triviality."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from personsearch_train.commands import synth as synth_command
from personsearch_train.data.cuhk_sysu import load_cuhk_sysu
from personsearch_train.data.detection_sets import load_coco_persons
from personsearch_train.data.prw import load_prw
from personsearch_train.data.reid_folders import load_market1501
from personsearch_train.data.synthetic.generator import GALLERY_SIZES, SyntheticManifest, generate_dataset
from personsearch_train.data.synthetic.identities import describe_identity, sample_identities
from personsearch_train.data.synthetic.scenes import ScenePlan, render_scene
from personsearch_train.data.synthetic.truth import SceneTruth
from personsearch_train.data.text_person import load_text_person
from personsearch_train.errors import ConfigError, TrainerError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> SyntheticManifest:
    return generate_dataset(tmp_path_factory.mktemp("synth") / "out", "tiny", seed=3, workers=1)


def _file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _check_images(truth: tuple[SceneTruth, ...], records: tuple, label_of) -> None:
    """Per image: same name, same boxes, and each box's identity as the generator drew it."""
    assert [r.name for r in records] == [s.name for s in truth]
    for scene, record in zip(truth, records, strict=True):
        # Readers keep file order; compare as sorted rows so the check does not depend on it.
        expected = sorted(
            zip(map(tuple, scene.boxes.astype(np.float32).tolist()), scene.pids.tolist(), strict=True)
        )
        got = sorted(
            zip(map(tuple, record.boxes.tolist()), [label_of(int(p)) for p in record.pids], strict=True)
        )
        assert got == expected, scene.name


def test_cuhk_sysu_train_round_trip(tiny: SyntheticManifest) -> None:
    truth = tiny.cuhk_sysu
    split = load_cuhk_sysu(truth.root, "train")
    # Train.mat lists the identities in increasing key order; the reader's label -> entry index.
    keys = sorted({int(p) for s in truth.train for p in s.pids if p >= 0})
    assert split.num_identities == len(keys)
    _check_images(truth.train, split.images, lambda p: -1 if p < 0 else keys[int(split.label_to_pid[p])])


def test_cuhk_sysu_test_round_trip(tiny: SyntheticManifest) -> None:
    truth = tiny.cuhk_sysu
    split = load_cuhk_sysu(truth.root, "test")
    # Test pid = query index in TestG50.
    _check_images(truth.test, split.images, lambda p: -1 if p < 0 else truth.queries[p].pid)
    assert len(split.queries) == len(truth.queries) > 0
    for q, (query, record) in enumerate(zip(truth.queries, split.queries, strict=True)):
        assert record.name == query.name and record.pid == q
        np.testing.assert_array_equal(record.box, query.box.astype(np.float32))
    assert sorted(split.galleries) == list(GALLERY_SIZES)
    for size in GALLERY_SIZES:
        assert len(split.galleries[size]) == len(truth.queries)
        for written, read in zip(truth.galleries[size], split.galleries[size], strict=True):
            assert len(read) == tiny.gallery_lengths[size] == min(size, len(truth.test) - 1)
            assert [e.name for e in read] == [name for name, _ in written]
            for (_, box), entry in zip(written, read, strict=True):
                if box is None:
                    assert entry.box is None
                else:
                    np.testing.assert_array_equal(entry.box, box.astype(np.float32))


def test_prw_round_trip(tiny: SyntheticManifest) -> None:
    truth = tiny.prw
    train = load_prw(truth.root, "train")
    _check_images(truth.train, train.images, lambda p: -1 if p < 0 else int(train.label_to_pid[p]))
    test = load_prw(truth.root, "test")
    _check_images(truth.test, test.images, lambda p: p)
    assert [r.camera for r in test.images] == [s.camera for s in truth.test]
    assert len(test.queries) == len(truth.queries) > 0
    for query, record in zip(truth.queries, test.queries, strict=True):
        assert (record.name, record.pid, record.camera) == (query.name, query.pid, query.camera)
        np.testing.assert_array_equal(record.box, query.box.astype(np.float32))


def test_same_seed_same_files_any_worker_count(tiny: SyntheticManifest, tmp_path: Path) -> None:
    # Second run through the command, with a process pool: every file must be identical.
    parser = argparse.ArgumentParser()
    synth_command.add_arguments(parser)
    args = parser.parse_args(
        ["--out", str(tmp_path / "again"), "--preset", "tiny", "--seed", "3", "--workers", "2"]
    )
    assert synth_command.run(args) == 0
    first, second = _file_hashes(tiny.root), _file_hashes(tmp_path / "again")
    assert first.keys() == second.keys()
    assert first == second


def test_cuhk_sysu_protocol_properties(tiny: SyntheticManifest) -> None:
    truth = tiny.cuhk_sysu
    boxes = sum(len(s.boxes) for s in (*truth.train, *truth.test))
    labelled = sum(int((s.pids >= 0).sum()) for s in (*truth.train, *truth.test))
    assert 0.55 < 1 - labelled / boxes < 0.85  # about 70 % unlabelled
    train_ids = {int(p) for s in truth.train for p in s.pids if p >= 0}
    test_ids = {int(p) for s in truth.test for p in s.pids if p >= 0}
    assert train_ids and test_ids and not train_ids & test_ids
    pool = {s.name for s in truth.test}
    for q, query in enumerate(truth.queries):
        holding = {s.name for s in truth.test if query.pid in s.pids} - {query.name}
        assert holding
        for size in GALLERY_SIZES:
            gallery = truth.galleries[size][q]
            positives = [name for name, box in gallery if box is not None]
            assert set(positives) == holding
            # Ground-truth images first (SeqNet stops at the first empty box), no duplicates.
            assert all(box is not None for _, box in gallery[: len(positives)])
            names = [name for name, _ in gallery]
            assert len(set(names)) == len(names) and query.name not in names and set(names) <= pool
    # Positional layout as reference code reads it: Train{k}{1,1}.scene, Img(i).box(j).idlocate.
    mat = scipy.io.loadmat(truth.root / "annotation/test/train_test/Train.mat")["Train"].squeeze()
    scenes = mat[0][0, 0][2].squeeze()
    assert scenes.dtype.names == ("imname", "idlocate", "ishard")
    img = scipy.io.loadmat(truth.root / "annotation/Images.mat")["Img"]
    assert img.dtype.names == ("imname", "nAppear", "box")
    g = scipy.io.loadmat(truth.root / "annotation/test/train_test/TestG100.mat")["TestG100"]
    assert g.dtype.names == ("Query", "Gallery")
    assert g[0, 0]["Query"].dtype.names == ("imname", "idlocate", "ishard", "idname")


def test_prw_layout_properties(tiny: SyntheticManifest) -> None:
    truth = tiny.prw
    variables = set()
    for scene in (*truth.train, *truth.test):
        content = scipy.io.loadmat(truth.root / "annotations" / f"{scene.name}.mat")
        names = [k for k in content if not k.startswith("__")]
        assert len(names) == 1 and content[names[0]].shape == (len(scene.boxes), 5)
        variables.add(names[0])
        rows = content[names[0]]
        assert set(rows[:, 0][scene.pids < 0].tolist()) <= {-2.0}
    assert variables == {"box_new", "anno_file", "anno_previous"}
    raw = (truth.root / "query_info.txt").read_bytes()
    assert raw.count(b"\r\n") == len(truth.queries) == raw.count(b"\n")
    train_ids = {int(p) for s in truth.train for p in s.pids if p >= 0}
    test_ids = {int(p) for s in truth.test for p in s.pids if p >= 0}
    assert not train_ids & test_ids
    assert {s.camera for s in (*truth.train, *truth.test)} == set(range(1, 7))
    for query in truth.queries:
        others = [s for s in truth.test if query.pid in s.pids and s.name != query.name]
        assert any(s.camera != query.camera for s in others)


def test_boxes_are_integer_clipped_and_spread_in_scale(tiny: SyntheticManifest) -> None:
    heights, rel = [], []
    for truth in (tiny.cuhk_sysu, tiny.prw):
        for scene in (*truth.train, *truth.test):
            b = scene.boxes
            assert b.dtype == np.int64
            assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
            assert (b[:, 2] <= scene.width).all() and (b[:, 3] <= scene.height).all()
            assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
            assert 1 <= len(b) <= 8
            heights += (b[:, 3] - b[:, 1]).tolist()
            rel += ((b[:, 3] - b[:, 1]) / scene.height).tolist()
    assert min(heights) <= 45 and max(rel) >= 0.6


def test_scene_boxes_are_tight_around_the_drawn_person() -> None:
    people = tuple(sample_identities(np.random.default_rng(0), 6))
    checked = 0
    for seed in range(8):
        scene = render_scene(ScenePlan(width=320, height=240, people=people, seed=seed, background_seed=seed))
        assert scene.boxes.shape == (6, 4) and scene.owner.shape == (240, 320)
        for i, box in enumerate(scene.boxes):
            ys, xs = np.nonzero(scene.owner == i)
            assert len(ys) > 0
            # Visible pixels always lie inside the box ...
            assert box[0] <= xs.min() and xs.max() < box[2] and box[1] <= ys.min() and ys.max() < box[3]
            if scene.visibility[i] == 1.0:
                # ... and an unoccluded person touches all four sides of it.
                np.testing.assert_array_equal(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
                checked += 1
    assert checked >= 10


def test_pedes_coco_market_layouts(tiny: SyntheticManifest) -> None:
    root = tiny.root
    entries = json.loads((root / "PEDES" / "reid_raw.json").read_text())
    assert entries and all(
        set(e) == {"split", "captions", "file_path", "processed_tokens", "id"} for e in entries
    )
    assert min(e["id"] for e in entries) == 1
    assert all(len(e["captions"]) == 2 and len(e["processed_tokens"]) == 2 for e in entries)
    assert all((root / "PEDES" / "imgs" / e["file_path"]).is_file() for e in entries)
    test = load_text_person(root / "PEDES", "cuhk_pedes", "test")
    expected = [e["id"] for e in entries if e["split"] == "test"]
    assert sorted(set(test.image_pids.tolist())) == sorted(set(expected))
    train = load_text_person(root / "PEDES", "cuhk_pedes", "train")
    assert len(train.image_paths) == sum(e["split"] == "train" for e in entries)
    assert len(train.captions) == 2 * len(train.image_paths)

    records = load_coco_persons(root / "COCO/annotations/instances_train2017.json", root / "COCO/train2017")
    by_name = {s.name: s for s in tiny.cuhk_sysu.train}
    assert len(records) == len(by_name)
    for record in records:
        assert sorted(map(tuple, record.boxes.tolist())) == sorted(
            map(tuple, by_name[record.name].boxes.astype(np.float32).tolist())
        )
        assert record.path.is_file()

    crops = load_market1501(root / "Market-1501", "bounding_box_train")
    labelled_train = sum(int((s.pids >= 0).sum()) for s in tiny.prw.train)
    assert len(crops.names) == labelled_train
    query = load_market1501(root / "Market-1501", "query")
    assert len(query.names) == len(tiny.prw.queries)


def test_captions_name_the_attributes() -> None:
    person = sample_identities(np.random.default_rng(5), 1)[0]
    captions = describe_identity(person)
    assert len(captions) == 2
    for caption in captions:
        for word in (person.upper_colour, person.lower_colour, person.shoe_colour, person.lower_kind):
            assert word in caption


def _hist(image: np.ndarray) -> np.ndarray:
    import cv2

    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    h = cv2.calcHist([hsv], [0, 1, 2], None, [8, 4, 4], [0, 180, 0, 256, 0, 256]).ravel()
    return h / max(h.sum(), 1e-9)


def test_colour_histogram_reid_is_informative_but_far_from_perfect(tiny: SyntheticManifest) -> None:
    """An independent colour-histogram re-id check on ground-truth PRW boxes: better than
    chance (identities are their appearance) and well below perfect (the set is not trivial)."""
    import cv2

    truth = tiny.prw
    feats, pids, names = [], [], []
    for scene in truth.test:
        image = cv2.imread(str(truth.root / "frames" / scene.name))
        for box, pid in zip(scene.boxes, scene.pids, strict=True):
            if pid >= 0:
                x1, y1, x2, y2 = box
                feats.append(_hist(image[y1:y2, x1:x2]))
                pids.append(int(pid))
                names.append(scene.name)
    feats_a, pids_a = np.asarray(feats), np.asarray(pids)
    aps, chance = [], []
    for query in truth.queries:
        image = cv2.imread(str(truth.root / "frames" / query.name))
        x1, y1, x2, y2 = query.box
        q = _hist(image[y1:y2, x1:x2])
        keep = np.asarray([n != query.name for n in names])
        sim = -np.abs(feats_a[keep] - q).sum(axis=1)
        rel = (pids_a[keep] == query.pid)[np.argsort(-sim, kind="stable")]
        hits = np.flatnonzero(rel)
        aps.append(np.mean((np.arange(len(hits)) + 1) / (hits + 1)))
        chance.append(rel.mean())
    mean_ap = float(np.mean(aps))
    assert float(np.mean(chance)) * 2 < mean_ap < 0.9


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="preset"):
        generate_dataset(tmp_path / "x", "huge")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(TrainerError, match="not empty"):
        generate_dataset(foreign, "tiny")
    assert (foreign / "keep.txt").read_text() == "mine"


def test_an_interrupted_generation_is_cleared_on_the_next_run(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    (out / "CUHK-SYSU" / "Image").mkdir(parents=True)  # what a killed run leaves: no manifest yet
    (out / "PRW").mkdir()
    (out / "PRW" / "half_written.jpg").write_bytes(b"\xff\xd8")
    manifest = generate_dataset(out, "tiny", seed=0, workers=1)
    assert (out / "synthetic_manifest.json").is_file() and not (out / "PRW" / "half_written.jpg").exists()
    assert manifest.counts["prw"]["test_images"] == 30
    # A folder with anything else in it is still the user's and is refused.
    (out / "synthetic_manifest.json").unlink()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(TrainerError, match="not empty"):
        generate_dataset(out, "tiny")
    assert (out / "notes.txt").read_text() == "mine"
