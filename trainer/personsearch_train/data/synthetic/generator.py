"""Presets and orchestration of the synthetic person-search data.

:func:`generate_dataset` plans every image first (who appears where, image sizes,
per-image seeds) from one seeded generator, renders the images in a process pool
(each image uses only its own seed, so the output does not depend on the number of
workers), then writes the annotation files from what was actually drawn::

    OUT/
      CUHK-SYSU/   Image/SSM/s{N}.jpg, annotation/{Images,pool}.mat,
                   annotation/test/train_test/{Train,TestG50..TestG4000}.mat,
                   person_masks/s{N}.png, CUHK-SYSU-TBPS_{train,test}.json
      PRW/         frames/c{cam}s{seq}_{frame:06d}.jpg, annotations/<frame>.jpg.mat,
                   frame_train.mat, frame_test.mat, query_info.txt,
                   person_masks/c{cam}s{seq}_{frame:06d}.png, PRW-TBPS_{train,test}.json
      PEDES/       reid_raw.json, imgs/synth/p{id:05d}_{k}.jpg
      UFine6926/   UFine6926.json, images/p{id:05d}_{k}.jpg: ultra-fine captions (about 80
                   words naming every drawn attribute), train/val/test with disjoint ids
      UFine3C/     UFine3C.json, images/{source}/p{id:05d}_{k}.jpg: the UFine6926 test ids
                   under three shifts, ``source`` = cross_domain (new renders, other
                   backgrounds and light), cross_granularity (the standard test images,
                   one-sentence coarse captions) or cross_style (the standard test images,
                   captions from templates never used in training)
      COCO/        annotations/instances_{train,val}2017.json, train2017/, val2017/
                   (the CUHK-SYSU scenes, every person boxed; hard links when possible)
      Market-1501/ bounding_box_train/, bounding_box_test/, query/: 64x128 crops of the
                   labelled PRW people, named {pid:04d}_c{cam}s{seq}_{frame:06d}_00.jpg
                   (the PRW frame's camera, sequence and frame number; the PRW query
                   boxes go to query/ only)
      synthetic_manifest.json

Person masks (``person_masks/``, train and test scenes of CUHK-SYSU and PRW only):
one uint8 PNG label map per scene image, 0 = background, ``k + 1`` = the ``k``-th
person of the image in annotation order (the order the readers return the boxes);
only the visible pixels of a person are labelled (occluders and nearer people cut
them). The full convention, including the reserved value 255, is in
:mod:`personsearch_train.data.person_masks`.

Sentence annotations for text-based person search (``*-TBPS_{train,test}.json``, the
layout of :mod:`personsearch_train.data.tbps`): the train file has one entry per labelled
person of each training image, the test file one per query; each entry holds the two
attribute captions of the person (:func:`describe_identity`, the PEDES captions), whose
``id`` is the person's id as the protocol files name it (CUHK-SYSU ``p{id}``, PRW's id).

CUHK-SYSU gallery sizes: ``TestG{N}.mat`` is written for every official N, but a
gallery cannot hold more images than the pool minus the query image, so each list has
``min(N, pool size - 1)`` entries; the manifest records the actual lengths.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from personsearch_train.atomic_files import atomic_write_bytes
from personsearch_train.data.person_masks import MAX_MASK_PERSONS, PERSON_MASK_DIR
from personsearch_train.data.synthetic.identities import (
    Identity,
    confusable_twin,
    describe_identity,
    sample_identities,
    sample_identity,
)
from personsearch_train.data.synthetic.scenes import ScenePlan, render_scene
from personsearch_train.data.synthetic.truth import (
    PedesTruth,
    PersonSearchTruth,
    QueryTruth,
    SceneTruth,
    UFineTruth,
)
from personsearch_train.data.synthetic.ultrafine_captions import (
    describe_coarse,
    describe_cross_style,
    describe_ultrafine,
)
from personsearch_train.data.synthetic.writers import (
    PRW_BOX_VARIABLES,
    encode_jpeg,
    write_coco,
    write_cuhk_sysu,
    write_json,
    write_pedes,
    write_prw,
    write_prw_frame,
    write_ufine,
)
from personsearch_train.data.tbps import TbpsEntry, write_tbps_json
from personsearch_train.errors import ConfigError, TrainerError

__all__ = [
    "GALLERY_SIZES",
    "GENERATOR_VERSION",
    "PRESETS",
    "UFINE3C_SOURCES",
    "Preset",
    "SyntheticManifest",
    "generate_dataset",
    "preset_spec",
    "tbps_entries",
]

#: Bumped whenever the same seed would produce different files.
GENERATOR_VERSION = "1"
#: The official CUHK-SYSU gallery sizes (``TestG{N}.mat``).
GALLERY_SIZES: tuple[int, ...] = (50, 100, 500, 1000, 2000, 4000)
#: Folders this generator owns inside ``out_dir`` (replaced on regeneration).
_OUTPUT_FOLDERS = ("CUHK-SYSU", "PRW", "PEDES", "COCO", "Market-1501", "UFine6926", "UFine3C")
#: The shifts of the UFine3C layout, in the order its entries are written.
UFINE3C_SOURCES: tuple[str, ...] = ("cross_domain", "cross_granularity", "cross_style")
_MANIFEST = "synthetic_manifest.json"
_MAX_PEOPLE = 8
_MARKET_SIZE = (64, 128)  # width, height of Market-1501 crops

# Dataset tags mixed into seeds so the datasets draw independent streams.
_CUHK, _PRW, _PEDES, _UFINE, _UFINE3C = 1, 2, 3, 4, 5
# The unlabelled crop set (unlabelled_crops.py) and the hybrid pre-training sub-task sets
# (subtask_sets.py); kept here so no two streams share a tag.
_UNLABELLED, _SUBTASK = 6, 7


@dataclass(frozen=True)
class Preset:
    """Size of a generated dataset.

    Attributes:
        name: Preset name.
        cuhk_train_scenes: CUHK-SYSU training images.
        cuhk_test_scenes: CUHK-SYSU test images (the pool).
        prw_train_frames: PRW training frames.
        prw_test_frames: PRW test frames.
        pedes_ids: ``(train, val, test)`` person counts of the PEDES layout (and of
            the UFine6926 layout, which draws its own people).
        pedes_images_per_id: ``(min, max)`` crops per PEDES (and UFine6926) person.
        max_side: Longest image side in pixels.
    """

    name: str
    cuhk_train_scenes: int
    cuhk_test_scenes: int
    prw_train_frames: int
    prw_test_frames: int
    pedes_ids: tuple[int, int, int]
    pedes_images_per_id: tuple[int, int]
    max_side: int


PRESETS: dict[str, Preset] = {
    "tiny": Preset("tiny", 60, 30, 60, 30, (30, 6, 12), (2, 2), 320),
    "small": Preset("small", 1500, 500, 1500, 500, (500, 60, 160), (2, 3), 640),
    "medium": Preset("medium", 6000, 2000, 6000, 2000, (2000, 200, 600), (2, 4), 640),
}


def preset_spec(name: str) -> Preset:
    """The :class:`Preset` called ``name``.

    Args:
        name: A key of :data:`PRESETS`.

    Returns:
        The preset.

    Raises:
        ConfigError: Unknown preset (the message lists the known ones).
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown synthetic preset {name!r}; choose one of {', '.join(PRESETS)}.")
    return PRESETS[name]


