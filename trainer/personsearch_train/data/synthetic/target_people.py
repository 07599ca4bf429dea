"""Who is in a *target* synthetic set, and drawing people who are not.

A pre-training set is only a fair test of pre-training if it does not contain the people
of the set the model is later fine-tuned and evaluated on (the *target*, named by its
preset and seed): real LUPerson, Market-1501 or CrowdHuman never contain the CUHK-SYSU or
PRW test people, so their synthetic stand-ins must not either. A synthetic person *is*
their appearance, so "the same person" means "the same :func:`appearance_key`", and the
target's people are rebuilt from its preset and seed by running the generator's planners,
without rendering a pixel.

Used by :mod:`.unlabelled_crops` (the LUPerson stand-in, kept apart from the text layouts)
and :mod:`.subtask_sets` (the hybrid pre-training sets, kept apart from every layout).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np

from personsearch_train.data.synthetic.generator import (
    _PEDES,
    _UFINE,
    _plan_cuhk,
    _plan_prw,
    preset_spec,
)
from personsearch_train.data.synthetic.identities import Identity, sample_identities
from personsearch_train.errors import ConfigError

__all__ = [
    "ALL_LAYOUTS",
    "TEXT_LAYOUTS",
    "appearance_key",
    "check_layouts",
    "sample_disjoint_identities",
    "target_appearances",
]

#: The target layouts whose people can be excluded. ``ufine6926`` covers UFine3C too (it
#: reuses the UFine6926 test people); the COCO and Market-1501 folders of a full synthetic
#: set reuse the CUHK-SYSU scenes and the PRW people, so ``cuhk_sysu`` and ``prw`` cover them.
ALL_LAYOUTS: tuple[str, ...] = ("cuhk_sysu", "prw", "pedes", "ufine6926")
#: The text-person layouts: what a text pre-training set (UniPT's LUPerson) must avoid.
TEXT_LAYOUTS: tuple[str, ...] = ("pedes", "ufine6926")

# Identity fields that do not make two people look different in a caption's terms (and
# barely in a crop): two people who differ only in these count as the same appearance.
_IGNORED_FIELDS = frozenset({"key", "build", "height", "skin"})
_APPEARANCE_FIELDS = tuple(f.name for f in dataclasses.fields(Identity) if f.name not in _IGNORED_FIELDS)


def appearance_key(identity: Identity) -> tuple[Any, ...]:
    """What makes two people look alike: every field but key, build, height and skin.

    Args:
        identity: A drawn person.

    Returns:
        Clothes, colours, patterns, sleeves, shoes, hair and accessories, as a tuple.
    """
    return tuple(getattr(identity, name) for name in _APPEARANCE_FIELDS)


def check_layouts(layouts: Collection[str]) -> tuple[str, ...]:
    """Validate target layout names.

    Args:
        layouts: Names from :data:`ALL_LAYOUTS`, in any order.

    Returns:
        The names in :data:`ALL_LAYOUTS` order (so manifests do not depend on the caller's order).

    Raises:
        ConfigError: An unknown name.
    """
    unknown = sorted(set(layouts) - set(ALL_LAYOUTS))
    if unknown:
        known = ", ".join(ALL_LAYOUTS)
        raise ConfigError(f"unknown target layout(s) {', '.join(unknown)}; choose from {known}.")
    return tuple(name for name in ALL_LAYOUTS if name in set(layouts))


def target_appearances(
    preset: str, seed: int, layouts: Collection[str] = TEXT_LAYOUTS
) -> frozenset[tuple[Any, ...]]:
    """The appearances of the people of some layouts of a synthetic set, without rendering it.

    Args:
        preset: The set's preset name.
        seed: The set's seed.
        layouts: Which layouts' people to collect, from :data:`ALL_LAYOUTS`. The scene
            layouts (``cuhk_sysu``, ``prw``) contribute *everyone* drawn in a scene,
            labelled or passer-by: a pre-training set showing a target passer-by would
            still have seen a person of the target images.

    Returns:
        :func:`appearance_key` of every person of those layouts.

    Raises:
        ConfigError: Unknown preset or layout.
    """
    layouts = check_layouts(layouts)
    spec = preset_spec(preset)
    keys: set[tuple[Any, ...]] = set()
    # The text planners draw their people first, exactly like this, from these streams;
    # calling them instead would also plan (and caption) every image.
    for layout, stream in (("pedes", _PEDES), ("ufine6926", _UFINE)):
        if layout in layouts:
            rng = np.random.default_rng([seed, stream])
            keys.update(appearance_key(p) for p in sample_identities(rng, sum(spec.pedes_ids), first_key=1))
    # Scene passers-by are drawn between the scene draws, so only the planners know them.
    # Planning touches no file (the root only names paths) and takes under a second for
    # the small preset.
    if "cuhk_sysu" in layouts:
        keys.update(appearance_key(p) for p in _plan_cuhk(spec, seed, Path("CUHK-SYSU")).identities.values())
    if "prw" in layouts:
        keys.update(appearance_key(p) for p in _plan_prw(spec, seed, Path("PRW")).identities.values())
    return frozenset(keys)


def sample_disjoint_identities(
    rng: np.random.Generator,
    count: int,
    taken: Collection[tuple[Any, ...]],
    *,
    first_key: int,
    confusable_fraction: float = 0.25,
) -> tuple[list[Identity], int]:
    """Draw ``count`` people, none of whom looks like a person in ``taken``.

    People are drawn in batches with :func:`sample_identities` (so a quarter of them are
    near-twins of earlier ones, which keeps re-id hard) and look-alikes are dropped; a
    later batch only makes up for those. Keys of accepted people are consecutive.

    Args:
        rng: Source of randomness (advanced in place).
        count: Number of people wanted.
        taken: :func:`appearance_key` values that must not be drawn.
        first_key: Key of the first accepted person.
        confusable_fraction: Passed to :func:`sample_identities`.

    Returns:
        ``(people, rejected)``: the accepted people, keys ``first_key ..
        first_key + count - 1``, and how many drawn people were dropped.
    """
    people: list[Identity] = []
    rejected = 0
    while len(people) < count:
        batch = sample_identities(
            rng, count - len(people), first_key=0, confusable_fraction=confusable_fraction
        )
        for identity in batch:
            if appearance_key(identity) in taken:
                rejected += 1
            else:
                # Keys are given on acceptance so that they stay consecutive.
                people.append(dataclasses.replace(identity, key=first_key + len(people)))
    return people, rejected
