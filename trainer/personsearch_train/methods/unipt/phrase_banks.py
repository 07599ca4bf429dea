"""UniPT's attribute phrase banks ("divide") and the choice of attributes from image scores.

UniPT (Shao et al., ICCV 2023) captions an unlabelled person crop without a captioning
model: each attribute (age, gender, clothes, ...) has a bank of short phrases, every
phrase is put into a prompt ("A photo of a person wearing {}."), an image-text model
scores the crop against every prompt, and a per-attribute softmax picks the phrase the
caption will use (:func:`select_attributes`). Required attributes always keep their
best phrase; an optional one (a bag, a hat, ...) is kept only when the model is sure the
item is there.

A bank is a small text file that users may edit or replace::

    # comment
    [upper_clothes | required | A photo of a person wearing {}.]
    red long = a red long-sleeved top
    red short = a red short-sleeved top

    [hat | optional | A photo of a person {}.]
    hat = wearing a hat
    none = with no hat

Each section header names the attribute, its kind (``required`` or ``optional``) and the
prompt frame (exactly one ``{}``); each entry maps a value key (what attribute-accuracy
tables compare) to the phrase captions and prompts use. An optional attribute needs a
``none`` entry: its absence is scored like any other value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from personsearch_train.errors import ConfigError

__all__ = [
    "ABSENT",
    "DEFAULT_PHRASE_BANK",
    "PAPER_OPTIONAL",
    "PAPER_REQUIRED",
    "Attribute",
    "PhraseBank",
    "attribute_probabilities",
    "indefinite_article",
    "load_phrase_bank",
    "select_attributes",
]

#: Attributes every caption names (UniPT's "required" group).
PAPER_REQUIRED: tuple[str, ...] = ("age", "gender", "upper_clothes", "lower_clothes", "action", "hair")
#: Attributes a caption names only when the image shows them (UniPT's "optional" group).
PAPER_OPTIONAL: tuple[str, ...] = (
    "bag",
    "glasses",
    "smoke",
    "hat",
    "cellphone",
    "umbrella",
    "gloves",
    "vehicle",
)
#: Value key of an optional attribute's absence entry.
ABSENT = "none"
#: The bank shipped with the trainer.
DEFAULT_PHRASE_BANK: Path = Path(__file__).resolve().parent / "data" / "phrase_banks.txt"

# "optional" is the template blank that holds all kept optional phrases, so no attribute
# may take that name (its own blank would be ambiguous).
_RESERVED_NAMES = ("optional",)
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_KINDS = ("required", "optional")
_ENTRY_SEPARATOR = " = "
# A frame to suggest when a paper attribute is missing, so the message can be pasted.
_SUGGESTED_FRAMES = {
    "age": "A photo of a {} person.",
    "gender": "A photo of a {}.",
    "upper_clothes": "A photo of a person wearing {}.",
    "lower_clothes": "A photo of a person wearing {}.",
    "action": "A photo of a person {}.",
    "hair": "A photo of a person with {}.",
}
# Words that start with a vowel letter but a consonant sound, and the reverse; enough for
# clothing and attribute words, not a full pronunciation model.
_CONSONANT_SOUND = re.compile(r"(?:uni|use|usu|ur[aeiou]|eu|ewe|one\b|once)")
_VOWEL_SOUND = re.compile(r"(?:hour|honest|honou?r|heir)")
# An indefinite article that ends a frame's text right before its "{}".
_TRAILING_ARTICLE = re.compile(r"(?<![\w'-])([Aa]n?)(\s+)$")


def indefinite_article(word: str) -> str:
    """``"a"`` or ``"an"`` for the word that follows the article (by its first letters).

    Args:
        word: The next word (its case does not matter).

    Returns:
        ``"an"`` before a vowel sound, else ``"a"``; a small list of exceptions covers
        words like "uniform" and "hour".
    """
    lower = word.lower()
    if not lower or _CONSONANT_SOUND.match(lower):
        return "a"
    if _VOWEL_SOUND.match(lower) or lower[0] in "aeiou":
        return "an"
    return "a"


def _with_article_case(article: str, original: str) -> str:
    return article.capitalize() if original[:1].isupper() else article


@dataclass(frozen=True)
class Attribute:
    """One section of a phrase bank.

    Attributes:
        name: Attribute name (``[a-z][a-z0-9_]*``), also its template blank ``{name}``.
        required: Whether every caption names it (else it is optional).
        prompt_frame: Prompt text with exactly one ``{}`` where a phrase goes.
        values: Value keys in file order (an optional attribute's include ``"none"``).
        phrases: The phrase of each value, in the same order.
        line: Line number of the section header in the bank file.
    """

    name: str
    required: bool
    prompt_frame: str
    values: tuple[str, ...]
    phrases: tuple[str, ...]
    line: int

    def prompts(self) -> tuple[str, ...]:
        """The prompt of each value: the frame with the value's phrase in its ``{}``.

        An "a"/"an" that the frame puts right before ``{}`` is made to agree with the
        phrase ("A photo of a {} person." gives "A photo of an elderly person."); the
        phrase itself is never changed.

        Returns:
            One prompt per value, in :attr:`values` order.
        """
        before, after = self.prompt_frame.split("{}")
        prompts = []
        for phrase in self.phrases:
            head = before
            article = _TRAILING_ARTICLE.search(before)
            if article is not None:
                fitted = _with_article_case(indefinite_article(phrase), article.group(1))
                head = before[: article.start()] + fitted + article.group(2)
            prompts.append(f"{head}{phrase}{after}")
        return tuple(prompts)

    def phrase_of(self, value: str) -> str:
        """The phrase of a value key.

        Raises:
            ConfigError: The attribute has no such value.
        """
        try:
            return self.phrases[self.values.index(value)]
        except ValueError:
            raise ConfigError(
                f"attribute {self.name!r} has no value {value!r}; use one of {', '.join(self.values)}"
            ) from None


@dataclass(frozen=True)
class PhraseBank:
    """A parsed phrase bank file.

    Attributes:
        attributes: The attributes in file order.
        path: The file it was read from.
    """

    attributes: tuple[Attribute, ...]
    path: Path

    def attribute(self, name: str) -> Attribute:
        """The attribute called ``name``.

        Raises:
            ConfigError: The bank has no such attribute.
        """
        for attribute in self.attributes:
            if attribute.name == name:
                return attribute
        known = ", ".join(a.name for a in self.attributes)
        raise ConfigError(f"{self.path}: no attribute {name!r} in the phrase bank; it has {known}")

    @property
    def required(self) -> tuple[Attribute, ...]:
        """The required attributes, in file order."""
        return tuple(a for a in self.attributes if a.required)

    @property
    def optional(self) -> tuple[Attribute, ...]:
        """The optional attributes, in file order."""
        return tuple(a for a in self.attributes if not a.required)

    def prompts(self) -> list[str]:
        """Every attribute's prompts, concatenated in attribute order (the score columns)."""
        return [prompt for attribute in self.attributes for prompt in attribute.prompts()]

    def slices(self) -> dict[str, slice]:
        """Attribute name -> its columns in :meth:`prompts`."""
        slices: dict[str, slice] = {}
        start = 0
        for attribute in self.attributes:
            slices[attribute.name] = slice(start, start + len(attribute.values))
            start += len(attribute.values)
        return slices


@dataclass
class _Section:
    """An attribute while its entries are being read."""

    name: str
    required: bool
    frame: str
    line: int
    values: list[str]
    phrases: list[str]
    value_lines: list[int]


def _parse_header(text: str, path: Path, number: int) -> _Section:
    where = f"{path}:{number}"
    fields = [field.strip() for field in text[1:-1].split("|")]
    if len(fields) != 3:
        raise ConfigError(
            f"{where}: malformed section header {text!r}; "
            "write [name | required or optional | prompt frame with {}]"
        )
    name, kind, frame = fields
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"{where}: attribute name {name!r} is not valid; use lowercase letters, digits and "
            "underscores, starting with a letter"
        )
    if name in _RESERVED_NAMES:
        raise ConfigError(
            f"{where}: {name!r} is reserved for the template blank of optional phrases; rename the attribute"
        )
    if kind not in _KINDS:
        raise ConfigError(
            f"{where}: kind {kind!r} of attribute {name!r} is not valid; use required or optional"
        )
    # Prompts split the frame at its one {}; a stray brace would be copied into every prompt.
    if frame.count("{}") != 1 or frame.count("{") != 1 or frame.count("}") != 1:
        raise ConfigError(
            f"{where}: prompt frame {frame!r} of attribute {name!r} must contain exactly one {{}} and no "
            "other braces; write e.g. 'A photo of a person wearing {}.'"
        )
    return _Section(name, kind == "required", frame, number, [], [], [])


