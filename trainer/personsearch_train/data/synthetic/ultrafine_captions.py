"""Captions of the ultra-fine text-person layouts (UFine6926 and the UFine3C shifts).

Three caption families, all naming attributes of an :class:`Identity`:

* :func:`describe_ultrafine` (UFine6926, and UFine3C's cross-domain split): about 80
  words that name *every* drawn attribute, one clause per attribute group, each clause
  picked from a few templates and the clauses shuffled, so the sentence order varies;
* :func:`describe_coarse` (UFine3C cross-granularity): one short sentence (8-15 words)
  with only the main colours of the top and the lower garment;
* :func:`describe_cross_style` (UFine3C cross-style): ultra-fine length and content,
  but written with sentence frames and nouns that the training family never uses
  ("garment on the upper body", "footwear", "carries"...).

Attribute *values* (colour names, ``trousers``/``shorts``/``skirt``, ``long``/``short``,
``slim``/``average``/``heavy``) are the same words in every family, so a check of
what a caption names does not depend on its style. Only plain English words are
used, which a WordPiece tokenizer splits into known pieces.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from personsearch_train.data.synthetic.identities import Identity

__all__ = [
    "CROSS_STYLE_ONLY_PHRASES",
    "TRAINING_ONLY_PHRASES",
    "build_word",
    "describe_coarse",
    "describe_cross_style",
    "describe_ultrafine",
    "height_phrase",
]

#: Word-count window of an ultra-fine caption (training and cross-style families).
ULTRAFINE_WORDS = (70, 95)

#: Phrases that occur only in training-style captions (never in cross-style ones).
TRAINING_ONLY_PHRASES: tuple[str, ...] = (
    "shoes",
    "shirt",
    "wearing",
    "wears",
    "the person",
    "this pedestrian",
    "shoulder bag",
    "backpack",
    "hat",
    "below the waist",
    "build",
)
#: Phrases that occur only in cross-style captions (never in training-style ones).
CROSS_STYLE_ONLY_PHRASES: tuple[str, ...] = (
    "garment on the upper body",
    "footwear",
    "carries",
    "rucksack",
    "headwear",
    "handbag",
    "the subject",
    "physique",
)

# A template is a function of the attribute words, so that grammar (a skirt / trousers)
# is decided in one place per family.
_Template = Callable[["_Words"], str]


class _Words:
    """The attribute words of one identity, shared by every template family."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.sleeve = "long" if identity.long_sleeves else "short"
        self.hair_len = "long" if identity.long_hair else "short"
        self.hair = identity.hair_colour
        self.shoe = identity.shoe_colour
        self.kind = identity.lower_kind
        self.build = build_word(identity)
        self.height = height_phrase(identity)

    def pattern(self, which: str, style: str) -> str:
        """The colour phrase of the top (``which="upper"``) or lower garment."""
        colour = getattr(self.identity, f"{which}_colour")
        colour2 = getattr(self.identity, f"{which}_colour2")
        pattern = getattr(self.identity, f"{which}_pattern")
        if style == "training":
            if pattern == "solid":
                return f"plain {colour}"
            return f"{colour} and {colour2} {'striped' if pattern == 'stripes' else 'checked'}"
        if pattern == "solid":
            return f"solid {colour}"
        return f"{'striped' if pattern == 'stripes' else 'checked'} in {colour} and {colour2}"

    def lower_np(self, style: str) -> str:
        """The lower garment as a noun phrase: ``a plain red skirt``, ``shorts striped in red and blue``."""
        phrase = self.pattern("lower", style)
        head = {"skirt": "a ", "shorts": "a pair of "}.get(self.kind, "")
        if style == "training" or self.identity.lower_pattern == "solid":
            return f"{head}{phrase} {self.kind}"
        # The cross-style family puts the pattern after the noun ("trousers checked in ...").
        return f"{head}{self.kind} {phrase}"


def build_word(identity: Identity) -> str:
    """``"slim"``, ``"average"`` or ``"heavy"`` from :attr:`Identity.build` (0.8 .. 1.25)."""
    if identity.build < 0.95:
        return "slim"
    return "average" if identity.build < 1.1 else "heavy"


def height_phrase(identity: Identity) -> str:
    """``"rather short"``, ``"of medium height"`` or ``"rather tall"`` from :attr:`Identity.height`."""
    if identity.height < 0.95:
        return "rather short"
    return "of medium height" if identity.height < 1.03 else "rather tall"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


# ----------------------------------------------------------------------------- training family

