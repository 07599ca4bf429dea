"""Hybrid pre-training sub-task sets: readable, without the target's people, in another style, stable."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from personsearch_train.commands import synth as synth_command
from personsearch_train.data.detection_sets import load_coco_persons
from personsearch_train.data.reid_folders import load_market1501
from personsearch_train.data.synthetic.generator import (
    PRESETS,
    SyntheticManifest,
    _plan_pedes,
    generate_dataset,
)
from personsearch_train.data.synthetic.subtask_sets import (
    MANIFEST_NAME,
    SubtaskSetsManifest,
    SubtaskSizes,
    generate_subtask_sets,
    subtask_sizes,
)
from personsearch_train.data.synthetic.target_people import (
    ALL_LAYOUTS,
    appearance_key,
    sample_disjoint_identities,
    target_appearances,
)
from personsearch_train.data.synthetic.unlabelled_crops import _plan
from personsearch_train.errors import ConfigError, TrainerError

SEED, TARGET_SEED = 21, 2
_MARKET_NAME = re.compile(r"(\d{4})_c([1-6])s1_(\d{6})_(\d{2})\.jpg")


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> SyntheticManifest:
    """The real tiny set the pre-trained model would be fine-tuned and tested on (about 3 s)."""
    return generate_dataset(tmp_path_factory.mktemp("target") / "set", "tiny", TARGET_SEED, workers=1)


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> SubtaskSetsManifest:
    out = tmp_path_factory.mktemp("subtask") / "sets"
    return generate_subtask_sets(out, preset="tiny", seed=SEED, target_seed=TARGET_SEED, workers=1)


def _files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _grey(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert image is not None, path
    return image.astype(np.float64)


def _relative_heights(annotation: Path) -> tuple[np.ndarray, np.ndarray]:
    """Box heights of a COCO json: in pixels and as fractions of their image's height."""
    coco = json.loads(annotation.read_text())
    image_height = {image["id"]: image["height"] for image in coco["images"]}
    pixels = np.asarray([a["bbox"][3] for a in coco["annotations"]], dtype=np.float64)
    fractions = pixels / np.asarray([image_height[a["image_id"]] for a in coco["annotations"]])
    return pixels, fractions


def test_coco_set_loads_with_person_boxes_and_no_identities(sets: SubtaskSetsManifest) -> None:
    root = sets.root / "COCO"
    records = load_coco_persons(sets.annotation_path, root / "train2017")
    sizes = subtask_sizes(PRESETS["tiny"])
    assert sets.sizes == sizes and len(records) == sizes.detection_images
    assert sorted(p.name for p in (root / "train2017").iterdir()) == [r.name for r in records]
    assert sorted(p.name for p in root.iterdir()) == ["annotations", "train2017"]
    for record, truth in zip(records, sets.detection, strict=True):
        assert record.name == truth.name and record.path.is_file()
        assert len(record.boxes) >= 2 and (record.pids == -1).all()
        np.testing.assert_array_equal(record.boxes, truth.boxes.astype(np.float32))
        assert (record.boxes[:, 2] <= truth.width).all() and (record.boxes[:, 3] <= truth.height).all()
    assert sum(len(r.boxes) for r in records) == sets.counts["COCO"]["person_boxes"]
    # Detection only: nothing in the file tells which boxes show the same person.
    annotation = json.loads(sets.annotation_path.read_text())["annotations"]
    keys = {key for a in annotation for key in a}
    assert keys == {"id", "image_id", "category_id", "bbox", "area", "iscrowd"}


def test_market_set_loads_with_several_crops_and_cameras_per_identity(sets: SubtaskSetsManifest) -> None:
    root = sets.root / "Market-1501"
    crops = load_market1501(root, "bounding_box_train")
    assert sorted(p.name for p in root.iterdir()) == ["bounding_box_train"]  # test/query skipped on purpose
    assert len(crops.names) == sets.counts["Market-1501"]["bounding_box_train"]
    assert all(_MARKET_NAME.fullmatch(name) for name in crops.names)
    assert crops.label_to_pid.tolist() == sorted(sets.reid_identities)
    assert len(crops.label_to_pid) == subtask_sizes(PRESETS["tiny"]).reid_identities
    for label in range(len(crops.label_to_pid)):
        mine = crops.pids == label
        assert mine.sum() >= 2 and len(set(crops.cameras[mine].tolist())) >= 2, crops.label_to_pid[label]
    assert len(set(crops.cameras.tolist())) > 1
    for path in crops.paths[:5]:
        image = cv2.imread(str(path))
        assert image is not None and image.shape == (128, 64, 3)