def _finish_section(section: _Section, path: Path) -> Attribute:
    where = f"{path}:{section.line}"
    if section.required:
        if ABSENT in section.values:
            line = section.value_lines[section.values.index(ABSENT)]
            raise ConfigError(
                f"{path}:{line}: required attribute {section.name!r} has a {ABSENT!r} entry; remove it or "
                f"make the attribute optional"
            )
        if len(section.values) < 2:
            raise ConfigError(
                f"{where}: required attribute {section.name!r} has {len(section.values)} entries; give it at "
                "least 2 values to choose from"
            )
    else:
        if ABSENT not in section.values:
            raise ConfigError(
                f"{where}: optional attribute {section.name!r} has no {ABSENT!r} entry; add a line "
                f"'{ABSENT} = <phrase for its absence>'"
            )
        if len(section.values) < 2:
            raise ConfigError(
                f"{where}: optional attribute {section.name!r} has only the {ABSENT!r} entry; add at least "
                "one value for its presence"
            )
    return Attribute(
        name=section.name,
        required=section.required,
        prompt_frame=section.frame,
        values=tuple(section.values),
        phrases=tuple(section.phrases),
        line=section.line,
    )


def load_phrase_bank(path: str | Path | None = None) -> PhraseBank:
    """Read and check a phrase bank file.

    Args:
        path: The bank file; ``None`` reads :data:`DEFAULT_PHRASE_BANK`.

    Returns:
        The bank.

    Raises:
        ConfigError: The file is missing or unreadable, or a line is malformed
            (``FILE:LINE: what; what to do``), or a paper attribute is missing or has
            the wrong kind.
    """
    path = DEFAULT_PHRASE_BANK if path is None else Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(f"{path}: phrase bank file not found; pass an existing file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(
            f"{path}: cannot read the phrase bank ({error}); pass a readable UTF-8 file"
        ) from None

    sections: list[_Section] = []
    header_lines: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        where = f"{path}:{number}"
        if not text or text.startswith("#"):
            continue
        if text.startswith("["):
            if not text.endswith("]"):
                raise ConfigError(f"{where}: section header {text!r} does not end with ']'; close it")
            section = _parse_header(text, path, number)
            if section.name in header_lines:
                raise ConfigError(
                    f"{where}: attribute {section.name!r} is defined twice (first at line "
                    f"{header_lines[section.name]}); merge the two sections"
                )
            header_lines[section.name] = number
            sections.append(section)
            continue
        if not sections:
            raise ConfigError(
                f"{where}: entry before any section header; start the file with a header like "
                "[age | required | A photo of a {} person.]"
            )
        section = sections[-1]
        value, separator, phrase = text.partition(_ENTRY_SEPARATOR)
        value, phrase = value.strip(), phrase.strip()
        if not separator or not value or not phrase:
            raise ConfigError(
                f"{where}: entry {text!r} is not 'value = phrase'; write e.g. 'red long = a red top'"
            )
        if value != value.lower():
            raise ConfigError(f"{where}: value key {value!r} has capitals; write value keys in lowercase")
        if value in section.values:
            first = section.value_lines[section.values.index(value)]
            raise ConfigError(
                f"{where}: value {value!r} of attribute {section.name!r} is listed twice (first at line "
                f"{first}); keep one"
            )
        section.values.append(value)
        section.phrases.append(phrase)
        section.value_lines.append(number)

    end = f"{path}:{max(len(lines), 1)}"
    if not sections:
        raise ConfigError(
            f"{end}: the phrase bank has no attribute sections; add sections like "
            "[age | required | A photo of a {} person.] with 'value = phrase' lines"
        )
    attributes = tuple(_finish_section(section, path) for section in sections)
    by_name = {a.name: a for a in attributes}
    for name in PAPER_REQUIRED + PAPER_OPTIONAL:
        kind = "required" if name in PAPER_REQUIRED else "optional"
        frame = _SUGGESTED_FRAMES.get(name, "A photo of a person {}.")
        if name not in by_name:
            raise ConfigError(
                f"{end}: (end of file) the phrase bank lacks the paper attribute {name!r}; add a section "
                f"[{name} | {kind} | {frame}] with its 'value = phrase' lines"
            )
        attribute = by_name[name]
        if attribute.required != (kind == "required"):
            raise ConfigError(
                f"{path}:{attribute.line}: attribute {name!r} must be {kind}, as in the paper; change its "
                f"header to [{name} | {kind} | {attribute.prompt_frame}]"
            )
    return PhraseBank(attributes=attributes, path=path)