@dataclass(frozen=True, eq=False)
class SyntheticManifest:
    """What :func:`generate_dataset` wrote, with the in-memory ground truth.

    Attributes:
        root: The output folder.
        preset: Preset name.
        seed: Seed.
        version: :data:`GENERATOR_VERSION`.
        counts: Per dataset, named counts (images, boxes, labelled boxes, identities, queries...).
        gallery_lengths: CUHK-SYSU gallery size in the file name -> entries per gallery list.
        cuhk_sysu: Ground truth of ``CUHK-SYSU/``.
        prw: Ground truth of ``PRW/``.
        pedes: Entries of ``PEDES/reid_raw.json``.
        seconds: Wall time of the generation (not written to the manifest file, which
            must be identical for one seed).
        ufine6926: Entries of ``UFine6926/UFine6926.json``.
        ufine3c: Entries of ``UFine3C/UFine3C.json``.
        ufine_identities: Appearance of every UFine6926 id (UFine3C reuses the test ids).
    """

    root: Path
    preset: str
    seed: int
    version: str
    counts: dict[str, dict[str, int]]
    gallery_lengths: dict[int, int]
    cuhk_sysu: PersonSearchTruth
    prw: PersonSearchTruth
    pedes: tuple[PedesTruth, ...]
    seconds: float = 0.0
    ufine6926: tuple[UFineTruth, ...] = ()
    ufine3c: tuple[UFineTruth, ...] = ()
    ufine_identities: dict[int, Identity] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The content of ``synthetic_manifest.json``."""
        return {
            "generator": "personsearch synth",
            "generator_version": self.version,
            "preset": self.preset,
            "seed": self.seed,
            "counts": self.counts,
            "cuhk_sysu_gallery_lengths": {str(k): v for k, v in self.gallery_lengths.items()},
            "folders": {
                "cuhk_sysu": "CUHK-SYSU",
                "prw": "PRW",
                "pedes": "PEDES",
                "coco": "COCO",
                "market1501": "Market-1501",
                "ufine6926": "UFine6926",
                "ufine3c": "UFine3C",
            },
            # One PNG per scene image of these folders (see personsearch_train.data.person_masks).
            "person_masks": {
                "cuhk_sysu": f"CUHK-SYSU/{PERSON_MASK_DIR}",
                "prw": f"PRW/{PERSON_MASK_DIR}",
                "encoding": "uint8 PNG, 0 background, k+1 = k-th annotated box of the image",
            },
        }


# ----------------------------------------------------------------------------- planning


@dataclass
class _Scene:
    """A planned image, filled in with its boxes after rendering."""

    name: str
    split: str
    width: int
    height: int
    people: list[Identity]
    pids: list[int]
    seed: int
    background_seed: int
    camera: int = -1
    domain: str = "standard"  # rendering domain (scenes.DOMAINS)
    scale: str = "standard"  # person-height spread of street scenes (scenes.SCALES)
    image_path: Path | None = None  # None: rendered only for its crops, never written
    mask_path: Path | None = None  # person-mask PNG (scene formats only)
    crops: list[tuple[int, Path]] = field(default_factory=list)
    annotation: tuple[Path, str] | None = None  # PRW per-frame file and its variable name
    boxes: np.ndarray | None = None
    visibility: np.ndarray | None = None

    def index_of(self, key: int) -> int:
        return next(i for i, p in enumerate(self.people) if p.key == key)

    def truth(self) -> SceneTruth:
        assert self.boxes is not None and self.visibility is not None
        heights = self.boxes[:, 3] - self.boxes[:, 1]
        return SceneTruth(
            name=self.name,
            split=self.split,
            width=self.width,
            height=self.height,
            camera=self.camera,
            boxes=self.boxes,
            identities=np.asarray([p.key for p in self.people], dtype=np.int64),
            pids=np.asarray(self.pids, dtype=np.int64),
            hard=(self.visibility < 0.6) | (heights < 50),
            visibility=self.visibility,
        )


def _seed(*parts: int) -> int:
    """A 63-bit seed derived from the user seed and a path of indices."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint64)[0] >> 1)


