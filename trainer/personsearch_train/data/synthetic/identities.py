"""Synthetic identities: a person *is* their appearance.

An :class:`Identity` fixes everything a re-identification model may legitimately use:
clothing colours and patterns, shoes, hair, skin tone, build, height and accessories.
Colours come from a small named palette so that many people share some attributes
(confusable identities), and the names double as the vocabulary of the attribute
captions written for the text-to-person (PEDES) layout.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, replace

import numpy as np

__all__ = [
    "CLOTHING_COLOURS",
    "HAIR_COLOURS",
    "PATTERNS",
    "SHOE_COLOURS",
    "SKIN_TONES",
    "Identity",
    "confusable_twin",
    "describe_identity",
    "sample_identities",
    "sample_identity",
]

#: Clothing palette, name -> RGB uint8 triple.
CLOTHING_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (30, 30, 34),
    "white": (225, 225, 220),
    "grey": (128, 128, 128),
    "red": (190, 35, 40),
    "blue": (40, 80, 190),
    "navy": (25, 35, 85),
    "green": (45, 140, 60),
    "yellow": (225, 200, 50),
    "orange": (230, 120, 35),
    "pink": (230, 140, 170),
    "purple": (115, 50, 140),
    "brown": (110, 70, 40),
    "beige": (205, 185, 145),
}
HAIR_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (20, 18, 18),
    "brown": (85, 55, 30),
    "blonde": (210, 180, 110),
    "grey": (160, 160, 160),
    "red": (150, 60, 30),
}
SHOE_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (25, 25, 25),
    "white": (230, 230, 230),
    "brown": (100, 60, 30),
    "grey": (120, 120, 120),
    "red": (180, 30, 35),
    "blue": (40, 70, 170),
}
#: Skin tones (RGB), indexed by :attr:`Identity.skin`.
SKIN_TONES: tuple[tuple[int, int, int], ...] = (
    (245, 215, 190),
    (225, 185, 150),
    (190, 145, 105),
    (145, 100, 70),
    (95, 65, 45),
)
PATTERNS: tuple[str, ...] = ("solid", "stripes", "checks")
LOWER_KINDS: tuple[str, ...] = ("trousers", "shorts", "skirt")

_COLOUR_NAMES = tuple(CLOTHING_COLOURS)
_SHOE_NAMES = tuple(SHOE_COLOURS)
_HAIR_NAMES = tuple(HAIR_COLOURS)


@dataclass(frozen=True)
class Identity:
    """The appearance that defines one synthetic person.

    Attributes:
        key: Unique integer of this person inside one generated dataset.
        upper_colour: Main colour name of the top (key of :data:`CLOTHING_COLOURS`).
        upper_colour2: Second colour of a striped/checked top (equals ``upper_colour`` when solid).
        upper_pattern: One of :data:`PATTERNS`.
        long_sleeves: Whether the top covers the forearms.
        lower_colour: Colour name of trousers/shorts/skirt.
        lower_colour2: Second colour of a patterned lower garment.
        lower_pattern: One of :data:`PATTERNS`.
        lower_kind: ``"trousers"``, ``"shorts"`` or ``"skirt"``.
        shoe_colour: Key of :data:`SHOE_COLOURS`.
        hair_colour: Key of :data:`HAIR_COLOURS`.
        long_hair: Long hair falls to the shoulders.
        skin: Index into :data:`SKIN_TONES`.
        build: Width factor (0.8 slim .. 1.25 heavy).
        height: Height factor relative to the scene's nominal person height (0.88 .. 1.1).
        hat: Colour name of a hat, or None.
        bag: Colour name of a shoulder bag, or None.
        backpack: Colour name of a backpack, or None.
    """

    key: int
    upper_colour: str
    upper_colour2: str
    upper_pattern: str
    long_sleeves: bool
    lower_colour: str
    lower_colour2: str
    lower_pattern: str
    lower_kind: str
    shoe_colour: str
    hair_colour: str
    long_hair: bool
    skin: int
    build: float
    height: float
    hat: str | None
    bag: str | None
    backpack: str | None


def _pick(rng: np.random.Generator, options: tuple[str, ...], p: tuple[float, ...] | None = None) -> str:
    """One of ``options`` (uniform, or with probabilities ``p``); cheaper than ``rng.choice``."""
    if p is None:
        return options[int(rng.integers(len(options)))]
    index = bisect.bisect_right(list(itertools.accumulate(p)), rng.random())
    return options[min(index, len(options) - 1)]


def _second_colour(rng: np.random.Generator, first: str) -> str:
    return _pick(rng, tuple(c for c in _COLOUR_NAMES if c != first))


def sample_identity(rng: np.random.Generator, key: int) -> Identity:
    """Draw one independent appearance.

    Args:
        rng: Source of randomness (advanced in place).
        key: The identity's key.

    Returns:
        A new :class:`Identity`.
    """
    upper = _pick(rng, _COLOUR_NAMES)
    upper_pattern = _pick(rng, PATTERNS, (0.55, 0.25, 0.2))
    lower = _pick(rng, _COLOUR_NAMES)
    lower_pattern = _pick(rng, PATTERNS, (0.8, 0.1, 0.1))

    def accessory(p: float) -> str | None:
        return _pick(rng, _COLOUR_NAMES) if rng.random() < p else None

    return Identity(
        key=key,
        upper_colour=upper,
        upper_colour2=upper if upper_pattern == "solid" else _second_colour(rng, upper),
        upper_pattern=upper_pattern,
        long_sleeves=bool(rng.random() < 0.6),
        lower_colour=lower,
        lower_colour2=lower if lower_pattern == "solid" else _second_colour(rng, lower),
        lower_pattern=lower_pattern,
        lower_kind=_pick(rng, LOWER_KINDS, (0.65, 0.2, 0.15)),
        shoe_colour=_pick(rng, _SHOE_NAMES),
        hair_colour=_pick(rng, _HAIR_NAMES),
        long_hair=bool(rng.random() < 0.4),
        skin=int(rng.integers(len(SKIN_TONES))),
        build=float(rng.uniform(0.8, 1.25)),
        height=float(rng.uniform(0.88, 1.1)),
        hat=accessory(0.2),
        bag=accessory(0.25),
        backpack=accessory(0.25),
    )


def confusable_twin(rng: np.random.Generator, base: Identity, key: int) -> Identity:
    """A near-twin of ``base``: the same look except one or two attribute groups.

    Args:
        rng: Source of randomness.
        base: The identity to copy.
        key: Key of the new identity.

    Returns:
        A different :class:`Identity` that shares most attributes with ``base``.
    """
    fresh = sample_identity(rng, key)
    # Groups of fields that change together so the twin stays coherent (a new
    # pattern comes with its second colour).
    groups = (
        ("upper_colour", "upper_colour2", "upper_pattern"),
        ("lower_colour", "lower_colour2", "lower_pattern", "lower_kind"),
        ("shoe_colour",),
        ("hair_colour", "long_hair"),
        ("hat", "bag", "backpack"),
        ("long_sleeves", "skin"),
        ("build", "height"),
    )
    picks = rng.choice(len(groups), size=int(rng.integers(1, 3)), replace=False)
    changes = {name: getattr(fresh, name) for g in picks for name in groups[int(g)]}
    changes["key"] = key
    twin = replace(base, **changes)
    return twin if twin != replace(base, key=key) else fresh


def sample_identities(
    rng: np.random.Generator, count: int, *, first_key: int = 0, confusable_fraction: float = 0.25
) -> list[Identity]:
    """Draw ``count`` identities, a fraction of them near-twins of earlier ones.

    Args:
        rng: Source of randomness.
        count: Number of identities.
        first_key: Key of the first identity; keys are consecutive.
        confusable_fraction: Probability that an identity copies an earlier one and
            changes only one or two attribute groups.

    Returns:
        The identities, keys ``first_key .. first_key + count - 1``.
    """
    out: list[Identity] = []
    for i in range(count):
        key = first_key + i
        if out and rng.random() < confusable_fraction:
            out.append(confusable_twin(rng, out[int(rng.integers(len(out)))], key))
        else:
            out.append(sample_identity(rng, key))
    return out


def _pattern_phrase(colour: str, colour2: str, pattern: str) -> str:
    if pattern == "stripes":
        return f"{colour} and {colour2} striped"
    if pattern == "checks":
        return f"{colour} and {colour2} checked"
    return colour


def describe_identity(identity: Identity) -> list[str]:
    """Two differently worded attribute captions for one identity.

    Args:
        identity: The person to describe.

    Returns:
        Two captions, each two sentences, naming clothing colours and patterns,
        shoes, hair and accessories.
    """
    sleeves = "long-sleeved" if identity.long_sleeves else "short-sleeved"
    top = _pattern_phrase(identity.upper_colour, identity.upper_colour2, identity.upper_pattern)
    top += f" {sleeves} top"
    lower = f"{_pattern_phrase(identity.lower_colour, identity.lower_colour2, identity.lower_pattern)} "
    lower += identity.lower_kind
    hair = f"{'long' if identity.long_hair else 'short'} {identity.hair_colour} hair"
    extras = []
    if identity.hat:
        extras.append(f"a {identity.hat} hat")
    if identity.bag:
        extras.append(f"a {identity.bag} shoulder bag")
    if identity.backpack:
        extras.append(f"a {identity.backpack} backpack")
    carry = " and ".join(extras)
    first = f"A person with {hair} wearing a {top} and {lower}."
    first += f" The person has {identity.shoe_colour} shoes" + (f" and {carry}." if carry else ".")
    second = f"This pedestrian wears {lower} with {identity.shoe_colour} shoes."
    second += f" The {top} is visible, the hair is {hair.replace(' hair', '')}"
    second += f", with {carry}." if carry else ", with no bag or hat."
    return [first, second]
