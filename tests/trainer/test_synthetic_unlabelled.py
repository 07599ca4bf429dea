"""The unlabelled synthetic crop set (LUPerson stand-in) and its evaluation-only attribute truth."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from personsearch_train.commands import synth as synth_command
from personsearch_train.data.synthetic.attribute_truth import (
    MEASURED_ATTRIBUTES,
    UNDRAWN_ATTRIBUTES,
    attribute_truth,
)
from personsearch_train.data.synthetic.generator import PRESETS, _plan_pedes, _plan_ufine
from personsearch_train.data.synthetic.identities import Identity
from personsearch_train.data.synthetic.unlabelled_crops import (
    MANIFEST_NAME,
    TRUTH_FILE,
    UnlabelledCropsManifest,
    _plan,
    appearance_key,
    generate_unlabelled_crops,
    target_appearances,
)
from personsearch_train.errors import ConfigError, TrainerError

COUNT = 12


@pytest.fixture(scope="module")
def crops(tmp_path_factory: pytest.TempPathFactory) -> UnlabelledCropsManifest:
    out = tmp_path_factory.mktemp("unlabelled") / "set"
    return generate_unlabelled_crops(out, count=COUNT, seed=5, target_preset="tiny", target_seed=2, workers=1)


def _person(**changes: object) -> Identity:
    base = Identity(
        key=1,
        upper_colour="red",
        upper_colour2="red",
        upper_pattern="solid",
        long_sleeves=False,
        lower_colour="blue",
        lower_colour2="blue",
        lower_pattern="solid",
        lower_kind="skirt",
        shoe_colour="black",
        hair_colour="blonde",
        long_hair=False,
        skin=0,
        build=1.0,
        height=1.0,
        hat=None,
        bag=None,
        backpack=None,
    )
    return dataclasses.replace(base, **changes)


def _json_keys(value: object) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _json_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _json_keys(v)}
    return set()


def test_files_truth_and_no_labels(crops: UnlabelledCropsManifest) -> None:
    root = crops.root
    images = sorted((root / "images").iterdir())
    assert [p.name for p in images] == [f"c{i:06d}.jpg" for i in range(COUNT)]
    assert list(crops.image_paths) == images and crops.count == COUNT
    # Only the crops, the truth file and the manifest: no caption or annotation files.
    assert sorted(p.name for p in root.iterdir()) == sorted(["images", "truth", MANIFEST_NAME])
    assert [p.name for p in (root / "truth").iterdir()] == ["attributes.json"]
    for path in images:
        image = cv2.imread(str(path))
        assert image is not None and image.shape[0] >= 160 and image.shape[0] > image.shape[1]

    truth = json.loads((root / TRUTH_FILE).read_text())
    assert [e["file_path"] for e in truth] == [f"images/{p.name}" for p in images]
    for entry in truth:
        assert set(entry) == {"file_path", "attributes"}
        assert list(entry["attributes"]) == list(MEASURED_ATTRIBUTES)
        assert all(isinstance(v, list) and v for v in entry["attributes"].values())
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    assert manifest["kind"] == "unlabelled_crops" and manifest["count"] == COUNT
    assert (manifest["seed"], manifest["target_preset"], manifest["target_seed"]) == (5, "tiny", 2)
    assert manifest["identities"] == crops.identities and COUNT / 2 <= crops.identities <= COUNT
    assert manifest["rejected_identities"] == crops.rejected_identities

    # Neither file may carry a caption or anything identifying a person.
    forbidden = {"captions", "caption", "id", "pid", "key", "identity", "person_id", "sentences"}
    for name in (TRUTH_FILE, MANIFEST_NAME):
        assert not _json_keys(json.loads((root / name).read_text())) & forbidden


def test_target_appearances_match_the_generator_planners(tmp_path: Path) -> None:
    # The shortcut must draw exactly the people the real planners put in the target set.
    spec = PRESETS["tiny"]
    pedes_scenes, _ = _plan_pedes(spec, 2, tmp_path / "PEDES")
    ufine = _plan_ufine(spec, 2, tmp_path / "UFine6926", tmp_path / "UFine3C")
    planned = {appearance_key(s.people[0]) for s in (*pedes_scenes, *ufine.scenes)}
    assert target_appearances("tiny", 2) == planned


def test_no_target_person_in_the_set(crops: UnlabelledCropsManifest, tmp_path: Path) -> None:
    taken = target_appearances("tiny", 2)
    spec = PRESETS["tiny"]
    scenes, shown, rejected = _plan(COUNT, 5, spec, taken, tmp_path)
    assert (len(shown), rejected) == (crops.identities, crops.rejected_identities)
    assert not {appearance_key(p) for p in shown} & taken
    # The rejection works: banning the people an unrestricted draw shows rejects them
    # all (the same stream draws them again) and still fills the set.
    _, free, _ = _plan(COUNT, 5, spec, frozenset(), tmp_path)
    banned = frozenset(appearance_key(p) for p in free)
    scenes, shown, rejected = _plan(COUNT, 5, spec, banned, tmp_path)
    assert rejected >= len(free) and len(scenes) == COUNT
    assert not {appearance_key(p) for p in shown} & banned
    # Look-alikes differ at most in key, build, height and skin; anything visible separates them.
    assert appearance_key(_person(key=9, skin=3, build=0.9, height=1.05)) == appearance_key(_person())
    assert appearance_key(_person(shoe_colour="red")) != appearance_key(_person())


def test_same_arguments_same_bytes_with_workers_through_the_cli(
    crops: UnlabelledCropsManifest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    synth_command.add_arguments(parser)
    out = tmp_path / "again"
    args = parser.parse_args(
        ["--out", str(out), "--unlabelled-crops", str(COUNT), "--preset", "tiny"]
        + ["--target-seed", "2", "--seed", "5", "--workers", "2"]
    )
    assert synth_command.run(args) == 0
    printed = capsys.readouterr().out
    assert f"{COUNT} crops" in printed and "training must never read it" in printed
    assert not (out / "synthetic_manifest.json").exists()  # only the unlabelled set was written
    names = [TRUTH_FILE, MANIFEST_NAME, *(f"images/{p.name}" for p in crops.image_paths)]
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(names)
    for name in names:
        assert (out / name).read_bytes() == (crops.root / name).read_bytes(), name
    # Another seed gives other crops.
    other = generate_unlabelled_crops(
        tmp_path / "other", count=2, seed=6, target_preset="tiny", target_seed=2
    )
    assert other.image_paths[0].read_bytes() != (crops.root / "images/c000000.jpg").read_bytes()


def test_output_folder_rules(tmp_path: Path) -> None:
    out = tmp_path / "set"
    generate_unlabelled_crops(out, count=3, seed=1, target_preset="tiny")
    # A previous set is replaced: the smaller set leaves no stale crops behind.
    generate_unlabelled_crops(out, count=2, seed=1, target_preset="tiny")
    assert sorted(p.name for p in (out / "images").iterdir()) == ["c000000.jpg", "c000001.jpg"]
    # An interrupted run (our folders, our names, no manifest) is cleared.
    (out / MANIFEST_NAME).unlink()
    (out / "images" / ".c000002.jpg.x1y2.tmp").write_bytes(b"\xff\xd8")
    generate_unlabelled_crops(out, count=1, seed=1, target_preset="tiny")
    assert sorted(p.name for p in (out / "images").iterdir()) == ["c000000.jpg"]
    # A user's folder, even one that only holds "images", is refused and left alone.
    for name in ("notes.txt", "images/holiday.jpg"):
        foreign = tmp_path / f"foreign_{Path(name).stem}"
        (foreign / name).parent.mkdir(parents=True, exist_ok=True)
        (foreign / name).write_text("mine")
        with pytest.raises(TrainerError, match="not empty"):
            generate_unlabelled_crops(foreign, count=1, target_preset="tiny")
        assert (foreign / name).read_text() == "mine"
    with pytest.raises(ConfigError, match="at least 1"):
        generate_unlabelled_crops(tmp_path / "none", count=0)
    with pytest.raises(ConfigError, match="unknown synthetic preset"):
        generate_unlabelled_crops(tmp_path / "none", count=1, target_preset="huge")
    parser = argparse.ArgumentParser()
    synth_command.add_arguments(parser)
    with pytest.raises(ConfigError, match="only applies"):
        synth_command.run(parser.parse_args(["--out", str(tmp_path / "none"), "--target-seed", "1"]))
    assert not (tmp_path / "none").exists()


def test_attribute_truth_of_hand_made_people() -> None:
    plain = attribute_truth(_person())
    assert list(plain) == list(MEASURED_ATTRIBUTES)
    assert not set(plain) & set(UNDRAWN_ATTRIBUTES)
    assert plain["upper_clothes"] == ("red short",)
    assert plain["lower_clothes"] == ("blue skirt",)
    assert plain["hair"] == ("short blonde",)
    assert plain["bag"] == ("none",) and plain["hat"] == ("none",)
    for name in ("glasses", "smoke", "cellphone", "umbrella", "gloves", "vehicle"):
        assert plain[name] == ("none",)

    dressed = attribute_truth(
        _person(
            long_sleeves=True, long_hair=True, lower_kind="trousers", hat="black", bag="grey", backpack="red"
        )
    )
    assert dressed["upper_clothes"] == ("red long",)
    assert dressed["lower_clothes"] == ("blue trousers",)
    assert dressed["hair"] == ("long blonde",)
    assert dressed["bag"] == ("shoulder bag", "backpack")
    assert dressed["hat"] == ("hat",)
    assert attribute_truth(_person(backpack="navy"))["bag"] == ("backpack",)
    assert attribute_truth(_person(bag="navy"))["bag"] == ("shoulder bag",)


def test_the_truth_file_follows_the_drawn_people(crops: UnlabelledCropsManifest, tmp_path: Path) -> None:
    scenes, _, _ = _plan(COUNT, 5, PRESETS["tiny"], target_appearances("tiny", 2), tmp_path)
    truth = json.loads((crops.root / TRUTH_FILE).read_text())
    for scene, entry in zip(scenes, truth, strict=True):
        expected = {k: list(v) for k, v in attribute_truth(scene.people[0]).items()}
        assert entry["attributes"] == expected
    assert np.unique([e["attributes"]["upper_clothes"][0] for e in truth]).size > 1