class _Keys:
    """Hands out identity keys for one-off background people (never reused)."""

    def __init__(self, start: int) -> None:
        self.next = start

    def __call__(self) -> int:
        self.next += 1
        return self.next - 1


def _appearance_counts(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.clip(2 + rng.poisson(1.3, size=n), 2, 6)


def _assign(
    rng: np.random.Generator,
    identities: Sequence[Identity],
    n_scenes: int,
    cap: int,
) -> list[list[Identity]]:
    """Spread each identity over 2-6 distinct scenes (at most ``cap`` labelled per scene)."""
    scenes: list[list[Identity]] = [[] for _ in range(n_scenes)]
    free = list(range(n_scenes))  # scenes below the cap, in index order
    for identity, count in zip(identities, _appearance_counts(rng, len(identities)), strict=True):
        chosen = [free[int(j)] for j in rng.choice(len(free), size=min(int(count), len(free)), replace=False)]
        for i in chosen:
            scenes[i].append(identity)
        if any(len(scenes[i]) >= cap for i in chosen):
            free = [i for i in free if len(scenes[i]) < cap]
    return scenes


def _background_person(rng: np.random.Generator, keys: _Keys, labelled: Sequence[Identity]) -> Identity:
    """An unlabelled passer-by; often a near-twin of a labelled person to keep re-id hard."""
    if labelled and rng.random() < 0.2:
        return confusable_twin(rng, labelled[int(rng.integers(len(labelled)))], keys())
    return sample_identity(rng, keys())


def _populate(
    rng: np.random.Generator,
    labelled: list[Identity],
    extra: int,
    keys: _Keys,
    twins_of: Sequence[Identity],
) -> tuple[list[Identity], list[int]]:
    """Scene people (labelled + ``extra`` passers-by) in random order, with pids (-1 unlabelled)."""
    people = [(p, p.key) for p in labelled]
    people += [(_background_person(rng, keys, twins_of), -1) for _ in range(extra)]
    order = rng.permutation(len(people))
    return [people[i][0] for i in order], [people[i][1] for i in order]


def _mask_path(root: Path, image_name: str) -> Path:
    """Where the person mask of a scene image goes: ``root/person_masks/<image stem>.png``."""
    return root / PERSON_MASK_DIR / f"{Path(image_name).stem}.png"


def _cuhk_size(rng: np.random.Generator, max_side: int) -> tuple[int, int]:
    ratio = float(rng.choice([0.75, 0.5625, 0.667, 1.333], p=[0.4, 0.3, 0.2, 0.1]))
    if ratio > 1:
        return int(round(max_side / ratio / 2) * 2), max_side
    return max_side, int(round(max_side * ratio / 2) * 2)


@dataclass
class _CuhkPlan:
    scenes: list[_Scene]  # train scenes, then test scenes in pool order
    image_order: list[str]  # Images.mat order: by image number
    queries: list[tuple[int, int]]  # (identity key, test scene index)
    distractors: list[list[int]]  # per query: pool indices of negatives, in draw order
    identities: dict[int, Identity]


def _plan_cuhk(preset: Preset, seed: int, root: Path) -> _CuhkPlan:
    rng = np.random.default_rng([seed, _CUHK])
    n_tr, n_te = preset.cuhk_train_scenes, preset.cuhk_test_scenes
    # About 1.35 labelled boxes per image and ~4.7 people per image: ~70 % unlabelled, as in the real set.
    n_tr_ids = max(3, round(1.35 * n_tr / 3.3))
    n_te_ids = max(3, round(1.35 * n_te / 3.3))
    labelled = sample_identities(rng, n_tr_ids + n_te_ids, first_key=1)
    train_ids, test_ids = labelled[:n_tr_ids], labelled[n_tr_ids:]
    keys = _Keys(100_000)
    numbers = rng.permutation(n_tr + n_te) + 1
    scenes: list[_Scene] = []
    for split, ids, count in (("train", train_ids, n_tr), ("test", test_ids, n_te)):
        for members in _assign(rng, ids, count, cap=5):
            index = len(scenes)
            total = int(rng.integers(max(1, len(members)), _MAX_PEOPLE + 1))
            people, pids = _populate(rng, members, total - len(members), keys, labelled)
            width, height = _cuhk_size(rng, preset.max_side)
            name = f"s{numbers[index]}.jpg"
            scenes.append(
                _Scene(
                    name=name,
                    split=split,
                    width=width,
                    height=height,
                    people=people,
                    pids=pids,
                    seed=_seed(seed, _CUHK, index),
                    background_seed=_seed(seed, _CUHK, index, 1),
                    image_path=root / "Image" / "SSM" / name,
                    mask_path=_mask_path(root, name),
                )
            )
    # A training identity needs two images to be learnable and a test identity a query
    # plus a gallery occurrence; one seen once (only if scenes ran out) stays unlabelled.
    seen: dict[int, int] = {}
    for s in scenes:
        for pid in s.pids:
            seen[pid] = seen.get(pid, 0) + 1
    for s in scenes:
        s.pids = [pid if pid < 0 or seen[pid] >= 2 else -1 for pid in s.pids]
    test = [s for s in scenes if s.split == "test"]
    queries, distractors = [], []
    for identity in test_ids:
        holding = [i for i, s in enumerate(test) if identity.key in s.pids]
        if len(holding) < 2:
            continue
        queries.append((identity.key, int(rng.choice(holding))))
        negatives = np.asarray([i for i in range(len(test)) if i not in holding])
        distractors.append([int(i) for i in rng.permutation(negatives)])
    image_order = [s.name for s in sorted(scenes, key=lambda s: int(s.name[1:-4]))]
    identities = {p.key: p for s in scenes for p in s.people}
    return _CuhkPlan(scenes, image_order, queries, distractors, identities)


@dataclass
class _PrwPlan:
    train: list[_Scene]
    test: list[_Scene]
    queries: list[tuple[int, int]]  # (pid, test frame index)
    box_variables: dict[str, str]
    identities: dict[int, Identity]


def _plan_prw(preset: Preset, seed: int, root: Path) -> _PrwPlan:
    rng = np.random.default_rng([seed, _PRW])
    n_cams = 6
    width = preset.max_side
    height = int(round(preset.max_side * 0.5625 / 2) * 2)
    total = preset.prw_train_frames + preset.prw_test_frames
    cameras = rng.integers(1, n_cams + 1, size=total)
    splits = np.asarray(["train"] * preset.prw_train_frames + ["test"] * preset.prw_test_frames)
    splits = splits[rng.permutation(total)]
    # Frame names: per camera a running frame number, split into up to 3 sequences.
    names = [""] * total
    for cam in range(1, n_cams + 1):
        idx = np.flatnonzero(cameras == cam)
        numbers = np.cumsum(rng.integers(20, 80, size=len(idx)))
        for j, (i, number) in enumerate(zip(idx, numbers, strict=True)):
            seq = 1 + (3 * j) // max(1, len(idx))
            names[int(i)] = f"c{cam}s{seq}_{int(number):06d}.jpg"

    n_ids = {s: max(3, round(2.4 * int((splits == s).sum()) / 4.5)) for s in ("train", "test")}
    identities = sample_identities(rng, n_ids["train"] + n_ids["test"], first_key=1)
    train_keys = set(rng.permutation(len(identities))[: n_ids["train"]] + 1)
    members: dict[int, list[Identity]] = {i: [] for i in range(total)}
    frames_of = {
        (split, c): np.flatnonzero((cameras == c) & (splits == split)).tolist()
        for split in ("train", "test")
        for c in range(1, n_cams + 1)
    }
    for identity in identities:
        split = "train" if identity.key in train_keys else "test"
        by_cam = {c: frames_of[(split, c)] for c in range(1, n_cams + 1)}
        usable = [c for c, frames in by_cam.items() if frames]
        lo = 2 if split == "test" else 1
        n_visit = min(len(usable), int(rng.integers(lo, 5)))
        visited = rng.choice(usable, size=n_visit, replace=False) if n_visit else []
        for c in visited:
            want = int(rng.integers(2 if n_visit == 1 else 1, 4))
            frames = by_cam[int(c)]
            for i in rng.choice(frames, size=min(want, len(frames)), replace=False):
                members[int(i)].append(identity)
            # A frame with 5 labelled people takes no more.
            frames_of[(split, int(c))] = [i for i in frames if len(members[i]) < 5]

    keys = _Keys(100_000)
    scenes = []
    box_variables: dict[str, str] = {}
    for i in range(total):
        extra = int(rng.integers(0, 3))
        extra = max(extra, 1 - len(members[i]))
        extra = min(extra, _MAX_PEOPLE - len(members[i]))
        people, pids = _populate(rng, members[i], extra, keys, identities)
        scene = _Scene(
            name=names[i],
            split=str(splits[i]),
            width=width,
            height=height,
            people=people,
            pids=pids,
            seed=_seed(seed, _PRW, i),
            # One fixed background per camera: the camera's view.
            background_seed=_seed(seed, _PRW, 1_000_000 + int(cameras[i])),
            camera=int(cameras[i]),
            image_path=root / "frames" / names[i],
            mask_path=_mask_path(root, names[i]),
        )
        # Every variable name occurs: the first three frames use one each.
        box_variables[names[i]] = (
            PRW_BOX_VARIABLES[i] if i < 3 else str(rng.choice(PRW_BOX_VARIABLES, p=[0.7, 0.15, 0.15]))
        )
        scene.annotation = (root / "annotations" / f"{names[i]}.mat", box_variables[names[i]])
        scenes.append(scene)
    train = sorted((s for s in scenes if s.split == "train"), key=lambda s: s.name)
    test = sorted((s for s in scenes if s.split == "test"), key=lambda s: s.name)

    queries = []
    for identity in identities:
        if identity.key in train_keys:
            continue
        holding = [j for j, s in enumerate(test) if identity.key in s.pids]
        cams = sorted({test[j].camera for j in holding})
        if len(cams) < 2:
            continue  # the query person must be findable in another camera
        n_queries = 2 if len(cams) >= 3 and rng.random() < 0.5 else 1
        for cam in sorted(int(c) for c in rng.choice(cams, size=n_queries, replace=False)):
            queries.append((identity.key, int(rng.choice([j for j in holding if test[j].camera == cam]))))
    return _PrwPlan(train, test, queries, box_variables, {p.key: p for s in scenes for p in s.people})


def _crop_split(key: int, counts: tuple[int, int, int]) -> str:
    """Split of the text-person identity ``key`` (1-based): train, then val, then test keys."""
    n_train, n_val, _ = counts
    return "train" if key <= n_train else "val" if key <= n_train + n_val else "test"


def _crop_scene(
    identity: Identity,
    *,
    name: str,
    split: str,
    size: tuple[int, int],
    seed: int,
    stream: int,
    index: int,
    image_path: Path,
    domain: str = "standard",
) -> _Scene:
    """A one-person crop image (text-person layouts), seeded by ``(seed, stream, index)``.

    Args:
        identity: The person drawn.
        name: The image's name in its annotation file.
        split: ``train``, ``val`` or ``test``.
        size: ``(width, height)`` in pixels.
        seed: The dataset seed.
        stream: The layout's seed stream (``_PEDES``, ``_UFINE``, ...).
        index: The image's position in its stream.
        image_path: Where the image is written.
        domain: Rendering domain (``scenes.DOMAINS``).
    """
    width, height = size
    return _Scene(
        name=name,
        split=split,
        width=width,
        height=height,
        people=[identity],
        pids=[identity.key],
        seed=_seed(seed, stream, index),
        background_seed=_seed(seed, stream, index, 1),
        image_path=image_path,
        domain=domain,
    )


def _plan_pedes(preset: Preset, seed: int, root: Path) -> tuple[list[_Scene], list[PedesTruth]]:
    rng = np.random.default_rng([seed, _PEDES])
    identities = sample_identities(rng, sum(preset.pedes_ids), first_key=1)
    scenes, entries = [], []
    lo, hi = preset.pedes_images_per_id
    for identity in identities:
        k = identity.key
        split = _crop_split(k, preset.pedes_ids)
        captions = tuple(describe_identity(identity))
        for j in range(int(rng.integers(lo, hi + 1))):
            height = int(rng.integers(128, min(256, preset.max_side) + 1))
            width = int(round(height * rng.uniform(0.36, 0.48)))
            file_path = f"synth/p{k:05d}_{j}.jpg"
            scenes.append(
                _crop_scene(
                    identity,
                    name=file_path,
                    split=split,
                    size=(width, height),
                    seed=seed,
                    stream=_PEDES,
                    index=len(scenes),
                    image_path=root / "imgs" / file_path,
                )
            )
            entries.append(PedesTruth(split=split, id=k, file_path=file_path, captions=captions))
    return scenes, entries


@dataclass
class _UFinePlan:
    scenes: list[_Scene]  # UFine6926 renders, then the UFine3C cross-domain renders
    ufine6926: list[UFineTruth]
    ufine3c: list[UFineTruth]
    links: list[tuple[Path, Path]]  # (UFine6926 test image, its UFine3C copy)
    identities: dict[int, Identity]


def _crop_size(rng: np.random.Generator, max_side: int) -> tuple[int, int]:
    """Width and height of an ultra-fine crop: taller than the PEDES crops, for the finer detail."""
    height = int(rng.integers(160, min(320, max_side) + 1))
    return int(round(height * rng.uniform(0.36, 0.48))), height


def _plan_ufine(preset: Preset, seed: int, root: Path, root_3c: Path) -> _UFinePlan:
    """Plan UFine6926 (its own people, disjoint per split) and UFine3C (its test people, three shifts)."""
    rng = np.random.default_rng([seed, _UFINE])
    # Captions draw from their own stream, so rewording never moves an image.
    text_rng = np.random.default_rng([seed, _UFINE, 1])
    identities = sample_identities(rng, sum(preset.pedes_ids), first_key=1)
    lo, hi = preset.pedes_images_per_id
    scenes: list[_Scene] = []
    entries: list[UFineTruth] = []
    for identity in identities:
        k = identity.key
        split = _crop_split(k, preset.pedes_ids)
        for j in range(int(rng.integers(lo, hi + 1))):
            file_path = f"images/p{k:05d}_{j}.jpg"
            scenes.append(
                _crop_scene(
                    identity,
                    name=file_path,
                    split=split,
                    size=_crop_size(rng, preset.max_side),
                    seed=seed,
                    stream=_UFINE,
                    index=len(scenes),
                    image_path=root / file_path,
                )
            )
            captions = tuple(describe_ultrafine(identity, text_rng))
            entries.append(UFineTruth(split=split, id=k, file_path=file_path, captions=captions))

    by_key = {p.key: p for p in identities}
    test_entries = [e for e in entries if e.split == "test"]
    rng_3c = np.random.default_rng([seed, _UFINE3C])
    text_3c = np.random.default_rng([seed, _UFINE3C, 1])
    shifted: list[UFineTruth] = []
    links: list[tuple[Path, Path]] = []
    for source in UFINE3C_SOURCES:
        for entry in test_entries:
            identity = by_key[entry.id]
            file_path = f"images/{source}/{Path(entry.file_path).name}"
            if source == "cross_domain":
                # New renders of the same person under another domain, described as in training.
                scenes.append(
                    _crop_scene(
                        identity,
                        name=file_path,
                        split="test",
                        size=_crop_size(rng_3c, preset.max_side),
                        seed=seed,
                        stream=_UFINE3C,
                        index=len(shifted),
                        image_path=root_3c / file_path,
                        domain="shifted",
                    )
                )
                captions = describe_ultrafine(identity, text_3c)
            else:
                links.append((root / entry.file_path, root_3c / file_path))
                coarse = source == "cross_granularity"
                captions = (describe_coarse if coarse else describe_cross_style)(identity, text_3c)
            shifted.append(
                UFineTruth(
                    split="test", id=entry.id, file_path=file_path, captions=tuple(captions), source=source
                )
            )
    return _UFinePlan(scenes, entries, shifted, links, by_key)


# ----------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class _Job:
    plan: ScenePlan
    image_path: Path | None  # None: the image only feeds its crops
    mask_path: Path | None
    crops: tuple[tuple[int, Path], ...]
    annotation: tuple[Path, str, tuple[int, ...]] | None


def _encode_person_mask(owner: np.ndarray) -> bytes:
    """PNG bytes of the label map of a rendered scene.

    Args:
        owner: ``[H, W]`` int32, plan index of the person seen at each pixel, -1 elsewhere
            (:attr:`RenderedScene.owner`).

    Returns:
        A single-channel uint8 PNG: 0 background, ``k + 1`` person ``k``.
    """
    if int(owner.max(initial=-1)) >= MAX_MASK_PERSONS:
        raise ValueError(f"a person mask tells at most {MAX_MASK_PERSONS} people apart")
    ok, png = cv2.imencode(".png", (owner + 1).astype(np.uint8))
    if not ok:
        raise TrainerError("OpenCV could not encode a person mask as PNG")
    return png.tobytes()


def _run_job(job: _Job) -> tuple[np.ndarray, np.ndarray]:
    """Render and write one image with its person mask, crops and PRW box file; return boxes, visibility."""
    rendered = render_scene(job.plan)
    if job.image_path is not None:
        quality = int(np.random.default_rng([job.plan.seed, 7]).integers(75, 96))
        atomic_write_bytes(job.image_path, encode_jpeg(rendered.image, quality), sync=False)
    if job.mask_path is not None:
        atomic_write_bytes(job.mask_path, _encode_person_mask(rendered.owner), sync=False)
    for index, path in job.crops:
        x1, y1, x2, y2 = (int(v) for v in rendered.boxes[index])
        crop = cv2.resize(rendered.image[y1:y2, x1:x2], _MARKET_SIZE, interpolation=cv2.INTER_AREA)
        atomic_write_bytes(path, encode_jpeg(crop, 95), sync=False)
    if job.annotation is not None:
        path, variable, pids = job.annotation
        write_prw_frame(path, variable, rendered.boxes, np.asarray(pids, dtype=np.int64))
    return rendered.boxes, rendered.visibility


def _init_worker() -> None:
    # One process per core already; OpenCV's own threads would only contend.
    cv2.setNumThreads(1)


def spawn_render_pool(stack: contextlib.ExitStack, workers: int) -> ProcessPoolExecutor | None:
    """Rendering processes for ``workers > 1`` (None for one), closed with ``stack``.

    Processes are *spawned*, not forked: a forked child would inherit the parent's
    OpenCV and BLAS thread pools in whatever state they were.

    Args:
        stack: Owns the pool's lifetime.
        workers: Number of processes.
    """
    if workers <= 1:
        return None
    return stack.enter_context(
        ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker
        )
    )


