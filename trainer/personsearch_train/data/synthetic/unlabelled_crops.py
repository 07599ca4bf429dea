"""An unlabelled set of person crops: the synthetic stand-in for LUPerson.

UniPT pre-trains on LUPerson, millions of person crops with neither captions nor
identity labels, which it captions itself (pseudo-captions). This module renders the
synthetic equivalent with the same crop renderer as the PEDES/UFine6926 layouts::

    OUT/
      images/c{index:06d}.jpg              the crops, nothing else
      truth/attributes.json                evaluation only: each crop's drawn attributes
      synthetic_unlabelled_manifest.json   counts and seeds

The people are drawn from their own seed stream and none of them looks like a person
of the PEDES or UFine6926 layout (and so of UFine3C, which reuses the UFine6926 test
people) of the *target* synthetic set, the one the pre-trained model is later
fine-tuned and tested on: a pre-training set that contained the test people would
inflate the results, which real LUPerson cannot do. The target's people are rebuilt
from its preset and seed without rendering anything (:mod:`.target_people`). The hybrid
pre-training sets (:mod:`.subtask_sets`) call this with every target layout excluded and
the shifted rendering domain.

``truth/attributes.json`` lists, per crop, the phrase-bank value keys that are correct
for it (:func:`~personsearch_train.data.synthetic.attribute_truth.attribute_truth`). It
exists only to measure how accurate the pseudo-captions are; training must never read
it, or the set would no longer be unlabelled. It holds no identity keys, so even it
does not say which crops show the same person.

The same arguments give byte-identical files whatever the number of workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
import shutil
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from personsearch_train.data.synthetic.attribute_truth import attribute_truth
from personsearch_train.data.synthetic.generator import (
    _UNLABELLED,
    GENERATOR_VERSION,
    Preset,
    _crop_scene,
    _crop_size,
    _render_all,
    _Scene,
    preset_spec,
    spawn_render_pool,
)
from personsearch_train.data.synthetic.identities import Identity, sample_identities
from personsearch_train.data.synthetic.scenes import DOMAINS
from personsearch_train.data.synthetic.target_people import (
    TEXT_LAYOUTS,
    appearance_key,
    check_layouts,
    target_appearances,
)
from personsearch_train.data.synthetic.writers import write_json
from personsearch_train.errors import ConfigError, TrainerError

__all__ = [
    "MANIFEST_NAME",
    "TRUTH_FILE",
    "UNLABELLED_FOLDER",
    "UnlabelledCropsManifest",
    # Defined in target_people; still importable from here, where they were first.
    "appearance_key",
    "generate_unlabelled_crops",
    "target_appearances",
]

#: Suggested name of the folder holding the set (``--out`` names the folder itself).
UNLABELLED_FOLDER = "LUPerson-synthetic"
#: The manifest, written last: its presence marks a complete set.
MANIFEST_NAME = "synthetic_unlabelled_manifest.json"
#: The evaluation-only attribute file, relative to the set's folder.
TRUTH_FILE = "truth/attributes.json"
_IMAGES = "images"
# What a killed run can leave in our folders: finished files and atomic_replace's
# temporaries (".<name>.<random>.tmp"). Used to tell an interrupted set from user files.
_OUR_FILES = {
    _IMAGES: re.compile(r"\.?c\d{6,}\.jpg(\.[^/]*\.tmp)?"),
    "truth": re.compile(r"\.?attributes\.json(\.[^/]*\.tmp)?"),
}


@dataclass(frozen=True)
class UnlabelledCropsManifest:
    """What :func:`generate_unlabelled_crops` wrote.

    Attributes:
        root: The output folder.
        count: Crops written.
        seed: Seed of the unlabelled set.
        target_preset: Preset of the synthetic set whose people were excluded.
        target_seed: Seed of that set.
        rejected_identities: Drawn people dropped because they looked like a target person.
        identities: Distinct people shown by the crops.
        image_paths: The crops, in file (and truth file) order.
        seconds: Wall time (not written to the manifest file, which must be reproducible).
        target_layouts: The target layouts whose people were excluded.
        domain: Rendering domain of the crops (``scenes.DOMAINS``).
    """

    root: Path
    count: int
    seed: int
    target_preset: str
    target_seed: int
    rejected_identities: int
    identities: int
    image_paths: tuple[Path, ...]
    seconds: float = 0.0
    target_layouts: tuple[str, ...] = TEXT_LAYOUTS
    domain: str = "standard"

    @property
    def truth_path(self) -> Path:
        """The evaluation-only attribute file."""
        return self.root / TRUTH_FILE

    def to_json(self) -> dict[str, Any]:
        """The content of ``synthetic_unlabelled_manifest.json``."""
        return {
            "kind": "unlabelled_crops",
            "count": self.count,
            "seed": self.seed,
            "target_preset": self.target_preset,
            "target_seed": self.target_seed,
            "target_layouts": list(self.target_layouts),
            "rejected_identities": self.rejected_identities,
            "identities": self.identities,
            "domain": self.domain,
            "version": GENERATOR_VERSION,
            "images": _IMAGES,
            # Named so that a reader of the manifest sees at once the file is off-limits to training.
            "evaluation_only": TRUTH_FILE,
        }


def _is_ours(folder: Path, pattern: re.Pattern[str]) -> bool:
    """Whether ``folder`` holds only files this module writes (so clearing it loses nothing of the user's)."""
    return all(p.is_file() and pattern.fullmatch(p.name) for p in folder.iterdir())


def _prepare_output(out_dir: Path) -> None:
    """Create ``out_dir``, or clear a previous or interrupted unlabelled set in it; refuse other folders."""
    if out_dir.exists() and not out_dir.is_dir():
        raise TrainerError(f"{out_dir}: exists and is not a folder. Choose another --out.")
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = {p.name for p in out_dir.iterdir()}
    # The manifest is written last, so a folder holding only our folders, with only our
    # file names in them, is a run that was interrupted: ours to clear. Checking the file
    # names too keeps a user's own "images" folder safe.
    interrupted = (
        bool(entries)
        and entries <= set(_OUR_FILES)
        and all((out_dir / name).is_dir() and _is_ours(out_dir / name, _OUR_FILES[name]) for name in entries)
    )
    if entries and MANIFEST_NAME not in entries and not interrupted:
        raise TrainerError(
            f"{out_dir}: folder is not empty and holds no {MANIFEST_NAME}; refusing to write an unlabelled "
            "crop set into it (a full synthetic set belongs in a folder of its own too). Choose an empty "
            "or new folder for --out."
        )
    for name in (*_OUR_FILES, MANIFEST_NAME):  # the manifest last: until it goes, the folder is ours
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _plan(
    count: int,
    seed: int,
    spec: Preset,
    taken: frozenset[tuple[Any, ...]],
    images: Path,
    domain: str = "standard",
) -> tuple[list[_Scene], list[Identity], int]:
    """The crops to render, the people they show, and how many drawn people were rejected."""
    # Not target_people.sample_disjoint_identities: this loop stops in the middle of a
    # batch once the crops are counted out, and changing that would change every set's bytes.
    people_rng = np.random.default_rng([seed, _UNLABELLED])
    # Crop counts and sizes draw from their own stream, so the people do not depend on them.
    layout_rng = np.random.default_rng([seed, _UNLABELLED, 1])
    scenes: list[_Scene] = []
    shown: list[Identity] = []
    rejected, next_key = 0, 1
    while len(scenes) < count:
        # Every accepted person gets at least one crop, so one batch is enough unless some
        # are rejected; later batches only make up for those.
        batch = sample_identities(
            people_rng, count - len(scenes), first_key=next_key, confusable_fraction=0.25
        )
        next_key += len(batch)
        for identity in batch:
            if len(scenes) == count:
                break
            if appearance_key(identity) in taken:
                rejected += 1
                continue
            shown.append(identity)
            # LUPerson shows most people a few times; one or two crops each keeps the set varied.
            for _ in range(min(int(layout_rng.integers(1, 3)), count - len(scenes))):
                index = len(scenes)
                name = f"c{index:06d}.jpg"
                scenes.append(
                    _crop_scene(
                        identity,
                        name=f"{_IMAGES}/{name}",
                        split="train",
                        size=_crop_size(layout_rng, spec.max_side),
                        seed=seed,
                        stream=_UNLABELLED,
                        index=index,
                        image_path=images / name,
                        domain=domain,
                    )
                )
    return scenes, shown, rejected


def generate_unlabelled_crops(
    out_dir: Path,
    *,
    count: int,
    seed: int = 0,
    target_preset: str = "small",
    target_seed: int = 0,
    workers: int | None = None,
    progress: Callable[[str], None] | None = None,
    target_layouts: Collection[str] = TEXT_LAYOUTS,
    domain: str = "standard",
) -> UnlabelledCropsManifest:
    """Render ``count`` unlabelled person crops whose people are not in a target synthetic set.

    Args:
        out_dir: Output folder; created if missing. If it holds a previous unlabelled
            set (a ``synthetic_unlabelled_manifest.json``), that set is replaced.
        count: Number of crops.
        seed: Seed of the unlabelled set (people, poses, backgrounds, sizes).
        target_preset: Preset of the synthetic set whose people (of ``target_layouts``)
            must not appear here.
        target_seed: Seed of that set.
        workers: Rendering processes; None picks 1 for fewer than 400 crops, else the
            CPUs available to this process. Workers are *spawned*, so a script calling
            this with several workers must do so under ``if __name__ == "__main__":``.
        progress: Called with a short message at each stage (e.g. ``print``).
        target_layouts: Target layouts whose people are excluded
            (:data:`~.target_people.ALL_LAYOUTS`); the default, the text layouts, suits
            text pre-training; person-search pre-training excludes them all.
        domain: Rendering domain (``scenes.DOMAINS``); ``"shifted"`` renders other
            backgrounds under other light than the target's.

    Returns:
        The :class:`UnlabelledCropsManifest`.

    Raises:
        ConfigError: ``count`` or ``workers`` below 1, a negative seed, or an unknown
            preset, layout or domain.
        TrainerError: ``out_dir`` is a file, or a non-empty folder not made by this function.
    """
    if count < 1:
        raise ConfigError(f"the unlabelled crop count must be at least 1, got {count}.")
    if workers is not None and workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}.")
    if seed < 0 or target_seed < 0:
        raise ConfigError(f"seeds must not be negative, got seed={seed}, target_seed={target_seed}.")
    spec = preset_spec(target_preset)
    if domain not in DOMAINS:
        raise ConfigError(f"unknown rendering domain {domain!r}; choose one of {', '.join(DOMAINS)}.")
    layouts = check_layouts(target_layouts)
    started = time.perf_counter()
    out_dir = Path(out_dir).expanduser().resolve()
    say = progress or (lambda message: None)
    _prepare_output(out_dir)

    say(f"drawing people unlike those of the '{target_preset}' set with seed {target_seed}")
    taken = target_appearances(target_preset, target_seed, layouts)
    scenes, shown, rejected = _plan(count, seed, spec, taken, out_dir / _IMAGES, domain)

    if workers is None:
        workers = 1 if count < 400 else len(os.sched_getaffinity(0))
    with contextlib.ExitStack() as stack:
        render_map: Callable[..., Any] = map
        pool = spawn_render_pool(stack, workers)
        if pool is not None:
            render_map = functools.partial(pool.map, chunksize=8)
        say(f"rendering {count} crops of {len(shown)} people with {workers} worker(s)")
        _render_all(scenes, ["crop"] * len(scenes), render_map)

    say("writing the evaluation-only attribute truth")
    truth = [
        {"file_path": s.name, "attributes": {k: list(v) for k, v in attribute_truth(s.people[0]).items()}}
        for s in scenes
    ]
    write_json(out_dir / TRUTH_FILE, truth)
    manifest = UnlabelledCropsManifest(
        root=out_dir,
        count=count,
        seed=seed,
        target_preset=target_preset,
        target_seed=target_seed,
        rejected_identities=rejected,
        identities=len(shown),
        image_paths=tuple(s.image_path for s in scenes if s.image_path is not None),
        target_layouts=layouts,
        domain=domain,
    )
    write_json(out_dir / MANIFEST_NAME, manifest.to_json())
    return dataclasses.replace(manifest, seconds=time.perf_counter() - started)