def _check_scores(similarities: np.ndarray, bank: PhraseBank, logit_scale: float) -> np.ndarray:
    scores = np.asarray(similarities, dtype=np.float64)
    columns = sum(len(a.values) for a in bank.attributes)
    if scores.ndim != 2 or scores.shape[1] != columns:
        raise ConfigError(
            f"the score table has shape {tuple(scores.shape)} but the phrase bank {bank.path} has {columns} "
            f"prompts; score the images against this bank's prompts ([N, {columns}])"
        )
    if not np.isfinite(scores).all():
        raise ConfigError("the score table holds NaN or infinite values; rescore the images")
    if not logit_scale > 0:
        raise ConfigError(f"logit_scale {logit_scale}: must be > 0")
    return scores


def attribute_probabilities(
    similarities: np.ndarray, bank: PhraseBank, *, logit_scale: float
) -> dict[str, np.ndarray]:
    """Per-attribute softmax of the image-prompt similarities.

    Args:
        similarities: ``[N, P]`` cosine similarity of each image with each prompt of
            ``bank.prompts()`` (``P`` columns in that order).
        bank: The bank the prompts came from.
        logit_scale: Multiplier of the similarities before the softmax (CLIP's learnt
            temperature inverse, e.g. 100).

    Returns:
        Attribute name -> ``[N, P_attr]`` float64 probabilities over its values (rows
        sum to 1), in bank order.

    Raises:
        ConfigError: The table is not ``[N, P]``, holds non-finite values, or
            ``logit_scale`` is not positive.
    """
    scores = _check_scores(similarities, bank, logit_scale)
    probabilities: dict[str, np.ndarray] = {}
    for name, columns in bank.slices().items():
        logits = logit_scale * scores[:, columns]
        # Subtracting the row maximum keeps exp() from overflowing at large logit scales.
        logits = logits - logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        probabilities[name] = weights / weights.sum(axis=1, keepdims=True)
    return probabilities