def test_no_person_of_the_target_in_any_set(
    sets: SubtaskSetsManifest, target: SyntheticManifest, tmp_path: Path
) -> None:
    # Everyone in the real target set: the scene layouts' people (labelled and passers-by),
    # UFine6926/UFine3C's, and PEDES' (its truth keeps no appearances, so from its planner).
    pedes_scenes, _ = _plan_pedes(PRESETS["tiny"], TARGET_SEED, tmp_path / "PEDES")
    target_people = [
        *target.cuhk_sysu.identities.values(),
        *target.prw.identities.values(),
        *target.ufine_identities.values(),
        *(s.people[0] for s in pedes_scenes),
    ]
    taken = {appearance_key(p) for p in target_people}
    # The shortcut the generator uses finds exactly these people.
    assert target_appearances("tiny", TARGET_SEED, ALL_LAYOUTS) == taken

    # Everyone in the sets: the COCO people are the ones the boxes were drawn for.
    by_key = {p.key: p for p in sets.detection_people}
    drawn = [by_key[int(k)] for truth in sets.detection for k in truth.identities]
    assert len(drawn) == len(by_key) == sets.counts["COCO"]["person_boxes"]  # each person drawn once
    unlabelled_scenes, unlabelled, rejected = _plan(
        sets.unlabelled.count, SEED, PRESETS["tiny"], frozenset(taken), tmp_path, "shifted"
    )
    assert (len(unlabelled), rejected) == (sets.unlabelled.identities, sets.unlabelled.rejected_identities)
    everyone = [*drawn, *sets.reid_identities.values(), *sets.reid_passers_by, *unlabelled]
    assert not {appearance_key(p) for p in everyone} & taken

    manifest = json.loads((sets.root / MANIFEST_NAME).read_text())
    seeds = (manifest["target_preset"], manifest["target_seed"], manifest["seed"])
    assert seeds == ("tiny", TARGET_SEED, SEED)
    assert manifest["target_layouts"] == list(ALL_LAYOUTS)
    assert manifest["rejected_identities"] == sets.rejected_identities
    luperson = json.loads((sets.root / "LUPerson-synthetic/synthetic_unlabelled_manifest.json").read_text())
    assert luperson["target_layouts"] == list(ALL_LAYOUTS) and luperson["domain"] == "shifted"


def test_rejection_drops_look_alikes_and_still_fills_the_set() -> None:
    # The tiny sets happen to draw no look-alike, so exercise the rejection directly:
    # banning everyone an unrestricted draw shows rejects them all (the same stream
    # draws them again first) and the set is still filled, with consecutive keys.
    free, none = sample_disjoint_identities(np.random.default_rng(7), 20, frozenset(), first_key=1)
    banned = frozenset(appearance_key(p) for p in free)
    people, rejected = sample_disjoint_identities(np.random.default_rng(7), 20, banned, first_key=5)
    assert none == 0 and rejected >= 20 and len(people) == 20
    assert [p.key for p in people] == list(range(5, 25))
    assert not {appearance_key(p) for p in people} & banned


def test_style_differs_from_the_target(sets: SubtaskSetsManifest, target: SyntheticManifest) -> None:
    manifest = json.loads((sets.root / MANIFEST_NAME).read_text())
    assert manifest["style"]["domain"] == "shifted" and manifest["style"]["scale"]["COCO"] == "wide"
    assert manifest["style"]["target"] == {"domain": "standard", "scale": "standard"}

    # Measured on the files: the target's COCO folder holds its CUHK-SYSU scenes.
    for folder in ("COCO/train2017", "Market-1501/bounding_box_train"):
        ours = [_grey(p) for p in sorted((sets.root / folder).glob("*.jpg"))]
        theirs = [_grey(p) for p in sorted((target.root / folder).glob("*.jpg"))]
        # Dim, tinted light: clearly darker on average.
        assert np.mean([g.mean() for g in ours]) < 0.75 * np.mean([g.mean() for g in theirs]), folder
        # A softer lens: much less fine detail (variance of the Laplacian).
        sharp_ours = np.median([cv2.Laplacian(g, cv2.CV_64F).var() for g in ours])
        sharp_theirs = np.median([cv2.Laplacian(g, cv2.CV_64F).var() for g in theirs])
        assert sharp_ours < 0.5 * sharp_theirs, folder

    # A wider scale spread: people smaller than the target's floor (0.9 x 40 px) and taller
    # than its ceiling (0.75 of the image), and a wider spread of relative heights.
    ours_px, ours_rel = _relative_heights(sets.annotation_path)
    theirs_px, theirs_rel = _relative_heights(target.root / "COCO/annotations/instances_train2017.json")
    assert ours_px.min() < 36 <= theirs_px.min()
    assert ours_rel.max() > 0.75 >= theirs_rel.max()
    assert np.log(ours_rel).std() > 1.3 * np.log(theirs_rel).std()