_TRAIN_OPEN: tuple[_Template, ...] = (
    lambda w: "This is a photo of a pedestrian walking along the street.",
    lambda w: "In the picture there is a single person standing in the middle of the frame.",
    lambda w: "The image shows one person who can be seen clearly from head to toe.",
)
_TRAIN_TOP: tuple[_Template, ...] = (
    lambda w: f"The person is wearing a {w.pattern('upper', 'training')} shirt with {w.sleeve} sleeves.",
    lambda w: (
        f"For the top, this pedestrian has on a {w.pattern('upper', 'training')} shirt with "
        f"{w.sleeve} sleeves."
    ),
    lambda w: f"A {w.sleeve}-sleeved {w.pattern('upper', 'training')} shirt covers the chest and arms.",
)
_TRAIN_LOWER: tuple[_Template, ...] = (
    lambda w: f"Below the waist the person wears {w.lower_np('training')}.",
    lambda w: f"The person is also wearing {w.lower_np('training')} on the legs.",
    lambda w: f"On the lower half, the person has on {w.lower_np('training')}.",
)
_TRAIN_SHOES: tuple[_Template, ...] = (
    lambda w: f"On the feet are a pair of {w.shoe} shoes.",
    lambda w: f"The person wears {w.shoe} shoes.",
    lambda w: f"{_cap(w.shoe)} shoes can be seen on both feet.",
)
_TRAIN_HAIR: tuple[_Template, ...] = (
    lambda w: f"The person has {w.hair_len} {w.hair} hair.",
    lambda w: f"The hair of this pedestrian is {w.hair} and {w.hair_len}.",
    lambda w: f"{_cap(w.hair_len)} {w.hair} hair is on the head of the person.",
)
_TRAIN_BODY: tuple[_Template, ...] = (
    lambda w: f"The person has {_article(w.build)} {w.build} build and is {w.height}.",
    lambda w: f"In terms of build, this pedestrian looks {w.build} and is {w.height}.",
    lambda w: f"The build of the person is {w.build}, and the person is {w.height}.",
)
_TRAIN_HAT: tuple[_Template, ...] = (
    lambda w: f"The person wears {_article(w.identity.hat or '')} {w.identity.hat} hat on the head.",
    lambda w: f"On the head there is {_article(w.identity.hat or '')} {w.identity.hat} hat.",
    lambda w: f"{_cap(_article(w.identity.hat or ''))} {w.identity.hat} hat sits on top of the head.",
)
_TRAIN_NO_HAT: tuple[_Template, ...] = (
    lambda w: "The person has no hat on the head.",
    lambda w: "There is no hat, so the head is bare.",
    lambda w: "This pedestrian wears no hat.",
)
_TRAIN_BAG: tuple[_Template, ...] = (
    lambda w: f"{_cap(_article(w.identity.bag or ''))} {w.identity.bag} shoulder bag hangs at one side.",
    lambda w: (
        f"The person has {_article(w.identity.bag or '')} {w.identity.bag} shoulder bag over one shoulder."
    ),
    lambda w: (
        f"There is {_article(w.identity.bag or '')} {w.identity.bag} shoulder bag at the side of the person."
    ),
)
_TRAIN_NO_BAG: tuple[_Template, ...] = (
    lambda w: "The person has no shoulder bag.",
    lambda w: "There is no shoulder bag at the side of this pedestrian.",
    lambda w: "No shoulder bag is visible.",
)
_TRAIN_BACKPACK: tuple[_Template, ...] = (
    lambda w: f"{_cap(_article(w.identity.backpack or ''))} {w.identity.backpack} backpack is on the back.",
    lambda w: (
        f"The person has {_article(w.identity.backpack or '')} {w.identity.backpack} backpack on the back."
    ),
    lambda w: f"On the back there is {_article(w.identity.backpack or '')} {w.identity.backpack} backpack.",
)
_TRAIN_NO_BACKPACK: tuple[_Template, ...] = (
    lambda w: "There is no backpack on the back.",
    lambda w: "The person has no backpack.",
    lambda w: "No backpack can be seen on this pedestrian.",
)
# Added when a caption comes out short: generic, attribute-free remarks.
_TRAIN_FILLERS: tuple[_Template, ...] = (
    lambda w: "The colours of the clothes are easy to see in this picture.",
    lambda w: "The person seems to be walking at a normal pace.",
    lambda w: "The whole body of the person is inside the picture.",
)

# ----------------------------------------------------------------------------- cross-style family

