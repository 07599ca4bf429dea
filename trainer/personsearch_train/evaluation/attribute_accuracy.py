"""Per-attribute accuracy of pseudo-captions against known attributes.

UniPT's captions are only as good as the attributes the scorer picks. On synthetic
crops the generator knows every person's attributes
(:func:`personsearch_train.data.synthetic.attribute_truth.attribute_truth`), so each
attribute of the phrase bank can be scored:

* a **required** attribute is correct when its arg-max value is one of the true values;
* an **optional** attribute counts as the absence value ``"none"`` when nothing was kept,
  so keeping a wrong phrase and dropping a present one are both errors;
* an attribute the generator never draws (age, gender, action) has no truth and is
  reported as not measurable rather than guessed.

Beside each accuracy the table gives the **majority** rate (always answering the most
frequent true value), the floor a scorer must beat to have learnt anything.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from personsearch_train.methods.unipt.phrase_banks import ABSENT, PhraseBank

__all__ = ["AttributeAccuracy", "attribute_accuracy", "format_accuracy_table"]


@dataclass(frozen=True)
class AttributeAccuracy:
    """Scores of one attribute.

    Attributes:
        name: Attribute name.
        required: Whether the bank marks it required.
        measured: Images with a true value for it (0: not measurable).
        correct: Of those, how many got a true value.
        majority_correct: How many the most frequent true value alone would get.
        kept: Optional attributes: images whose caption names it (a value other than
            ``"none"``); required ones: ``measured``.
    """

    name: str
    required: bool
    measured: int
    correct: int
    majority_correct: int
    kept: int

    @property
    def accuracy(self) -> float | None:
        """Percentage correct, None when not measurable."""
        return 100.0 * self.correct / self.measured if self.measured else None

    @property
    def majority(self) -> float | None:
        """Percentage of the majority answer, None when not measurable."""
        return 100.0 * self.majority_correct / self.measured if self.measured else None


def attribute_accuracy(
    selections: Sequence[Mapping[str, str]],
    truths: Sequence[Mapping[str, Sequence[str]]],
    bank: PhraseBank,
) -> list[AttributeAccuracy]:
    """Score the selected attribute values of ``N`` images.

    Args:
        selections: Per image, attribute -> selected value (optional attributes absent
            when not kept), as :func:`~personsearch_train.methods.unipt.phrase_banks.select_attributes`
            returns them.
        truths: Per image, attribute -> the acceptable values; an attribute missing
            from every image's truth is not measurable.
        bank: The phrase bank the values come from (its attributes, in order, are the rows).

    Returns:
        One row per bank attribute.

    Raises:
        ValueError: The two sequences differ in length.
    """
    if len(selections) != len(truths):
        raise ValueError(f"{len(selections)} selections but {len(truths)} truth entries")
    rows = []
    for attribute in bank.attributes:
        name = attribute.name
        measured = correct = kept = 0
        counts: Counter[str] = Counter()
        for selection, truth in zip(selections, truths, strict=True):
            if name not in truth:
                continue
            accepted = tuple(truth[name])
            predicted = selection.get(name, ABSENT)
            measured += 1
            correct += predicted in accepted
            kept += predicted != ABSENT
            counts.update(set(accepted))
        majority = counts.most_common(1)[0][1] if counts else 0
        rows.append(
            AttributeAccuracy(
                name=name,
                required=attribute.required,
                measured=measured,
                correct=correct,
                majority_correct=majority,
                kept=kept,
            )
        )
    return rows


def format_accuracy_table(rows: Sequence[AttributeAccuracy]) -> str:
    """A Markdown table: attribute, kind, images, accuracy, majority, captions naming it."""
    lines = [
        "| attribute | kind | images | accuracy % | majority % | named in captions |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        kind = "required" if row.required else "optional"
        if not row.measured:
            lines.append(f"| {row.name} | {kind} | 0 | not drawn by the generator | | |")
            continue
        lines.append(
            f"| {row.name} | {kind} | {row.measured} | {row.accuracy:.2f} | {row.majority:.2f} | {row.kept} |"
        )
    return "\n".join(lines)
