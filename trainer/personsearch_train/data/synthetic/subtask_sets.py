"""Synthetic sub-task data for hybrid person-search pre-training (PPS).

Hybrid pre-training ("Divide and Conquer", Tian et al., AAAI 2024) pre-trains a one-step
person-search model on data of its two *sub-tasks* only (pedestrian detection and re-id,
labelled or not), because no large person-search set exists, and then fine-tunes on
CUHK-SYSU or PRW. :func:`generate_subtask_sets` renders the synthetic stand-ins::

    OUT/
      COCO/                 detection only: train2017/{image_id:012d}.jpg and
                            annotations/instances_train2017.json (person boxes, no
                            identities), the layout of the full set's COCO folder; the
                            stand-in for CrowdHuman / CityPersons / COCO persons. Crowded
                            street scenes (2 to 10 people, each drawn once).
      Market-1501/          labelled re-id crops: bounding_box_train/
                            {pid:04d}_c{cam}s1_{frame:06d}_{k:02d}.jpg, 64x128, cut from
                            street frames of 6 cameras (each camera its own view); every
                            identity is seen by 2 or 3 cameras, 1 or 2 times each. The
                            frames themselves are not written (Market-1501 has none).
      LUPerson-synthetic/   unlabelled crops (:mod:`.unlabelled_crops`, with its own
                            manifest and evaluation-only attribute truth).
      synthetic_subtask_manifest.json   counts, seeds, target, style, rejections (written last)

``bounding_box_test/`` and ``query/`` are not written: pre-training only trains on
``bounding_box_train``, and the pre-trained model is evaluated on the target set.

Why the people differ. The *target* is the synthetic set the pre-trained model is
fine-tuned and tested on, named by its preset and seed. Real sub-task data never contains
the CUHK-SYSU or PRW people, so none of the people drawn here (labelled, passer-by or
unlabelled) has the appearance (:func:`.target_people.appearance_key`) of anyone in the
target's CUHK-SYSU, PRW (labelled or passer-by), PEDES or UFine6926/UFine3C layouts;
look-alikes are drawn, dropped and counted in the manifest. Otherwise a gain from
pre-training could be memorised test people.

Why the style differs. Real sub-task sets also look different from the target (other
cities, cameras and light), which is what pre-training has to bridge. Every image is
rendered in the ``"shifted"`` domain of :mod:`.scenes` (the one UFine3C's cross-domain
split uses: other facade and ground palettes, dim tinted light, a softer lens) and the
detection scenes in the ``"wide"`` person-height spread (16 px to 0.9 of the image
height instead of 40 px to 0.7), so pre-training sees neither the target's people nor its
exact look. A model pre-trained here has seen the UFine3C cross-domain *style* (not its
people), so do not use it to measure UFine3C cross-domain generalisation.

The same arguments give byte-identical files whatever the number of workers: everything
is planned from seeded streams first, and each image renders from its own seeds only.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from personsearch_train.data.synthetic.generator import (
    _SUBTASK,
    GENERATOR_VERSION,
    Preset,
    _cuhk_size,
    _prepare_output,
    _render_all,
    _Scene,
    _seed,
    preset_spec,
    spawn_render_pool,
)
from personsearch_train.data.synthetic.identities import Identity
from personsearch_train.data.synthetic.target_people import (
    ALL_LAYOUTS,
    sample_disjoint_identities,
    target_appearances,
)
from personsearch_train.data.synthetic.truth import SceneTruth
from personsearch_train.data.synthetic.unlabelled_crops import (
    UNLABELLED_FOLDER,
    UnlabelledCropsManifest,
    generate_unlabelled_crops,
)
from personsearch_train.data.synthetic.writers import write_coco, write_json
from personsearch_train.errors import ConfigError

__all__ = [
    "DETECTION_FOLDER",
    "MANIFEST_NAME",
    "REID_FOLDER",
    "STYLE",
    "SubtaskSetsManifest",
    "SubtaskSizes",
    "generate_subtask_sets",
    "subtask_sizes",
]

#: Detection-only scenes (COCO layout).
DETECTION_FOLDER = "COCO"
#: Labelled re-id crops (Market-1501 layout).
REID_FOLDER = "Market-1501"
#: The manifest, written last: its presence marks a complete set.
MANIFEST_NAME = "synthetic_subtask_manifest.json"
#: How the sets are rendered, against the target's ``"standard"`` domain and spread
#: (recorded in the manifest). Re-id frames keep the standard spread: their crops are
#: resized to 64x128 anyway, and 16-pixel people would only give unreadable crops. The
#: unlabelled crops are single-person crops ("crop"), which always fill their height.
STYLE: dict[str, Any] = {
    "domain": "shifted",
    "scale": {DETECTION_FOLDER: "wide", REID_FOLDER: "standard", UNLABELLED_FOLDER: "crop"},
    "target": {"domain": "standard", "scale": "standard"},
}
_FOLDERS = (DETECTION_FOLDER, REID_FOLDER, UNLABELLED_FOLDER)
_ANNOTATIONS = f"{DETECTION_FOLDER}/annotations/instances_train2017.json"
# Sub-streams of the _SUBTASK seed tag, one per set, so resizing one set leaves the others unchanged.
_DETECTION, _REID = 1, 2
_CAMERAS = 6
_DETECTION_PEOPLE = (2, 10)  # people per detection scene, inclusive
_PASSER_KEYS = 100_000  # keys of re-id passers-by, apart from the pids 1..K


@dataclass(frozen=True)
class SubtaskSizes:
    """How much of each sub-task set to draw.

    Attributes:
        detection_images: Scenes of the COCO folder.
        reid_identities: Labelled identities of the Market-1501 folder (each gives 2 to 6 crops).
        unlabelled_crops: Crops of the LUPerson-synthetic folder.
    """

    detection_images: int
    reid_identities: int
    unlabelled_crops: int


def subtask_sizes(spec: Preset) -> SubtaskSizes:
    """The default sizes for a target preset: they scale with its training sets.

    Args:
        spec: The target's preset.

    Returns:
        0.4 detection scenes per CUHK-SYSU training scene, 0.4 re-id identities per
        PEDES training identity and 2/3 unlabelled crops per CUHK-SYSU training scene
        (``tiny``: 24 / 12 / 40, ``small``: 600 / 200 / 1000).
    """
    return SubtaskSizes(
        detection_images=max(4, round(0.4 * spec.cuhk_train_scenes)),
        reid_identities=max(4, round(0.4 * spec.pedes_ids[0])),
        unlabelled_crops=max(4, round(2 * spec.cuhk_train_scenes / 3)),
    )


@dataclass(frozen=True, eq=False)
class SubtaskSetsManifest:
    """What :func:`generate_subtask_sets` wrote, with the in-memory ground truth.

    Attributes:
        root: The output folder.
        preset: Preset of the target set (it also sized these sets).
        seed: Seed of these sets.
        target_seed: Seed of the target set.
        sizes: The sizes drawn.
        counts: Per folder, named counts (images, boxes, crops, identities, cameras...).
        rejected_identities: Per folder, drawn people dropped because they looked like a target person.
        detection: Ground truth of the COCO scenes, in file order (``identities`` holds
            the drawn person's key; ``pids`` are all -1, as nobody is labelled).
        detection_people: Everyone drawn in the COCO scenes.
        reid_identities: Market-1501 pid -> the person its crops show.
        reid_passers_by: The unlabelled people of the re-id frames (seen at the edges of crops).
        unlabelled: The LUPerson-synthetic manifest.
        seconds: Wall time (not written to the manifest file, which must be reproducible).
    """

    root: Path
    preset: str
    seed: int
    target_seed: int
    sizes: SubtaskSizes
    counts: dict[str, dict[str, int]]
    rejected_identities: dict[str, int]
    detection: tuple[SceneTruth, ...]
    detection_people: tuple[Identity, ...]
    reid_identities: dict[int, Identity]
    reid_passers_by: tuple[Identity, ...]
    unlabelled: UnlabelledCropsManifest
    seconds: float = 0.0

    @property
    def annotation_path(self) -> Path:
        """The COCO annotation file (read it with ``load_coco_persons(path, root / "COCO/train2017")``)."""
        return self.root / _ANNOTATIONS

    def to_json(self) -> dict[str, Any]:
        """The content of ``synthetic_subtask_manifest.json``."""
        return {
            "kind": "subtask_sets",
            "version": GENERATOR_VERSION,
            "seed": self.seed,
            "target_preset": self.preset,
            "target_seed": self.target_seed,
            "target_layouts": list(ALL_LAYOUTS),
            "folders": {"detection": DETECTION_FOLDER, "reid": REID_FOLDER, "unlabelled": UNLABELLED_FOLDER},
            "coco_annotations": _ANNOTATIONS,
            "counts": self.counts,
            "rejected_identities": self.rejected_identities,
            "style": copy.deepcopy(STYLE),  # a copy: the caller may edit what it gets
        }


@dataclass
class _ReidPlan:
    frames: list[_Scene]
    identities: dict[int, Identity]  # pid -> person
    passers_by: list[Identity]
    rejected: int
    crops: list[Path] = field(default_factory=list)


def _plan_detection(
    spec: Preset, count: int, seed: int, taken: frozenset[tuple[Any, ...]], root: Path
) -> tuple[list[_Scene], list[Identity], int]:
    """The COCO scenes, everyone in them, and how many drawn people were rejected."""
    layout_rng = np.random.default_rng([seed, _SUBTASK, _DETECTION])
    # People from their own stream, so the scene sizes do not move them.
    people_rng = np.random.default_rng([seed, _SUBTASK, _DETECTION, 1])
    lo, hi = _DETECTION_PEOPLE
    per_scene = layout_rng.integers(lo, hi + 1, size=count)
    # Each person appears once, as in real detection sets: nobody to re-identify.
    people, rejected = sample_disjoint_identities(people_rng, int(per_scene.sum()), taken, first_key=1)
    scenes, start = [], 0
    for index, n in enumerate(per_scene.tolist()):
        width, height = _cuhk_size(layout_rng, spec.max_side)
        name = f"{index + 1:012d}.jpg"  # COCO's own file naming
        scenes.append(
            _Scene(
                name=name,
                split="train",
                width=width,
                height=height,
                people=people[start : start + n],
                pids=[-1] * n,
                seed=_seed(seed, _SUBTASK, _DETECTION, index),
                background_seed=_seed(seed, _SUBTASK, _DETECTION, index, 1),
                domain=STYLE["domain"],
                scale=STYLE["scale"][DETECTION_FOLDER],
                image_path=root / "train2017" / name,
            )
        )
        start += n
    return scenes, people, rejected


def _plan_reid(
    spec: Preset, count: int, seed: int, taken: frozenset[tuple[Any, ...]], root: Path
) -> _ReidPlan:
    """The Market-1501 frames (rendered for their crops only) and the crops they give."""
    rng = np.random.default_rng([seed, _SUBTASK, _REID])
    people_rng = np.random.default_rng([seed, _SUBTASK, _REID, 1])
    labelled, rejected = sample_disjoint_identities(people_rng, count, taken, first_key=1)
    # Each identity walks past 2 or 3 cameras, once or twice each: several crops per
    # identity, from different frames and always more than one camera (cross-camera re-id).
    visits: dict[int, list[Identity]] = {cam: [] for cam in range(1, _CAMERAS + 1)}
    for person in labelled:
        cameras = rng.choice(_CAMERAS, size=int(rng.integers(2, 4)), replace=False) + 1
        for cam in sorted(int(c) for c in cameras):
            visits[cam].extend([person] * int(rng.integers(1, 3)))
    # Group the visits of each camera into frames of 1 to 3 labelled people, never one person twice.
    groups: list[tuple[int, list[Identity]]] = []
    for cam, seen in visits.items():
        frame: list[Identity] = []
        cap = int(rng.integers(1, 4))
        for i in rng.permutation(len(seen)).tolist():
            if len(frame) == cap or any(p.key == seen[i].key for p in frame):
                groups.append((cam, frame))
                frame, cap = [], int(rng.integers(1, 4))
            frame.append(seen[i])
        if frame:
            groups.append((cam, frame))
    # Passers-by (0 to 2 a frame) keep the crops' edges realistic; they are never cropped.
    extra = rng.integers(0, 3, size=len(groups))
    passers_by, more = sample_disjoint_identities(people_rng, int(extra.sum()), taken, first_key=_PASSER_KEYS)
    width = spec.max_side
    height = int(round(spec.max_side * 0.5625 / 2) * 2)  # PRW-like 16:9 frames
    numbers = dict.fromkeys(range(1, _CAMERAS + 1), 0)
    plan = _ReidPlan([], {p.key: p for p in labelled}, passers_by, rejected + more)
    start = 0
    for index, ((cam, members), n_extra) in enumerate(zip(groups, extra.tolist(), strict=True)):
        people = [(p, p.key) for p in members] + [(p, -1) for p in passers_by[start : start + n_extra]]
        start += n_extra
        order = rng.permutation(len(people)).tolist()
        numbers[cam] += int(rng.integers(20, 80))  # a running frame number per camera
        scene = _Scene(
            name=f"c{cam}s1_{numbers[cam]:06d}.jpg",
            split="train",
            width=width,
            height=height,
            people=[people[i][0] for i in order],
            pids=[people[i][1] for i in order],
            seed=_seed(seed, _SUBTASK, _REID, index),
            # One fixed background per camera: the camera's view.
            background_seed=_seed(seed, _SUBTASK, _REID, 1_000_000 + cam),
            camera=cam,
            domain=STYLE["domain"],
            scale=STYLE["scale"][REID_FOLDER],
            image_path=None,  # Market-1501 ships crops only
        )
        for k, pid in enumerate(scene.pids):
            if pid >= 0:
                # k: the person's index in the frame, from 01, as Market-1501 numbers its detections.
                path = root / "bounding_box_train" / f"{pid:04d}_c{cam}s1_{numbers[cam]:06d}_{k + 1:02d}.jpg"
                scene.crops.append((k, path))
                plan.crops.append(path)
        plan.frames.append(scene)
    return plan


def generate_subtask_sets(
    out_dir: Path,
    *,
    preset: str = "tiny",
    seed: int = 0,
    target_seed: int = 0,
    workers: int | None = None,
    sizes: SubtaskSizes | None = None,
    progress: Callable[[str], None] | None = None,
) -> SubtaskSetsManifest:
    """Render the detection, re-id and unlabelled pre-training sets for a target synthetic set.

    Args:
        out_dir: Output folder; created if missing. If it holds a previous sub-task set
            (a ``synthetic_subtask_manifest.json``), that set is replaced.
        preset: Preset of the target synthetic set (whose people are kept out); it also
            sizes these sets (:func:`subtask_sizes`).
        seed: Seed of these sets (people, scenes, crops). Use another seed than the
            target's for clarity; the people are disjoint either way.
        target_seed: Seed of the target set.
        workers: Rendering processes; None picks 1 for fewer than 400 images, else the
            CPUs available to this process. Workers are *spawned*, so a script calling
            this with several workers must do so under ``if __name__ == "__main__":``.
        sizes: Override of the sizes :func:`subtask_sizes` gives the preset.
        progress: Called with a short message at each stage (e.g. ``print``).

    Returns:
        The :class:`SubtaskSetsManifest`, with the ground truth of every image.

    Raises:
        ConfigError: A negative seed, a size or ``workers`` below 1, or an unknown preset.
        TrainerError: ``out_dir`` is a file, or a non-empty folder not made by this function.
    """
    spec = preset_spec(preset)
    sizes = sizes or subtask_sizes(spec)
    if min(dataclasses.astuple(sizes)) < 1:
        raise ConfigError(f"every sub-task set size must be at least 1, got {sizes}.")
    if workers is not None and workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}.")
    if seed < 0 or target_seed < 0:
        raise ConfigError(f"seeds must not be negative, got seed={seed}, target_seed={target_seed}.")
    started = time.perf_counter()
    out_dir = Path(out_dir).expanduser().resolve()
    say = progress or (lambda message: None)
    _prepare_output(out_dir, _FOLDERS, MANIFEST_NAME)

    say(f"drawing people unlike any of the '{preset}' set with seed {target_seed}")
    taken = target_appearances(preset, target_seed, ALL_LAYOUTS)
    coco_root, market_root = out_dir / DETECTION_FOLDER, out_dir / REID_FOLDER
    detection, detection_people, detection_rejected = _plan_detection(
        spec, sizes.detection_images, seed, taken, coco_root
    )
    reid = _plan_reid(spec, sizes.reid_identities, seed, taken, market_root)

    scenes = [*detection, *reid.frames]
    if workers is None:
        workers = 1 if len(scenes) + sizes.unlabelled_crops < 400 else len(os.sched_getaffinity(0))
    with contextlib.ExitStack() as stack:
        render_map: Callable[..., Any] = map
        pool = spawn_render_pool(stack, workers)
        if pool is not None:
            render_map = functools.partial(pool.map, chunksize=8)
        say(
            f"rendering {len(detection)} detection scenes and {len(reid.frames)} re-id frames "
            f"({len(reid.crops)} crops) with {workers} worker(s)"
        )
        _render_all(scenes, ["street"] * len(scenes), render_map)
    truth = tuple(s.truth() for s in detection)
    write_coco(out_dir / _ANNOTATIONS, truth)

    unlabelled = generate_unlabelled_crops(
        out_dir / UNLABELLED_FOLDER,
        count=sizes.unlabelled_crops,
        seed=seed,
        target_preset=preset,
        target_seed=target_seed,
        workers=workers,
        target_layouts=ALL_LAYOUTS,
        domain=STYLE["domain"],
        progress=progress,
    )

    counts = {
        DETECTION_FOLDER: {
            "train_images": len(truth),
            "person_boxes": int(sum(len(t.boxes) for t in truth)),
        },
        REID_FOLDER: {
            "bounding_box_train": len(reid.crops),
            "identities": len(reid.identities),
            "cameras": len({s.camera for s in reid.frames}),
            "frames": len(reid.frames),
        },
        UNLABELLED_FOLDER: {"images": unlabelled.count, "identities": unlabelled.identities},
    }
    manifest = SubtaskSetsManifest(
        root=out_dir,
        preset=preset,
        seed=seed,
        target_seed=target_seed,
        sizes=sizes,
        counts=counts,
        rejected_identities={
            DETECTION_FOLDER: detection_rejected,
            REID_FOLDER: reid.rejected,
            UNLABELLED_FOLDER: unlabelled.rejected_identities,
        },
        detection=truth,
        detection_people=tuple(detection_people),
        reid_identities=reid.identities,
        reid_passers_by=tuple(reid.passers_by),
        unlabelled=unlabelled,
    )
    write_json(out_dir / MANIFEST_NAME, manifest.to_json())
    return dataclasses.replace(manifest, seconds=time.perf_counter() - started)