def _render_all(scenes: Sequence[_Scene], styles: Sequence[str], map_fn: Callable[..., Any]) -> None:
    jobs = [
        _Job(
            plan=ScenePlan(
                width=s.width,
                height=s.height,
                people=tuple(s.people),
                seed=s.seed,
                background_seed=s.background_seed,
                style=style,
                domain=s.domain,
                scale=s.scale,
            ),
            image_path=s.image_path,
            mask_path=s.mask_path,
            crops=tuple(s.crops),
            annotation=None if s.annotation is None else (*s.annotation, tuple(s.pids)),
        )
        for s, style in zip(scenes, styles, strict=True)
    ]
    results = list(map_fn(_run_job, jobs))
    for scene, (boxes, visibility) in zip(scenes, results, strict=True):
        scene.boxes, scene.visibility = boxes, visibility


# ----------------------------------------------------------------------------- assembly


def _cuhk_truth(plan: _CuhkPlan, root: Path) -> tuple[PersonSearchTruth, list[bool]]:
    position = {name: i for i, name in enumerate(plan.image_order)}
    train = sorted((s for s in plan.scenes if s.split == "train"), key=lambda s: position[s.name])
    test = [s for s in plan.scenes if s.split == "test"]  # planned in pool order
    queries, hard = [], []
    galleries: dict[int, list[tuple[tuple[str, np.ndarray | None], ...]]] = {n: [] for n in GALLERY_SIZES}
    for (key, q_index), negatives in zip(plan.queries, plan.distractors, strict=True):
        scene = test[q_index]
        person = scene.index_of(key)
        assert scene.boxes is not None
        queries.append(QueryTruth(name=scene.name, box=scene.boxes[person].copy(), pid=key))
        hard.append(bool(scene.truth().hard[person]))
        positives = []
        for i, other in enumerate(test):
            if i != q_index and key in other.pids:
                assert other.boxes is not None
                positives.append((other.name, other.boxes[other.index_of(key)].copy()))
        for size in GALLERY_SIZES:
            length = min(size, len(test) - 1)
            entries: list[tuple[str, np.ndarray | None]] = list(positives)
            entries += [(test[i].name, None) for i in negatives[: length - len(positives)]]
            galleries[size].append(tuple(entries))
    truth = PersonSearchTruth(
        dataset="cuhk_sysu",
        root=root,
        train=tuple(s.truth() for s in train),
        test=tuple(s.truth() for s in test),
        queries=tuple(queries),
        galleries={n: tuple(g) for n, g in galleries.items()},
        identities=plan.identities,
    )
    return truth, hard


