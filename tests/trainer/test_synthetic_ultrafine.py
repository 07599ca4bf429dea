"""Synthetic ultra-fine text-person layouts: UFine6926 and the UFine3C shifts.

Read back through the real reader, captions checked against the drawn identities,
the cross-style family checked against the training family, determinism, and the
older layouts left as they were.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from personsearch_train.data.synthetic.generator import UFINE3C_SOURCES, SyntheticManifest, generate_dataset
from personsearch_train.data.synthetic.identities import (
    CLOTHING_COLOURS,
    HAIR_COLOURS,
    LOWER_KINDS,
    SHOE_COLOURS,
    Identity,
    sample_identities,
)
from personsearch_train.data.synthetic.scenes import ScenePlan, render_scene
from personsearch_train.data.synthetic.ultrafine_captions import (
    CROSS_STYLE_ONLY_PHRASES,
    TRAINING_ONLY_PHRASES,
    build_word,
    describe_coarse,
    describe_cross_style,
    describe_ultrafine,
    height_phrase,
)
from personsearch_train.data.text_person import load_text_person

# sha256 of PEDES/reid_raw.json for (tiny, seed 3), as written before the UFine layouts
# existed: adding them must not move a single PEDES caption or file name.
_PEDES_TINY_SEED3_SHA256 = "e25c97b957541b3d019e42295890f8e366fc8f632b23810c7d908787fa9801eb"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> SyntheticManifest:
    return generate_dataset(tmp_path_factory.mktemp("ufine") / "out", "tiny", seed=3, workers=1)


def _entries(root: Path, name: str) -> list[dict]:
    return json.loads((root / name / f"{name}.json").read_text(encoding="utf-8"))


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+(?:-[a-z]+)?", text.lower())


# Nouns of the accessories in each caption family.
_NOUNS = {
    "training": {"hat": "hat", "bag": "shoulder bag", "backpack": "backpack"},
    "style": {"hat": "headwear", "bag": "handbag", "backpack": "rucksack"},
}


def _missing_attributes(caption: str, identity: Identity, family: str) -> list[str]:
    """Attributes of ``identity`` that ``caption`` does not name (empty when complete)."""
    text = caption.lower()
    words = set(_words(caption))
    missing = []
    for name, colour in (
        ("top colour", identity.upper_colour),
        ("top second colour", identity.upper_colour2),
        ("lower colour", identity.lower_colour),
        ("lower second colour", identity.lower_colour2),
        ("shoe colour", identity.shoe_colour),
        ("hair colour", identity.hair_colour),
    ):
        if colour not in words:
            missing.append(name)
    for pattern, word in (("stripes", "striped"), ("checks", "checked")):
        if pattern in (identity.upper_pattern, identity.lower_pattern) and word not in words:
            missing.append(pattern)
    if identity.lower_kind not in words:
        missing.append("lower kind")
    sleeve = "long" if identity.long_sleeves else "short"
    if not re.search(rf"{sleeve}-sleeved|{sleeve} sleeves|sleeves (are|that are) {sleeve}", text):
        missing.append("sleeves")
    hair = "long" if identity.long_hair else "short"
    if not re.search(
        rf"{hair} \w+ hair|hair[ a-z]* is \w+ and {hair}|{hair}, \w+ coloured hair"
        rf"|length: {hair}|hairstyle is {hair}",
        text,
    ):
        missing.append("hair length")
    if build_word(identity) not in words:
        missing.append("build")
    if height_phrase(identity) not in text:
        missing.append("height")
    for item in ("hat", "bag", "backpack"):
        noun = _NOUNS[family][item]
        colour = getattr(identity, item)
        if noun not in text:
            missing.append(item)
        elif colour is not None and colour not in words:
            missing.append(f"{item} colour")
        elif colour is None and not any(
            re.search(r"\b(no|none|not|without|nothing)\b", sentence)
            for sentence in _sentences(text)
            if noun in sentence
        ):
            missing.append(f"no {item}")
    return missing


def test_ufine6926_reads_back_with_disjoint_splits(tiny: SyntheticManifest) -> None:
    root = tiny.root / "UFine6926"
    ids = {}
    for split, count in zip(("train", "val", "test"), (30, 6, 12), strict=True):
        data = load_text_person(root, "ufine6926", split)
        assert all(p.is_file() for p in data.image_paths)
        assert len(data.captions) == 2 * len(data.image_paths)
        pids = data.label_to_pid if split == "train" else np.unique(data.image_pids)
        ids[split] = set(pids.tolist())
        assert len(ids[split]) == count
        assert 2 * count <= len(data.image_paths) <= 2 * count * 2
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    entries = _entries(tiny.root, "UFine6926")
    assert all(set(e) == {"split", "id", "file_path", "captions"} for e in entries)
    assert all(re.fullmatch(r"images/p\d{5}_\d\.jpg", e["file_path"]) for e in entries)
    assert tiny.counts["ufine6926"]["images"] == len(entries)
    assert json.loads((tiny.root / "synthetic_manifest.json").read_text())["folders"]["ufine3c"] == "UFine3C"


def test_ultrafine_captions_name_every_attribute(tiny: SyntheticManifest) -> None:
    entries = [*tiny.ufine6926, *(e for e in tiny.ufine3c if e.source == "cross_domain")]
    orders = set()
    for entry in entries:
        identity = tiny.ufine_identities[entry.id]
        assert len(entry.captions) == 2 and entry.captions[0] != entry.captions[1]
        for caption in entry.captions:
            assert 60 <= len(caption.split()) <= 100, caption
            assert _missing_attributes(caption, identity, "training") == [], caption
            # The order in which the shoes, the hair and the top are named.
            text = caption.lower()
            orders.add(tuple(np.argsort([text.find(" shoes"), text.find(" hair"), text.find(" shirt")])))
    assert len(orders) >= 4
    mean = np.mean([len(c.split()) for e in tiny.ufine6926 for c in e.captions])
    assert 75 <= mean <= 92


def test_caption_families_on_many_identities() -> None:
    # Rare combinations (every accessory, both garments patterned) are covered here.
    rng = np.random.default_rng(0)
    for identity in sample_identities(rng, 400, first_key=1):
        for caption in describe_ultrafine(identity, rng):
            assert 70 <= len(caption.split()) <= 95
            assert _missing_attributes(caption, identity, "training") == [], caption
        for caption in describe_cross_style(identity, rng):
            assert 70 <= len(caption.split()) <= 95
            assert _missing_attributes(caption, identity, "style") == [], caption
        coarse = describe_coarse(identity, rng)
        assert coarse[0] != coarse[1]
        for caption in coarse:
            assert 8 <= len(caption.split()) <= 15 and caption.count(".") == 1
            assert identity.upper_colour in _words(caption) and identity.lower_kind in _words(caption)
    # The vocabulary stays plain: lower-case words, the palettes and a few punctuation marks.
    vocabulary = {
        w for i in sample_identities(rng, 50) for c in describe_ultrafine(i, rng) for w in _words(c)
    }
    assert all(w.replace("-", "").isalpha() and len(w) < 15 for w in vocabulary)


def _skeleton(sentence: str) -> str:
    """A sentence with its attribute values masked: what remains is the template."""
    values = {*CLOTHING_COLOURS, *HAIR_COLOURS, *SHOE_COLOURS, *LOWER_KINDS}
    values |= {"long", "short", "slim", "average", "heavy", "a", "an", "tall", "medium"}
    return " ".join("X" if w in values else w for w in _words(sentence))


def _sentences(caption: str) -> list[str]:
    return [s for s in re.split(r"(?<=\.)\s+", caption) if s]


def test_ufine3c_sources_and_shifts(tiny: SyntheticManifest) -> None:
    root = tiny.root / "UFine3C"
    entries = _entries(tiny.root, "UFine3C")
    assert {e["source"] for e in entries} == set(UFINE3C_SOURCES)
    assert all(e["split"] == "test" for e in entries)
    test_ids = {e.id for e in tiny.ufine6926 if e.split == "test"}
    data = load_text_person(root, "ufine3c", "test")
    assert set(data.image_pids.tolist()) == test_ids
    assert set(data.image_sources) == set(UFINE3C_SOURCES)
    assert all(p.is_file() and root in p.parents for p in data.image_paths)

    by_source: dict[str, list[dict]] = {s: [e for e in entries if e["source"] == s] for s in UFINE3C_SOURCES}
    for caption in (c for e in by_source["cross_granularity"] for c in e["captions"]):
        assert len(caption.split()) <= 15

    training = [c for e in tiny.ufine6926 for c in e.captions]
    style = [c for e in by_source["cross_style"] for c in e["captions"]]
    for entry in by_source["cross_style"]:
        for caption in entry["captions"]:
            assert 60 <= len(caption.split()) <= 100
            assert _missing_attributes(caption, tiny.ufine_identities[entry["id"]], "style") == [], caption
    train_skeletons = {_skeleton(s) for c in training for s in _sentences(c)}
    style_skeletons = {_skeleton(s) for c in style for s in _sentences(c)}
    assert not train_skeletons & style_skeletons
    for phrase in TRAINING_ONLY_PHRASES:
        assert not any(re.search(rf"\b{phrase}\b", c.lower()) for c in style), phrase
    for phrase in CROSS_STYLE_ONLY_PHRASES:
        assert not any(re.search(rf"\b{phrase}\b", c.lower()) for c in training), phrase

    # Granularity and style shifts reuse the standard test images byte for byte; the
    # domain shift renders the same people anew.
    standard = {
        Path(e.file_path).name: (tiny.root / "UFine6926" / e.file_path).read_bytes() for e in tiny.ufine6926
    }
    for source in ("cross_granularity", "cross_style"):
        for entry in by_source[source]:
            assert (root / entry["file_path"]).read_bytes() == standard[Path(entry["file_path"]).name]
    for entry in by_source["cross_domain"]:
        assert (root / entry["file_path"]).read_bytes() != standard[Path(entry["file_path"]).name]


def test_shifted_domain_changes_only_the_look() -> None:
    (person,) = sample_identities(np.random.default_rng(1), 1)
    plan = ScenePlan(width=96, height=224, people=(person,), seed=5, background_seed=6, style="crop")
    standard = render_scene(plan)
    again = render_scene(plan)
    shifted = render_scene(ScenePlan(**{**plan.__dict__, "domain": "shifted"}))
    np.testing.assert_array_equal(standard.image, again.image)
    np.testing.assert_array_equal(standard.boxes, shifted.boxes)  # same pose and placement
    background = standard.owner < 0
    diff = np.abs(standard.image.astype(np.int16) - shifted.image.astype(np.int16))
    assert diff[background].mean() > 20
    with pytest.raises(ValueError, match="domain"):
        ScenePlan(width=8, height=8, people=(), seed=0, background_seed=0, domain="night")


def test_same_seed_same_json_and_pedes_untouched(tiny: SyntheticManifest, tmp_path: Path) -> None:
    again = generate_dataset(tmp_path / "again", "tiny", seed=3, workers=2)
    for name in ("UFine6926", "UFine3C"):
        assert (tiny.root / name / f"{name}.json").read_bytes() == (
            again.root / name / f"{name}.json"
        ).read_bytes()
    for path in sorted((tiny.root / "UFine3C" / "images").rglob("*.jpg"))[:10]:
        assert path.read_bytes() == (again.root / path.relative_to(tiny.root)).read_bytes()
    pedes = (tiny.root / "PEDES" / "reid_raw.json").read_bytes()
    assert hashlib.sha256(pedes).hexdigest() == _PEDES_TINY_SEED3_SHA256
