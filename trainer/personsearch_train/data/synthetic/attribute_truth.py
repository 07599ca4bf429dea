"""Ground-truth attribute values of a synthetic person, in the UniPT phrase-bank vocabulary.

The generator's appearance (:class:`~personsearch_train.data.synthetic.identities.Identity`)
is mapped here onto the value keys of the default phrase bank
(``trainer/personsearch_train/methods/unipt/data/phrase_banks.txt``), so that the
attribute a pseudo-caption names can be compared with what was actually drawn. It is
used only to *measure* pseudo-caption accuracy on the unlabelled crop set; no training
code may read it, since the crops stand in for LUPerson, which has no labels at all.

Attributes the generator never draws (glasses, a cigarette, a phone, an umbrella,
gloves, a vehicle) are truthfully ``("none",)``. Age, gender and action are not drawn
either, but "none" is no answer to them, so they are left out and reported as not
measurable (:data:`UNDRAWN_ATTRIBUTES`).
"""

from __future__ import annotations

from personsearch_train.data.synthetic.identities import Identity

__all__ = ["MEASURED_ATTRIBUTES", "UNDRAWN_ATTRIBUTES", "attribute_truth"]

#: The attributes :func:`attribute_truth` returns, in the order it returns them.
MEASURED_ATTRIBUTES: tuple[str, ...] = (
    "upper_clothes",
    "lower_clothes",
    "hair",
    "bag",
    "hat",
    "glasses",
    "smoke",
    "cellphone",
    "umbrella",
    "gloves",
    "vehicle",
)
#: Phrase-bank attributes with no ground truth: the generator does not draw them.
UNDRAWN_ATTRIBUTES: tuple[str, ...] = ("age", "gender", "action")

# Accessories the renderer never draws: the only true value is their absence.
_NEVER_DRAWN = ("glasses", "smoke", "cellphone", "umbrella", "gloves", "vehicle")


def attribute_truth(identity: Identity) -> dict[str, tuple[str, ...]]:
    """The acceptable phrase-bank value keys of each measurable attribute of a person.

    Args:
        identity: The drawn appearance.

    Returns:
        Attribute name -> the value keys that are correct for this person, for every
        name of :data:`MEASURED_ATTRIBUTES` in that order. Most attributes have exactly
        one correct key; ``bag`` has two when the person carries both a shoulder bag and
        a backpack (a caption naming either is right).
    """
    sleeves = "long" if identity.long_sleeves else "short"
    hair_length = "long" if identity.long_hair else "short"
    bags = tuple(
        kind for kind, present in (("shoulder bag", identity.bag), ("backpack", identity.backpack)) if present
    )
    truth: dict[str, tuple[str, ...]] = {
        "upper_clothes": (f"{identity.upper_colour} {sleeves}",),
        "lower_clothes": (f"{identity.lower_colour} {identity.lower_kind}",),
        "hair": (f"{hair_length} {identity.hair_colour}",),
        "bag": bags or ("none",),
        "hat": ("hat",) if identity.hat else ("none",),
    }
    truth.update({name: ("none",) for name in _NEVER_DRAWN})
    return truth