def _prw_truth(plan: _PrwPlan, root: Path) -> PersonSearchTruth:
    queries = []
    for key, j in plan.queries:
        scene = plan.test[j]
        assert scene.boxes is not None
        queries.append(
            QueryTruth(
                name=scene.name, box=scene.boxes[scene.index_of(key)].copy(), pid=key, camera=scene.camera
            )
        )
    return PersonSearchTruth(
        dataset="prw",
        root=root,
        train=tuple(s.truth() for s in plan.train),
        test=tuple(s.truth() for s in plan.test),
        queries=tuple(queries),
        identities=plan.identities,
    )


def tbps_entries(truth: PersonSearchTruth, split: str) -> list[TbpsEntry]:
    """The sentence annotations of a person-search set's train or test split.

    Args:
        truth: The CUHK-SYSU or PRW ground truth.
        split: ``"train"``: one entry per labelled person of each training image, in file
            order; ``"test"``: one entry per query, in query order.

    Returns:
        Entries naming the scene image, the person's id (the identity key, the number
        of the CUHK-SYSU ``idname`` and the PRW id) and the two attribute captions.
    """

    def entry(image: str, pid: int) -> TbpsEntry:
        return TbpsEntry(pic_path=image, pid=pid, sentences=tuple(describe_identity(truth.identities[pid])))

    if split == "test":
        return [entry(q.name, int(q.pid)) for q in truth.queries]
    return [entry(scene.name, int(pid)) for scene in truth.train for pid in scene.pids if pid >= 0]