_STYLE_OPEN: tuple[_Template, ...] = (
    lambda w: "Pictured here is an individual out in the city.",
    lambda w: "The subject of this shot is a lone figure outdoors.",
    lambda w: "Captured in this frame is one adult passer-by.",
)
_STYLE_TOP: tuple[_Template, ...] = (
    lambda w: (
        f"The garment on the upper body is {w.pattern('upper', 'style')}, and its sleeves are {w.sleeve}."
    ),
    lambda w: (
        f"Covering the torso, the subject has a garment on the upper body, "
        f"{w.pattern('upper', 'style')}, whose sleeves are {w.sleeve}."
    ),
    lambda w: (
        f"As for the garment on the upper body, it is {w.pattern('upper', 'style')} with sleeves that "
        f"are {w.sleeve}."
    ),
)
_STYLE_LOWER: tuple[_Template, ...] = (
    lambda w: f"Their legs are dressed in {w.lower_np('style')}.",
    lambda w: f"As the lower garment, the subject has chosen {w.lower_np('style')}.",
    lambda w: f"The hips and legs are covered by {w.lower_np('style')}.",
)
_STYLE_SHOES: tuple[_Template, ...] = (
    lambda w: f"Their footwear is {w.shoe}.",
    lambda w: f"The subject walks in {w.shoe} footwear.",
    lambda w: f"Footwear in {w.shoe} completes the outfit.",
)
_STYLE_HAIR: tuple[_Template, ...] = (
    lambda w: f"Their hairstyle is {w.hair_len}, coloured {w.hair}.",
    lambda w: f"Hair colour: {w.hair}; hair length: {w.hair_len}.",
    lambda w: f"Atop the head grows {w.hair_len}, {w.hair} coloured hair.",
)
_STYLE_BODY: tuple[_Template, ...] = (
    lambda w: f"Their physique is {w.build}, and they stand {w.height}.",
    lambda w: f"Physique: {w.build}; stature: {w.height}.",
    lambda w: f"{_cap(_article(w.build))} {w.build} physique suggests an adult who stands {w.height}.",
)
_STYLE_HAT: tuple[_Template, ...] = (
    lambda w: f"Headwear in {w.identity.hat} tops the outfit.",
    lambda w: f"The subject sports a {w.identity.hat} cap as headwear.",
    lambda w: f"Up top, {_article(w.identity.hat or '')} {w.identity.hat} cap serves as headwear.",
)
_STYLE_NO_HAT: tuple[_Template, ...] = (
    lambda w: "No headwear of any kind is present.",
    lambda w: "The subject goes without any headwear.",
    lambda w: "Headwear: none at all.",
)
_STYLE_BAG: tuple[_Template, ...] = (
    lambda w: (
        f"The subject carries {_article(w.identity.bag or '')} {w.identity.bag} handbag slung from the arm."
    ),
    lambda w: f"Slung from one arm, {_article(w.identity.bag or '')} {w.identity.bag} handbag swings along.",
    lambda w: f"A handbag in {w.identity.bag} is what this figure carries.",
)
_STYLE_NO_BAG: tuple[_Template, ...] = (
    lambda w: "The subject carries no handbag.",
    lambda w: "Handbag: none.",
    lambda w: "Not a single handbag is carried.",
)
_STYLE_BACKPACK: tuple[_Template, ...] = (
    lambda w: f"Strapped behind is {_article(w.identity.backpack or '')} {w.identity.backpack} rucksack.",
    lambda w: (
        f"The subject also carries {_article(w.identity.backpack or '')} {w.identity.backpack} "
        "rucksack behind them."
    ),
    lambda w: f"A rucksack in {w.identity.backpack} rides between the shoulder blades.",
)
_STYLE_NO_BACKPACK: tuple[_Template, ...] = (
    lambda w: "Nothing rides behind them, as there is no rucksack.",
    lambda w: "The subject carries no rucksack.",
    lambda w: "Rucksack: none.",
)
_STYLE_FILLERS: tuple[_Template, ...] = (
    lambda w: "Every item of clothing stands out clearly against the surroundings.",
    lambda w: "The figure appears to be strolling at an unhurried pace.",
    lambda w: "From head to foot, the whole figure fits inside the frame.",
)