def test_same_bytes_with_two_workers_through_the_cli(
    sets: SubtaskSetsManifest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    synth_command.add_arguments(parser)
    out = tmp_path / "again"
    args = parser.parse_args(
        ["--out", str(out), "--subtask-sets", "--preset", "tiny", "--seed", str(SEED)]
        + ["--target-seed", str(TARGET_SEED), "--workers", "2"]
    )
    assert synth_command.run(args) == 0
    printed = capsys.readouterr().out
    assert "sub-task pre-training sets (seed 21)" in printed
    assert "nobody from the 'tiny' set with seed 2" in printed
    assert not (out / "synthetic_manifest.json").exists()  # only the sub-task sets were written
    assert _files(out) == _files(sets.root)
    # Another seed draws other scenes.
    other = generate_subtask_sets(
        tmp_path / "other", preset="tiny", seed=SEED + 1, sizes=SubtaskSizes(1, 1, 1)
    )
    name = f"COCO/train2017/{other.detection[0].name}"
    assert (other.root / name).read_bytes() != (sets.root / name).read_bytes()


def test_cli_flags_conflict_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="personsearch synth")
    synth_command.add_arguments(parser)
    out = tmp_path / "none"
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--out", str(out), "--subtask-sets", "--unlabelled-crops", "5"])
    assert exit_info.value.code == 2
    assert "not allowed with argument --subtask-sets" in capsys.readouterr().err
    # A namespace built by hand cannot get around it.
    both = parser.parse_args(["--out", str(out), "--subtask-sets"])
    both.unlabelled_crops = 5
    with pytest.raises(ConfigError, match="choose one"):
        synth_command.run(both)
    with pytest.raises(ConfigError, match="only applies with --unlabelled-crops or --subtask-sets"):
        synth_command.run(parser.parse_args(["--out", str(out), "--target-seed", "1"]))
    with pytest.raises(ConfigError, match="--target-seed must be an integer from 0"):
        synth_command.run(parser.parse_args(["--out", str(out), "--subtask-sets", "--target-seed", "-1"]))
    assert not out.exists()


def test_output_folder_rules(tmp_path: Path) -> None:
    one = SubtaskSizes(1, 1, 1)
    out = tmp_path / "sets"
    generate_subtask_sets(out, preset="tiny", sizes=SubtaskSizes(2, 1, 2))
    # A previous set is replaced: the smaller set leaves no stale files behind.
    generate_subtask_sets(out, preset="tiny", sizes=one)
    assert [p.name for p in (out / "COCO/train2017").iterdir()] == ["000000000001.jpg"]
    assert len(list((out / "LUPerson-synthetic/images").iterdir())) == 1
    # An interrupted run (only our folders, no manifest yet) is cleared.
    (out / MANIFEST_NAME).unlink()
    generate_subtask_sets(out, preset="tiny", sizes=one)
    assert (out / MANIFEST_NAME).is_file()
    # A user's folder is refused and left alone.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(TrainerError, match="not empty"):
        generate_subtask_sets(foreign, preset="tiny", sizes=one)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    with pytest.raises(ConfigError, match="at least 1"):
        generate_subtask_sets(tmp_path / "none", sizes=SubtaskSizes(1, 0, 1))
    with pytest.raises(ConfigError, match="unknown synthetic preset"):
        generate_subtask_sets(tmp_path / "none", preset="huge")
    assert not (tmp_path / "none").exists()