def _write_tbps(root: Path, stem: str, truth: PersonSearchTruth) -> None:
    """Write ``<root>/<stem>_train.json`` and ``<stem>_test.json``."""
    for split in ("train", "test"):
        write_tbps_json(root / f"{stem}_{split}.json", tbps_entries(truth, split))


def _market_crops(plan: _PrwPlan, root: Path) -> None:
    """Attach Market-1501 crop outputs to the PRW frames (pid, camera, sequence, frame in the name)."""
    query_people = {(plan.test[j].name, key) for key, j in plan.queries}
    for folder, frames in (("bounding_box_train", plan.train), ("bounding_box_test", plan.test)):
        for scene in frames:
            cam_seq, frame = scene.name[: -len(".jpg")].split("_")
            for index, pid in enumerate(scene.pids):
                if pid < 0:
                    continue
                sub = "query" if (scene.name, pid) in query_people else folder
                scene.crops.append((index, root / sub / f"{pid:04d}_{cam_seq}_{frame}_00.jpg"))


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _prepare_output(
    out_dir: Path, folders: Sequence[str] = _OUTPUT_FOLDERS, manifest: str = _MANIFEST
) -> None:
    """Create ``out_dir``, or clear a previous or interrupted set in it; refuse foreign folders.

    Args:
        out_dir: The output folder.
        folders: The folders the generator owns in it (removed).
        manifest: The manifest file, written last by the generator (removed last).

    Raises:
        TrainerError: ``out_dir`` is a file, or a non-empty folder holding neither
            ``manifest`` nor only ``folders``.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise TrainerError(f"{out_dir}: exists and is not a folder. Choose another --out.")
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = {p.name for p in out_dir.iterdir()}
    # The manifest is written last, so a folder holding only our output folders is a
    # generation that was interrupted (Ctrl-C, full disk): ours to clear, not the user's.
    interrupted = bool(entries) and entries <= set(folders)
    if entries and manifest not in entries and not interrupted:
        raise TrainerError(
            f"{out_dir}: folder is not empty and holds no {manifest}; refusing to write a synthetic "
            "set into it. Choose an empty or new folder for --out."
        )
    for name in (*folders, manifest):
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _counts(truth: PersonSearchTruth) -> dict[str, int]:
    scenes = (*truth.train, *truth.test)
    return {
        "train_images": len(truth.train),
        "test_images": len(truth.test),
        "boxes": int(sum(len(s.boxes) for s in scenes)),
        "labelled_boxes": int(sum(int((s.pids >= 0).sum()) for s in scenes)),
        "train_identities": len({int(p) for s in truth.train for p in s.pids if p >= 0}),
        "test_identities": len({int(p) for s in truth.test for p in s.pids if p >= 0}),
        "queries": len(truth.queries),
    }


def _text_counts(entries: Sequence[UFineTruth]) -> dict[str, int]:
    """Manifest counts of a UFine layout: totals, then images per split or per UFine3C source."""
    out = {
        "images": len(entries),
        "captions": sum(len(e.captions) for e in entries),
        "identities": len({e.id for e in entries}),
    }
    for key in sorted({e.source or e.split for e in entries}):
        out[f"{key}_images"] = sum(1 for e in entries if (e.source or e.split) == key)
    return out


def generate_dataset(
    out_dir: Path,
    preset: str = "tiny",
    seed: int = 0,
    *,
    workers: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> SyntheticManifest:
    """Generate the synthetic person-search data in every layout under ``out_dir``.

    The same ``(preset, seed)`` gives byte-identical annotation files and images,
    whatever the number of workers.

    Args:
        out_dir: Output folder; created if missing. If it holds a previous synthetic
            set (a ``synthetic_manifest.json``), that set is replaced.
        preset: ``"tiny"``, ``"small"`` or ``"medium"`` (see :data:`PRESETS`).
        seed: Seed of everything drawn.
        workers: Rendering processes; None picks 1 for small jobs, else the CPUs
            available to this process. Worker processes are *spawned*, so a script
            that calls this with several workers must do so under
            ``if __name__ == "__main__":``.
        progress: Called with a short message at each stage (e.g. ``print``).

    Returns:
        The :class:`SyntheticManifest`, including the ground truth of every image.

    Raises:
        ConfigError: Unknown preset.
        TrainerError: ``out_dir`` is a non-empty folder not made by this generator.
    """
    spec = preset_spec(preset)
    started = time.perf_counter()
    out_dir = Path(out_dir).expanduser().resolve()
    say = progress or (lambda message: None)
    _prepare_output(out_dir)
    cuhk_root, prw_root, pedes_root = out_dir / "CUHK-SYSU", out_dir / "PRW", out_dir / "PEDES"

    say("planning scenes")
    cuhk = _plan_cuhk(spec, seed, cuhk_root)
    prw = _plan_prw(spec, seed, prw_root)
    _market_crops(prw, out_dir / "Market-1501")
    pedes_scenes, pedes_entries = _plan_pedes(spec, seed, pedes_root)
    ufine_root, ufine3c_root = out_dir / "UFine6926", out_dir / "UFine3C"
    ufine = _plan_ufine(spec, seed, ufine_root, ufine3c_root)

    # Every image renders from its own seeds only, so appending layouts leaves the others unchanged.
    crops = [*pedes_scenes, *ufine.scenes]
    scenes = [*cuhk.scenes, *prw.train, *prw.test, *crops]
    styles = ["street"] * (len(scenes) - len(crops)) + ["crop"] * len(crops)
    if workers is None:
        workers = 1 if len(scenes) < 400 else len(os.sched_getaffinity(0))
    with contextlib.ExitStack() as stack:
        render_map: Callable[..., Any] = map
        write_map: Callable[..., Any] = map
        pool = spawn_render_pool(stack, workers)
        if pool is not None:
            render_map = functools.partial(pool.map, chunksize=8)
            write_map = pool.map
        say(f"rendering {len(scenes)} images with {workers} worker(s)")
        _render_all(scenes, styles, render_map)
        say("writing annotations")
        cuhk_truth, query_hard = _cuhk_truth(cuhk, cuhk_root)
        write_cuhk_sysu(cuhk_root, cuhk_truth, cuhk.image_order, query_hard, map_fn=write_map)
    prw_truth = _prw_truth(prw, prw_root)
    write_prw(prw_root, prw_truth, prw.box_variables, frame_files=False)
    _write_tbps(cuhk_root, "CUHK-SYSU-TBPS", cuhk_truth)
    _write_tbps(prw_root, "PRW-TBPS", prw_truth)
    write_pedes(pedes_root, pedes_entries)
    for source, target in ufine.links:
        _link_or_copy(source, target)
    write_ufine(ufine_root / "UFine6926.json", ufine.ufine6926)
    write_ufine(ufine3c_root / "UFine3C.json", ufine.ufine3c)
    coco_root = out_dir / "COCO"
    for split, folder, scenes_of in (
        ("train", "train2017", cuhk_truth.train),
        ("val", "val2017", cuhk_truth.test),
    ):
        for scene in scenes_of:
            _link_or_copy(cuhk_root / "Image" / "SSM" / scene.name, coco_root / folder / scene.name)
        write_coco(coco_root / "annotations" / f"instances_{split}2017.json", scenes_of)

    market = {
        sub: len(list((out_dir / "Market-1501" / sub).glob("*.jpg")))
        for sub in ("bounding_box_train", "bounding_box_test", "query")
    }
    counts = {
        "cuhk_sysu": _counts(cuhk_truth),
        "prw": _counts(prw_truth),
        "pedes": {
            "images": len(pedes_entries),
            "captions": sum(len(e.captions) for e in pedes_entries),
            "identities": len({e.id for e in pedes_entries}),
        },
        "coco": {
            "train_images": len(cuhk_truth.train),
            "val_images": len(cuhk_truth.test),
            "person_boxes": _counts(cuhk_truth)["boxes"],
        },
        "market1501": market,
        "ufine6926": _text_counts(ufine.ufine6926),
        "ufine3c": _text_counts(ufine.ufine3c),
    }
    gallery_lengths = {n: min(n, len(cuhk_truth.test) - 1) for n in GALLERY_SIZES}
    manifest = SyntheticManifest(
        root=out_dir,
        preset=preset,
        seed=seed,
        version=GENERATOR_VERSION,
        counts=counts,
        gallery_lengths=gallery_lengths,
        cuhk_sysu=cuhk_truth,
        prw=prw_truth,
        pedes=tuple(pedes_entries),
        ufine6926=tuple(ufine.ufine6926),
        ufine3c=tuple(ufine.ufine3c),
        ufine_identities=ufine.identities,
    )
    write_json(out_dir / _MANIFEST, manifest.to_json())
    return dataclasses.replace(manifest, seconds=time.perf_counter() - started)
