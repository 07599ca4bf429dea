"""UniPT's caption templates and synonyms ("combine"): attribute phrases into one sentence.

A template is a sentence with one blank per required attribute and one optional
segment::

    A {age} {gender} with {hair} is {action}[ while {optional}], wearing {upper_clothes} and {lower_clothes}.

``{name}`` takes the phrase of the image's value of attribute ``name``; the bracketed
segment is kept only when the image has at least one kept optional attribute, whose
phrases fill ``{optional}`` ("carrying a backpack and wearing a hat"). Every required
attribute has exactly one blank in every template, so no selected attribute is lost
whichever template is drawn. Synonyms vary the template's own words ("person" ->
"pedestrian"); they are applied before the blanks are filled, so an attribute phrase is
never reworded.

The file (UTF-8; blank lines and ``#`` comments ignored)::

    [templates]
    A {age} {gender} ...
    [synonyms]
    person = pedestrian | individual
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from personsearch_train.errors import ConfigError
from personsearch_train.methods.unipt.phrase_banks import (
    ABSENT,
    PAPER_OPTIONAL,
    PAPER_REQUIRED,
    PhraseBank,
    indefinite_article,
)

__all__ = [
    "DEFAULT_TEMPLATES",
    "OPTIONAL_BLANK",
    "CaptionTemplates",
    "compose_caption",
    "join_phrases",
    "load_caption_templates",
]

#: The templates shipped with the trainer.
DEFAULT_TEMPLATES: Path = Path(__file__).resolve().parent / "data" / "caption_templates.txt"
#: The blank that holds the kept optional attributes' phrases, inside the ``[...]`` segment.
OPTIONAL_BLANK = "optional"

_SECTION = re.compile(r"\[([a-z_]+)\]")
_SECTIONS = ("templates", "synonyms")
_BLANK = re.compile(r"\{([^{}]*)\}")
# A template split into blanks, segment brackets and the text between them.
_PIECE = re.compile(r"(\{[^{}]*\}|\[|\])")
# An indefinite article and the word after it (the lookahead group is still captured).
_ARTICLE = re.compile(r"(?<![\w'-])([Aa]n?)(?=\s+([\w'-]+))")
_SENTENCE_START = re.compile(r"(^|[.!?]\s+)([a-z])")


@dataclass(frozen=True)
class CaptionTemplates:
    """A parsed templates file.

    Attributes:
        templates: The templates, in file order.
        synonyms: A word or phrase of the templates -> its alternatives.
        path: The file they were read from.
        lines: The line number of each template.
        required: The required attribute names every template was checked to hold
            exactly once (the bank's, or :data:`PAPER_REQUIRED` without a bank).
    """

    templates: tuple[str, ...]
    synonyms: dict[str, tuple[str, ...]]
    path: Path
    lines: tuple[int, ...]
    required: tuple[str, ...] = PAPER_REQUIRED


def _check_template(template: str, where: str, required: tuple[str, ...], optional: tuple[str, ...]) -> None:
    """Raise a ConfigError naming ``where`` if ``template`` is not a valid template."""
    in_blank = in_segment = False
    segments = 0
    for char in template:
        if char == "{":
            if in_blank:
                raise ConfigError(
                    f"{where}: '{{' inside a blank; close each blank with '}}' before opening another"
                )
            in_blank = True
        elif char == "}":
            if not in_blank:
                raise ConfigError(f"{where}: '}}' without a matching '{{'; balance the braces")
            in_blank = False
        elif char in "[]" and in_blank:
            raise ConfigError(f"{where}: {char!r} inside a blank; close the blank with '}}' first")
        elif char == "[":
            if in_segment:
                raise ConfigError(
                    f"{where}: nested '[' segments; a template has one flat [ ... {{optional}} ... ]"
                )
            in_segment = True
            segments += 1
        elif char == "]":
            if not in_segment:
                raise ConfigError(f"{where}: ']' without a matching '['; balance the brackets")
            in_segment = False
    if in_blank:
        raise ConfigError(f"{where}: a '{{' is never closed; end the blank with '}}'")
    if in_segment:
        raise ConfigError(f"{where}: a '[' is never closed; end the optional segment with ']'")
    if segments != 1:
        raise ConfigError(
            f"{where}: {segments} optional segments; write exactly one [ ... {{{OPTIONAL_BLANK}}} ... ]"
        )

    segment_start, segment_end = template.index("["), template.index("]")
    counts = dict.fromkeys(required, 0)
    optional_blanks = 0
    for match in _BLANK.finditer(template):
        name = match.group(1)
        inside = segment_start < match.start() < segment_end
        if name == OPTIONAL_BLANK:
            if not inside:
                raise ConfigError(
                    f"{where}: {{{OPTIONAL_BLANK}}} outside the [ ... ] segment; move it into the segment"
                )
            optional_blanks += 1
        elif name in counts:
            if inside:
                raise ConfigError(
                    f"{where}: required blank {{{name}}} inside the optional segment would be dropped "
                    "with it; move it out of [ ... ]"
                )
            counts[name] += 1
        elif name in optional:
            raise ConfigError(
                f"{where}: {{{name}}} is an optional attribute, which goes through {{{OPTIONAL_BLANK}}}; "
                "remove the blank"
            )
        else:
            raise ConfigError(
                f"{where}: unknown blank {{{name}}}; use {{{OPTIONAL_BLANK}}} or a required attribute "
                f"({', '.join(required)})"
            )
    if optional_blanks != 1:
        raise ConfigError(
            f"{where}: the segment holds {optional_blanks} {{{OPTIONAL_BLANK}}} blanks; put exactly one in it"
        )
    for name, count in counts.items():
        if count != 1:
            raise ConfigError(
                f"{where}: required blank {{{name}}} appears {count} times; use it exactly once so the "
                "attribute is named once"
            )


def _parse_synonym(text: str, where: str) -> tuple[str, tuple[str, ...]]:
    key, separator, rest = text.partition(" = ")
    key = key.strip()
    alternatives = tuple(alternative.strip() for alternative in rest.split("|"))
    if not separator or not key or not all(alternatives):
        raise ConfigError(
            f"{where}: synonym line {text!r} is not 'words = alternative | alternative'; "
            "write e.g. 'person = pedestrian | individual'"
        )
    # Keys are matched at word boundaries, which only means something at word characters.
    if not (re.match(r"\w", key) and re.search(r"\w$", key)):
        raise ConfigError(
            f"{where}: synonym key {key!r} must start and end with a letter or digit; reword it"
        )
    # A brace or bracket in a substitute would add blanks or segments to a checked template.
    for word in (key, *alternatives):
        if re.search(r"[{}\[\]]", word):
            raise ConfigError(f"{where}: {word!r} contains a brace or bracket; synonyms are plain words")
    return key, alternatives


def load_caption_templates(
    path: str | Path | None = None, *, bank: PhraseBank | None = None
) -> CaptionTemplates:
    """Read and check a templates file.

    Args:
        path: The templates file; ``None`` reads :data:`DEFAULT_TEMPLATES`.
        bank: The phrase bank the captions will use: every template must hold each of
            its required attributes exactly once. Without one, the paper's required
            attributes (:data:`PAPER_REQUIRED`) are checked.

    Returns:
        The templates.

    Raises:
        ConfigError: The file is missing or unreadable, or a line is not valid
            (``FILE:LINE: what; what to do``), or it has no templates.
    """
    path = DEFAULT_TEMPLATES if path is None else Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(f"{path}: caption templates file not found; pass an existing file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(
            f"{path}: cannot read the templates ({error}); pass a readable UTF-8 file"
        ) from None
    if bank is None:
        required, optional = PAPER_REQUIRED, PAPER_OPTIONAL
    else:
        required = tuple(a.name for a in bank.required)
        optional = tuple(a.name for a in bank.optional)

    templates: list[str] = []
    template_lines: list[int] = []
    synonyms: dict[str, tuple[str, ...]] = {}
    synonym_lines: dict[str, int] = {}
    section: str | None = None
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        where = f"{path}:{number}"
        if not text or text.startswith("#"):
            continue
        header = _SECTION.fullmatch(text)
        if header is not None:
            if header.group(1) not in _SECTIONS:
                raise ConfigError(f"{where}: unknown section {text}; use [templates] or [synonyms]")
            section = header.group(1)
            continue
        if section is None:
            raise ConfigError(
                f"{where}: line before the [templates] section; put templates under [templates] and "
                "synonyms under [synonyms]"
            )
        if section == "templates":
            _check_template(text, where, required, optional)
            templates.append(text)
            template_lines.append(number)
        else:
            key, alternatives = _parse_synonym(text, where)
            if key in synonyms:
                raise ConfigError(
                    f"{where}: synonyms of {key!r} are listed twice (first at line {synonym_lines[key]}); "
                    "merge the two lines"
                )
            synonyms[key] = alternatives
            synonym_lines[key] = number
    if not templates:
        raise ConfigError(
            f"{path}:{max(len(lines), 1)}: no templates; add a [templates] section with at least one template"
        )
    return CaptionTemplates(
        templates=tuple(templates),
        synonyms=synonyms,
        path=path,
        lines=tuple(template_lines),
        required=required,
    )


def join_phrases(phrases: list[str]) -> str:
    """Join phrases as English lists: "a", "a and b", "a, b and c"."""
    if len(phrases) <= 1:
        return "".join(phrases)
    return f"{', '.join(phrases[:-1])} and {phrases[-1]}"


def _apply_synonyms(
    text: str, synonyms: Mapping[str, tuple[str, ...]], rng: np.random.Generator, probability: float
) -> str:
    if not synonyms or not text:
        return text
    # Longest keys first, so "dressed in" wins over a shorter key inside it; one pass, so a
    # substitute is never substituted again.
    keys = sorted(synonyms, key=len, reverse=True)
    pattern = re.compile(r"\b(?:" + "|".join(re.escape(key) for key in keys) + r")\b")

    def substitute(match: re.Match[str]) -> str:
        if rng.random() >= probability:
            return match.group(0)
        alternatives = synonyms[match.group(0)]
        return alternatives[int(rng.integers(len(alternatives)))]

    return pattern.sub(substitute, text)


def _agree_articles(pieces: list[tuple[str, bool]]) -> str:
    """Join pieces, making each "a"/"an" of template text fit the word after it.

    Args:
        pieces: ``(text, from_template)`` in caption order; articles inside attribute
            phrases (``from_template`` false) are the bank author's and left alone.
    """
    text = "".join(piece for piece, _ in pieces)
    from_template = np.zeros(len(text), dtype=bool)
    start = 0
    for piece, is_template in pieces:
        from_template[start : start + len(piece)] = is_template
        start += len(piece)

    def fit(match: re.Match[str]) -> str:
        article = match.group(1)
        if not from_template[match.start()]:
            return article
        fitted = indefinite_article(match.group(2))
        return fitted.capitalize() if article[0].isupper() else fitted

    return _ARTICLE.sub(fit, text)


def _tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    # Sentence starts may be blanks ("{action}, a ..."), whose phrases are lowercase.
    return _SENTENCE_START.sub(lambda m: m.group(1) + m.group(2).upper(), text)


def compose_caption(
    selection: Mapping[str, str],
    bank: PhraseBank,
    templates: CaptionTemplates,
    rng: np.random.Generator,
    *,
    fixed_template: bool = False,
    synonym_probability: float = 0.5,
) -> str:
    """Write one caption from an image's selected attribute values.

    Args:
        selection: Attribute name -> value key (one row of
            :func:`~personsearch_train.methods.unipt.phrase_banks.select_attributes`):
            every required attribute of ``bank``, plus the kept optional ones (an
            optional attribute given as ``"none"`` counts as not kept).
        bank: The phrase bank the values come from.
        templates: The templates (checked against ``bank``'s required attributes).
        rng: Draws the template and the synonyms; the same state gives the same caption.
        fixed_template: Use the first template, without synonyms (for ablations and
            reproducible examples).
        synonym_probability: Chance that each occurrence of a synonym key in the
            template is replaced by one of its alternatives.

    Returns:
        The caption: single spaces, no space before punctuation, capitalised sentences.

    Raises:
        ConfigError: A required attribute is missing from ``selection``, a name or value
            is not in the bank, the templates were checked against other required
            attributes, or ``synonym_probability`` is outside ``[0, 1]``.
    """
    if not 0.0 <= synonym_probability <= 1.0:
        raise ConfigError(f"synonym_probability {synonym_probability}: must be in [0, 1]")
    required = tuple(a.name for a in bank.required)
    if set(required) != set(templates.required):
        raise ConfigError(
            f"{templates.path}: the templates were checked for the required attributes "
            f"{', '.join(templates.required)} but the phrase bank {bank.path} has {', '.join(required)}; "
            "load the templates with bank=<this bank>"
        )
    for name in selection:
        bank.attribute(name)
    phrases: dict[str, str] = {}
    for name in required:
        if name not in selection:
            raise ConfigError(f"the selection has no value for the required attribute {name!r}; select one")
        phrases[name] = bank.attribute(name).phrase_of(selection[name])
    optional = [
        a.phrase_of(selection[a.name])
        for a in bank.optional
        if a.name in selection and selection[a.name] != ABSENT
    ]
    phrases[OPTIONAL_BLANK] = join_phrases(optional)

    if fixed_template:
        template = templates.templates[0]
    else:
        template = templates.templates[int(rng.integers(len(templates.templates)))]

    pieces: list[tuple[str, bool]] = []
    in_segment = False
    for piece in _PIECE.split(template):
        if piece == "[":
            in_segment = True
        elif piece == "]":
            in_segment = False
        elif in_segment and not optional:
            continue
        elif piece.startswith("{"):
            pieces.append((phrases[piece[1:-1]], False))
        elif not fixed_template:
            pieces.append((_apply_synonyms(piece, templates.synonyms, rng, synonym_probability), True))
        else:
            pieces.append((piece, True))
    return _tidy(_agree_articles(pieces))