def _family(
    style: str, identity: Identity
) -> tuple[tuple[_Template, ...], list[tuple[_Template, ...]], tuple[_Template, ...]]:
    """Opening templates, per-attribute template groups and fillers of one family."""
    train = style == "training"
    groups = [
        _TRAIN_TOP if train else _STYLE_TOP,
        _TRAIN_LOWER if train else _STYLE_LOWER,
        _TRAIN_SHOES if train else _STYLE_SHOES,
        _TRAIN_HAIR if train else _STYLE_HAIR,
        _TRAIN_BODY if train else _STYLE_BODY,
    ]
    if train:
        groups.append(_TRAIN_HAT if identity.hat else _TRAIN_NO_HAT)
        groups.append(_TRAIN_BAG if identity.bag else _TRAIN_NO_BAG)
        groups.append(_TRAIN_BACKPACK if identity.backpack else _TRAIN_NO_BACKPACK)
        return _TRAIN_OPEN, groups, _TRAIN_FILLERS
    groups.append(_STYLE_HAT if identity.hat else _STYLE_NO_HAT)
    groups.append(_STYLE_BAG if identity.bag else _STYLE_NO_BAG)
    groups.append(_STYLE_BACKPACK if identity.backpack else _STYLE_NO_BACKPACK)
    return _STYLE_OPEN, groups, _STYLE_FILLERS


def _word_count(text: str) -> int:
    return len(text.split())


def _compose(rng: np.random.Generator, identity: Identity, style: str) -> str:
    """One long caption within :data:`ULTRAFINE_WORDS` (a few redraws if a draw runs long)."""
    low, high = ULTRAFINE_WORDS
    caption = _draw_caption(rng, identity, style)
    for _ in range(10):
        if low <= _word_count(caption) <= high:
            break
        caption = _draw_caption(rng, identity, style)
    return caption


def _draw_caption(rng: np.random.Generator, identity: Identity, style: str) -> str:
    """An opening, every attribute clause in random order, fillers up to length."""
    words = _Words(identity)
    opening, groups, fillers = _family(style, identity)
    sentences = [opening[int(rng.integers(len(opening)))](words)]
    for g in rng.permutation(len(groups)):
        group = groups[int(g)]
        sentences.append(group[int(rng.integers(len(group)))](words))
    # Attribute-free remarks, inserted at random places, bring short captions up to length.
    low, high = ULTRAFINE_WORDS
    for f in rng.permutation(len(fillers)):
        count = sum(_word_count(s) for s in sentences)
        extra = fillers[int(f)](words)
        if count >= low + 4 or count + _word_count(extra) > high:
            break
        sentences.insert(int(rng.integers(1, len(sentences) + 1)), extra)
    return " ".join(sentences)


def _two_different(rng: np.random.Generator, make: Callable[[], str]) -> list[str]:
    first = make()
    for _ in range(20):
        second = make()
        if second != first:
            return [first, second]
    raise RuntimeError("could not draw two different captions; the template pools are too small")


def describe_ultrafine(identity: Identity, rng: np.random.Generator) -> list[str]:
    """Two different ultra-fine captions in the training style.

    Args:
        identity: The person to describe.
        rng: Source of the template choices and the sentence order (advanced in place).

    Returns:
        Two captions of about 70-95 words, each naming every attribute of ``identity``
        (both colours of a patterned garment, sleeves, the lower garment, shoes, hair,
        build and height, and hat, shoulder bag and backpack or their absence).
    """
    return _two_different(rng, lambda: _compose(rng, identity, "training"))


def describe_cross_style(identity: Identity, rng: np.random.Generator) -> list[str]:
    """Two different ultra-fine captions written with the cross-style templates.

    Args:
        identity: The person to describe.
        rng: Source of the template choices and the sentence order (advanced in place).

    Returns:
        Two captions with the content of :func:`describe_ultrafine` but none of its
        sentence frames (see :data:`TRAINING_ONLY_PHRASES`).
    """
    return _two_different(rng, lambda: _compose(rng, identity, "style"))


_COARSE: tuple[Callable[[Identity, str], str], ...] = (
    lambda p, lower: f"A person in a {p.upper_colour} top and {lower}.",
    lambda p, lower: f"Someone walking by in a {p.upper_colour} top with {lower}.",
    lambda p, lower: f"A pedestrian dressed in a {p.upper_colour} top and {lower}.",
    lambda p, lower: f"This is a person wearing {lower} and a {p.upper_colour} top.",
)


def describe_coarse(identity: Identity, rng: np.random.Generator) -> list[str]:
    """Two different one-sentence coarse captions (8-15 words, main colours only).

    Args:
        identity: The person to describe.
        rng: Source of the template choices (advanced in place).

    Returns:
        Two captions naming the main colour of the top and of the lower garment, and
        the lower garment's kind, nothing else.
    """
    kind = identity.lower_kind
    lower = f"a {identity.lower_colour} skirt" if kind == "skirt" else f"{identity.lower_colour} {kind}"
    picks: Sequence[int] = rng.choice(len(_COARSE), size=2, replace=False).tolist()
    return [_COARSE[i](identity, lower) for i in picks]