def select_attributes(
    similarities: np.ndarray,
    bank: PhraseBank,
    *,
    logit_scale: float,
    threshold: float = 0.9,
    use_optional: bool = True,
) -> list[dict[str, str]]:
    """The attribute values each image's caption will name.

    Args:
        similarities: ``[N, P]`` image-prompt cosine similarities (see
            :func:`attribute_probabilities`).
        bank: The phrase bank.
        logit_scale: Softmax scale of the similarities.
        threshold: An optional attribute is kept only when its best value is not
            ``"none"`` and that value's probability is strictly above this.
        use_optional: Whether optional attributes may be kept at all.

    Returns:
        One dict per image, attribute name -> value key, in bank order: every required
        attribute with its arg-max value, and the kept optional ones.

    Raises:
        ConfigError: Bad shapes or values (see :func:`attribute_probabilities`), or
            ``threshold`` outside ``[0, 1]``.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold {threshold}: must be in [0, 1]")
    probabilities = attribute_probabilities(similarities, bank, logit_scale=logit_scale)
    rows = next(iter(probabilities.values())).shape[0]
    selections: list[dict[str, str]] = [{} for _ in range(rows)]
    for attribute in bank.attributes:
        if not attribute.required and not use_optional:
            continue
        probs = probabilities[attribute.name]
        best = probs.argmax(axis=1)
        best_probability = probs[np.arange(rows), best]
        for row in range(rows):
            value = attribute.values[best[row]]
            if attribute.required or (value != ABSENT and best_probability[row] > threshold):
                selections[row][attribute.name] = value
    return selections
