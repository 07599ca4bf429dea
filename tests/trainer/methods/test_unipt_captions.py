"""UniPT pseudo-caption text: phrase banks, attribute selection, templates and composition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from personsearch_train.errors import ConfigError
from personsearch_train.methods.unipt.caption_templates import (
    DEFAULT_TEMPLATES,
    CaptionTemplates,
    compose_caption,
    join_phrases,
    load_caption_templates,
)
from personsearch_train.methods.unipt.phrase_banks import (
    ABSENT,
    DEFAULT_PHRASE_BANK,
    PAPER_OPTIONAL,
    PAPER_REQUIRED,
    Attribute,
    PhraseBank,
    attribute_probabilities,
    indefinite_article,
    load_phrase_bank,
    select_attributes,
)

COLOURS = ("black", "white", "grey", "red", "blue", "navy", "green", "yellow", "orange", "pink", "purple")
COLOURS += ("brown", "beige")
FIRST_TEMPLATE = (
    "A {age} {gender} with {hair} is {action}[ while {optional}], "
    "wearing {upper_clothes} and {lower_clothes}."
)
BASE_SELECTION = {
    "age": "young",
    "gender": "man",
    "upper_clothes": "red long",
    "lower_clothes": "black trousers",
    "action": "walking",
    "hair": "long black",
}


@pytest.fixture(scope="module")
def bank() -> PhraseBank:
    return load_phrase_bank()


@pytest.fixture(scope="module")
def templates(bank: PhraseBank) -> CaptionTemplates:
    return load_caption_templates(bank=bank)


def _minimal_bank_lines(*, skip: str = "", kinds: dict[str, str] | None = None) -> list[str]:
    """A valid bank with every paper attribute and two entries each (optional: one + none)."""
    kinds = kinds or {}
    lines = ["# a minimal bank"]
    for name in PAPER_REQUIRED + PAPER_OPTIONAL:
        if name == skip:
            continue
        kind = kinds.get(name, "required" if name in PAPER_REQUIRED else "optional")
        lines.append(f"[{name} | {kind} | A photo of a person with {{}}.]")
        if kind == "required":
            lines += [f"{name} one = {name} one", f"{name} two = {name} two"]
        else:
            lines += [f"{name} = with {name}", f"none = without {name}"]
        lines.append("")
    return lines


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- the default bank -------------------------------------------------------------------


def test_default_bank_has_the_paper_attributes_and_value_keys(bank: PhraseBank) -> None:
    assert bank.path == DEFAULT_PHRASE_BANK
    assert tuple(a.name for a in bank.required) == PAPER_REQUIRED
    assert tuple(a.name for a in bank.optional) == PAPER_OPTIONAL
    counts = {a.name: len(a.values) for a in bank.attributes}
    assert counts == {
        "age": 3,
        "gender": 2,
        "upper_clothes": 26,
        "lower_clothes": 39,
        "action": 5,
        "hair": 10,
        "bag": 4,
        "glasses": 2,
        "smoke": 2,
        "hat": 2,
        "cellphone": 2,
        "umbrella": 2,
        "gloves": 2,
        "vehicle": 3,
    }
    assert bank.attribute("age").values == ("young", "middle-aged", "elderly")
    assert bank.attribute("gender").values == ("man", "woman")
    assert bank.attribute("action").values == ("walking", "standing", "running", "cycling", "sitting")
    assert set(bank.attribute("upper_clothes").values) == {
        f"{c} {s}" for c in COLOURS for s in ("long", "short")
    }
    assert set(bank.attribute("lower_clothes").values) == {
        f"{c} {k}" for c in COLOURS for k in ("trousers", "shorts", "skirt")
    }
    assert set(bank.attribute("hair").values) == {
        f"{length} {c}" for length in ("long", "short") for c in ("black", "brown", "blonde", "grey", "red")
    }
    assert bank.attribute("bag").values == ("shoulder bag", "backpack", "handbag", ABSENT)
    assert bank.attribute("vehicle").values == ("bicycle", "motorbike", ABSENT)
    for name in PAPER_OPTIONAL:
        assert ABSENT in bank.attribute(name).values
    assert bank.attribute("upper_clothes").phrase_of("red long") == "a red long-sleeved top"
    assert bank.attribute("lower_clothes").phrase_of("blue skirt") == "a blue skirt"
    assert bank.attribute("action").phrase_of("cycling") == "riding a bicycle"


def test_default_bank_prompts_and_slices_agree(bank: PhraseBank) -> None:
    prompts = bank.prompts()
    slices = bank.slices()
    assert len(prompts) == sum(len(a.values) for a in bank.attributes) == 104
    assert list(slices) == [a.name for a in bank.attributes]
    start = 0
    for attribute in bank.attributes:
        columns = slices[attribute.name]
        assert columns == slice(start, start + len(attribute.values))
        assert tuple(prompts[columns]) == attribute.prompts()
        start = columns.stop
    assert len(set(prompts)) == len(prompts)
    assert (
        bank.attribute("upper_clothes").prompts()[0]
        == "A photo of a person wearing a black long-sleeved top."
    )
    # The frame's article agrees with the phrase; the phrase is left as the bank wrote it.
    assert bank.attribute("age").prompts() == (
        "A photo of a young person.",
        "A photo of a middle-aged person.",
        "A photo of an elderly person.",
    )


def test_unknown_attribute_and_value_are_config_errors(bank: PhraseBank) -> None:
    with pytest.raises(ConfigError, match="'shoes'"):
        bank.attribute("shoes")
    with pytest.raises(ConfigError, match="'purple'"):
        bank.attribute("hair").phrase_of("purple")


@pytest.mark.parametrize(
    ("word", "article"),
    [
        ("elderly", "an"),
        ("young", "a"),
        ("orange", "an"),
        ("uniform", "a"),
        ("hour", "an"),
        ("Umbrella", "an"),
    ],
)
def test_indefinite_article(word: str, article: str) -> None:
    assert indefinite_article(word) == article


# --- bank file errors -------------------------------------------------------------------

# (lines put before a valid minimal bank, line number the error must name, message part)
BANK_ERRORS = [
    (["# comment", "", "red = a red top"], 3, "before any section header"),
    (["[extra | required]"], 1, "malformed section header"),
    (["", "[extra | required | A photo of {}."], 2, "does not end with ']'"),
    (["[Extra | required | A photo of {}.]"], 1, "not valid"),
    (["[optional | optional | A photo of {}.]", "x = x", "none = no"], 1, "reserved"),
    (["# c", "[extra | maybe | A photo of a person {}.]"], 2, "kind 'maybe'"),
    (["[extra | required | A photo.]"], 1, "exactly one {}"),
    (["[extra | required | A {} photo of {}.]"], 1, "exactly one {}"),
    (["[extra | required | A photo of {}.]", "a = a", "novalue"], 3, "not 'value = phrase'"),
    (["[extra | required | A photo of {}.]", "a = a", "b ="], 3, "not 'value = phrase'"),
    (["[extra | required | A photo of {}.]", "a = a", "= phrase"], 3, "not 'value = phrase'"),
    (["[extra | required | A photo of {}.]", "Red = red"], 2, "capitals"),
    (["[extra | required | A photo of {}.]", "a = a", "b = b", "", "a = again"], 5, "listed twice"),
    (["# x", "[extra | optional | A person {}.]", "a = with a", "b = with b"], 2, "no 'none' entry"),
    (["[extra | optional | A person {}.]", "none = without"], 1, "only the 'none' entry"),
    (["[extra | required | A person {}.]", "a = a", "none = nothing"], 3, "has a 'none' entry"),
    (["", "", "[extra | required | A person {}.]", "a = a"], 3, "at least 2 values"),
]


@pytest.mark.parametrize(("prefix", "line", "message"), BANK_ERRORS)
def test_bank_errors_name_the_line(tmp_path: Path, prefix: list[str], line: int, message: str) -> None:
    path = _write(tmp_path / "bank.txt", prefix + _minimal_bank_lines())
    with pytest.raises(ConfigError) as error:
        load_phrase_bank(path)
    assert f"{path}:{line}: " in str(error.value)
    assert message in str(error.value)


def test_duplicate_attribute_names_the_second_header(tmp_path: Path) -> None:
    lines = _minimal_bank_lines()
    duplicate = len(lines) + 2
    path = _write(tmp_path / "bank.txt", [*lines, "", "[age | required | A {} person.]", "a = a", "b = b"])
    with pytest.raises(
        ConfigError, match=rf":{duplicate}: attribute 'age' is defined twice \(first at line 2\)"
    ):
        load_phrase_bank(path)


@pytest.mark.parametrize("missing", ["hair", "umbrella"])
def test_missing_paper_attribute_is_named(tmp_path: Path, missing: str) -> None:
    lines = _minimal_bank_lines(skip=missing)
    path = _write(tmp_path / "bank.txt", lines)
    with pytest.raises(ConfigError) as error:
        load_phrase_bank(path)
    message = str(error.value)
    kind = "required" if missing in PAPER_REQUIRED else "optional"
    assert message.startswith(f"{path}:{len(lines)}: ")
    assert f"'{missing}'" in message
    assert f"[{missing} | {kind} |" in message


def test_paper_attribute_of_the_wrong_kind(tmp_path: Path) -> None:
    lines = _minimal_bank_lines(kinds={"hat": "required"})
    header = lines.index("[hat | required | A photo of a person with {}.]") + 1
    path = _write(tmp_path / "bank.txt", lines)
    with pytest.raises(ConfigError, match=rf":{header}: attribute 'hat' must be optional"):
        load_phrase_bank(path)


@pytest.mark.parametrize("text", ["", "# only a comment\n\n"])
def test_empty_bank(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bank.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="no attribute sections"):
        load_phrase_bank(path)


def test_missing_bank_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_phrase_bank(tmp_path / "nope.txt")


def test_extra_user_attributes_are_allowed(tmp_path: Path) -> None:
    lines = [
        *_minimal_bank_lines(),
        "[shoes | optional | A photo of a person {}.]",
        "boots = in boots",
        "none = x",
    ]
    loaded = load_phrase_bank(_write(tmp_path / "bank.txt", lines))
    assert loaded.attributes[-1].name == "shoes"
    assert not loaded.attribute("shoes").required
    assert len(loaded.prompts()) == 6 * 2 + 8 * 2 + 2


# --- selection --------------------------------------------------------------------------

TINY = PhraseBank(
    attributes=(
        Attribute("gender", True, "A photo of a {}.", ("man", "woman"), ("man", "woman"), 1),
        Attribute(
            "hat", False, "A photo of a person {}.", ("hat", ABSENT), ("wearing a hat", "with no hat"), 4
        ),
        Attribute(
            "hair",
            True,
            "A photo of a person with {}.",
            ("long", "short", "bald"),
            ("long hair", "short hair", "no hair"),
            7,
        ),
    ),
    path=Path("tiny.txt"),
)
# Columns: gender (man, woman), hat (hat, none), hair (long, short, bald).
TINY_SCORES = np.array(
    [
        [0.30, 0.10, 0.50, 0.20, 0.10, 0.40, 0.20],  # hat clearly there
        [0.10, 0.30, 0.30, 0.20, 0.40, 0.10, 0.20],  # hat likely but not sure enough
        [0.20, 0.25, 0.10, 0.50, 0.20, 0.20, 0.60],  # best hat value is "none"
    ]
)
SCALE = 10.0


def _softmax_by_hand(columns: np.ndarray) -> np.ndarray:
    weights = np.exp(SCALE * columns)
    return weights / weights.sum(axis=1, keepdims=True)


def test_attribute_probabilities_match_a_hand_softmax() -> None:
    probabilities = attribute_probabilities(TINY_SCORES, TINY, logit_scale=SCALE)
    assert list(probabilities) == ["gender", "hat", "hair"]
    np.testing.assert_allclose(probabilities["gender"], _softmax_by_hand(TINY_SCORES[:, 0:2]))
    np.testing.assert_allclose(probabilities["hat"], _softmax_by_hand(TINY_SCORES[:, 2:4]))
    np.testing.assert_allclose(probabilities["hair"], _softmax_by_hand(TINY_SCORES[:, 4:7]))
    assert probabilities["hair"].dtype == np.float64
    # The hand values behind the selection test below.
    hat = _softmax_by_hand(TINY_SCORES[:, 2:4])[:, 0]
    assert hat[0] > 0.9 and 0.5 < hat[1] <= 0.9 and hat[2] < 0.5


def test_softmax_is_stable_at_large_scales() -> None:
    probabilities = attribute_probabilities(TINY_SCORES, TINY, logit_scale=1e5)
    for values in probabilities.values():
        assert np.isfinite(values).all()
        np.testing.assert_allclose(values.sum(axis=1), 1.0)


def test_select_attributes_argmax_and_threshold() -> None:
    selections = select_attributes(TINY_SCORES, TINY, logit_scale=SCALE)
    assert selections == [
        {"gender": "man", "hat": "hat", "hair": "short"},
        {"gender": "woman", "hair": "long"},
        {"gender": "woman", "hair": "bald"},
    ]


def test_select_attributes_threshold_is_strict() -> None:
    # The function's own value (equal to the hand softmax up to rounding, checked above).
    p_hat = float(attribute_probabilities(TINY_SCORES[:1], TINY, logit_scale=SCALE)["hat"][0, 0])
    assert select_attributes(TINY_SCORES[:1], TINY, logit_scale=SCALE, threshold=p_hat)[0] == {
        "gender": "man",
        "hair": "short",
    }
    kept = select_attributes(TINY_SCORES[:1], TINY, logit_scale=SCALE, threshold=np.nextafter(p_hat, 0.0))
    assert kept[0]["hat"] == "hat"
    # A low threshold keeps a likely hat but never the "none" value.
    loose = select_attributes(TINY_SCORES, TINY, logit_scale=SCALE, threshold=0.0)
    assert [row.get("hat") for row in loose] == ["hat", "hat", None]


def test_select_attributes_without_optional() -> None:
    selections = select_attributes(TINY_SCORES, TINY, logit_scale=SCALE, threshold=0.0, use_optional=False)
    assert all(set(row) == {"gender", "hair"} for row in selections)


def test_select_attributes_on_no_images() -> None:
    assert select_attributes(np.zeros((0, 7)), TINY, logit_scale=SCALE) == []


@pytest.mark.parametrize(
    ("scores", "kwargs", "message"),
    [
        (np.zeros((2, 6)), {}, r"shape \(2, 6\).*7 prompts"),
        (np.zeros(7), {}, r"shape \(7,\).*7 prompts"),
        (np.full((1, 7), np.nan), {}, "NaN"),
        (np.zeros((1, 7)), {"logit_scale": 0.0}, "logit_scale"),
        (np.zeros((1, 7)), {"threshold": 1.5}, "threshold"),
        (np.zeros((1, 7)), {"threshold": -0.1}, "threshold"),
    ],
)
def test_select_attributes_checks_its_inputs(scores: np.ndarray, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        select_attributes(scores, TINY, **{"logit_scale": SCALE, **kwargs})


# --- templates --------------------------------------------------------------------------


def test_default_templates_load(templates: CaptionTemplates) -> None:
    assert templates.path == DEFAULT_TEMPLATES
    assert len(set(templates.templates)) >= 300
    assert templates.templates[0] == FIRST_TEMPLATE
    assert 15 <= len(templates.synonyms) <= 25
    file_lines = DEFAULT_TEMPLATES.read_text(encoding="utf-8").splitlines()
    for template, line in zip(templates.templates, templates.lines, strict=True):
        assert file_lines[line - 1] == template
    # Checked without a bank too (the paper's required attributes).
    assert load_caption_templates().templates == templates.templates


def _random_selection(bank: PhraseBank, rng: np.random.Generator, optional: bool) -> dict[str, str]:
    selection = {a.name: a.values[int(rng.integers(len(a.values)))] for a in bank.required}
    if optional:
        for attribute in bank.optional:
            present = [v for v in attribute.values if v != ABSENT]
            if rng.random() < 0.3:
                selection[attribute.name] = present[int(rng.integers(len(present)))]
    return selection


def test_captions_have_no_template_syntax_left(bank: PhraseBank, templates: CaptionTemplates) -> None:
    rng = np.random.default_rng(0)
    for index in range(200):
        selection = _random_selection(bank, rng, optional=index % 2 == 0)
        caption = compose_caption(selection, bank, templates, rng)
        assert not set("{}[]") & set(caption), caption
        assert "  " not in caption and " ," not in caption and " ." not in caption, caption
        assert caption[0].isupper() and caption.endswith("."), caption
        for name, value in selection.items():
            phrase = bank.attribute(name).phrase_of(value)
            # A phrase that starts a sentence is capitalised.
            assert phrase in caption or phrase[0].upper() + phrase[1:] in caption, (name, caption)


def test_optional_segment_dropped_or_filled(bank: PhraseBank, templates: CaptionTemplates) -> None:
    rng = np.random.default_rng(0)
    plain = compose_caption(BASE_SELECTION, bank, templates, rng, fixed_template=True)
    assert (
        plain
        == "A young man with long black hair is walking, wearing a red long-sleeved top and black trousers."
    )
    # "none" counts as not kept.
    with_none = compose_caption({**BASE_SELECTION, "hat": ABSENT}, bank, templates, rng, fixed_template=True)
    assert with_none == plain
    one = compose_caption({**BASE_SELECTION, "hat": "hat"}, bank, templates, rng, fixed_template=True)
    assert one == (
        "A young man with long black hair is walking while wearing a hat, "
        "wearing a red long-sleeved top and black trousers."
    )
    # Given out of order; phrases follow the bank order (bag, glasses, ..., hat, ..., vehicle).
    three = {"vehicle": "bicycle", "hat": "hat", "bag": "backpack", **BASE_SELECTION}
    assert compose_caption(three, bank, templates, rng, fixed_template=True) == (
        "A young man with long black hair is walking while carrying a backpack, wearing a hat and pushing a "
        "bicycle, wearing a red long-sleeved top and black trousers."
    )


def test_join_phrases() -> None:
    assert join_phrases([]) == ""
    assert join_phrases(["a"]) == "a"
    assert join_phrases(["a", "b"]) == "a and b"
    assert join_phrases(["a", "b", "c"]) == "a, b and c"


def test_articles_follow_the_phrase(bank: PhraseBank, templates: CaptionTemplates) -> None:
    selection = {**BASE_SELECTION, "age": "elderly", "upper_clothes": "orange short"}
    caption = compose_caption(selection, bank, templates, np.random.default_rng(0), fixed_template=True)
    assert caption.startswith("An elderly man with long black hair")
    assert "an orange short-sleeved top" in caption


def _templates_file(tmp_path: Path, templates: list[str], synonyms: list[str]) -> Path:
    return _write(tmp_path / "templates.txt", ["[templates]", *templates, "[synonyms]", *synonyms])


def test_synonyms_replace_template_words_only(tmp_path: Path, bank: PhraseBank) -> None:
    path = _templates_file(
        tmp_path,
        ["There is a person, a {age} {gender} with {hair}, " + FIRST_TEMPLATE.split("with {hair} ")[1]],
        ["wearing = clad in", "person = individual", "top = shirt", "age = era", "hat = cap"],
    )
    loaded = load_caption_templates(path, bank=bank)
    selection = {**BASE_SELECTION, "age": "elderly", "hat": "hat"}
    always = compose_caption(selection, bank, loaded, np.random.default_rng(0), synonym_probability=1.0)
    # The template's "wearing" and "person" change; "wearing a hat", "top" (phrases) and the
    # {age} blank do not; the template's article agrees with the substitute.
    assert always == (
        "There is an individual, an elderly man with long black hair, is walking while wearing a hat, "
        "clad in a red long-sleeved top and black trousers."
    )
    never = compose_caption(selection, bank, loaded, np.random.default_rng(0), synonym_probability=0.0)
    assert never == (
        "There is a person, an elderly man with long black hair, is walking while wearing a hat, "
        "wearing a red long-sleeved top and black trousers."
    )


def test_synonyms_choose_among_alternatives(tmp_path: Path, bank: PhraseBank) -> None:
    path = _templates_file(tmp_path, [FIRST_TEMPLATE], ["wearing = clad in | dressed in"])
    loaded = load_caption_templates(path, bank=bank)
    rng = np.random.default_rng(1)
    seen = {
        compose_caption(BASE_SELECTION, bank, loaded, rng, synonym_probability=0.5)
        .split(", ")[1]
        .split(" a ")[0]
        for _ in range(100)
    }
    assert seen == {"wearing", "clad in", "dressed in"}


def test_fixed_template_uses_the_first_without_synonyms(tmp_path: Path, bank: PhraseBank) -> None:
    second = (
        "{action}[ while {optional}], a {age} {gender} with {hair} wears {upper_clothes} and {lower_clothes}."
    )
    path = _templates_file(tmp_path, [FIRST_TEMPLATE, second], ["wearing = clad in"])
    loaded = load_caption_templates(path, bank=bank)
    expected = (
        "A young man with long black hair is walking, wearing a red long-sleeved top and black trousers."
    )
    for seed in range(10):
        rng = np.random.default_rng(seed)
        assert compose_caption(
            BASE_SELECTION, bank, loaded, rng, fixed_template=True, synonym_probability=1
        ) == (expected)
    drawn = {compose_caption(BASE_SELECTION, bank, loaded, np.random.default_rng(s))[:7] for s in range(40)}
    assert drawn == {"A young", "Walking"}


def test_same_seed_same_caption(bank: PhraseBank, templates: CaptionTemplates) -> None:
    selections = [_random_selection(bank, np.random.default_rng(i), optional=True) for i in range(20)]

    def captions(seed: int) -> list[str]:
        rng = np.random.default_rng(seed)
        return [compose_caption(s, bank, templates, rng) for s in selections]

    assert captions(3) == captions(3)
    assert captions(3) != captions(4)


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        ({k: v for k, v in BASE_SELECTION.items() if k != "hair"}, "required attribute 'hair'"),
        ({**BASE_SELECTION, "gender": "robot"}, "no value 'robot'"),
        ({**BASE_SELECTION, "bag": "suitcase"}, "no value 'suitcase'"),
        ({**BASE_SELECTION, "shoes": "boots"}, "no attribute 'shoes'"),
    ],
)
def test_compose_rejects_bad_selections(
    bank: PhraseBank, templates: CaptionTemplates, selection: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        compose_caption(selection, bank, templates, np.random.default_rng(0))


def test_compose_checks_probability_and_bank(
    tmp_path: Path, bank: PhraseBank, templates: CaptionTemplates
) -> None:
    with pytest.raises(ConfigError, match="synonym_probability"):
        compose_caption(BASE_SELECTION, bank, templates, np.random.default_rng(0), synonym_probability=2.0)
    lines = [
        *_minimal_bank_lines(),
        "[shoes | required | A photo of a person in {}.]",
        "boots = boots",
        "x = x",
    ]
    other = load_phrase_bank(_write(tmp_path / "bank.txt", lines))
    with pytest.raises(ConfigError, match="bank="):
        compose_caption(BASE_SELECTION, other, templates, np.random.default_rng(0))


def test_templates_follow_the_bank_required_attributes(tmp_path: Path) -> None:
    lines = [
        *_minimal_bank_lines(),
        "[shoes | required | A photo of a person in {}.]",
        "boots = boots",
        "x = x",
    ]
    other = load_phrase_bank(_write(tmp_path / "bank.txt", lines))
    with_shoes = FIRST_TEMPLATE.replace("{lower_clothes}.", "{lower_clothes} and {shoes}.")
    plain = _templates_file(tmp_path, [FIRST_TEMPLATE], [])
    with pytest.raises(ConfigError, match=r":2: required blank \{shoes\} appears 0 times"):
        load_caption_templates(plain, bank=other)
    path = _templates_file(tmp_path, [with_shoes], [])
    assert load_caption_templates(path, bank=other).required == (*PAPER_REQUIRED, "shoes")
    with pytest.raises(ConfigError, match=r":2: unknown blank \{shoes\}"):
        load_caption_templates(path)


# --- templates file errors --------------------------------------------------------------

# (file lines, line number the error must name, message part); checked without a bank.
T = FIRST_TEMPLATE
TEMPLATE_ERRORS = [
    (["# comment", T], 2, "before the [templates] section"),
    (["[templates]", T, "", "[other]"], 4, "unknown section"),
    (["[templates]", T, T.replace("{hair}", "{hair")], 3, "inside a blank"),
    (["[templates]", T.replace("{lower_clothes}", "{lower_clothes")], 2, "never closed"),
    (["[templates]", T, T.replace("{hair}", "hair}")], 3, "without a matching '{'"),
    (["[templates]", T.replace("]", "")], 2, "'[' is never closed"),
    (["[templates]", "#", T.replace("[", "")], 3, "']' without a matching '['"),
    (["[templates]", T.replace("[ while {optional}]", "[ while [{optional}]]")], 2, "nested"),
    (["[templates]", T.replace(".", "[ too].")], 2, "2 optional segments"),
    (["[templates]", T.replace("[ while {optional}]", "")], 2, "0 optional segments"),
    (
        ["[templates]", T.replace("[ while {optional}]", "[ while], {optional}")],
        2,
        "outside the [ ... ] segment",
    ),
    (["[templates]", T.replace("{optional}", "busy")], 2, "0 {optional} blanks"),
    (["[templates]", T.replace("{optional}", "{optional} and {optional}")], 2, "2 {optional} blanks"),
    (["[templates]", T.replace("{hair}", "{hair} and {colour}")], 2, "unknown blank {colour}"),
    (["[templates]", T.replace("{hair}", "{hair} and {hat}")], 2, "{hat} is an optional attribute"),
    (["[templates]", T.replace("{age} ", "")], 2, "{age} appears 0 times"),
    (["[templates]", T.replace("{age}", "{age} {age}")], 2, "{age} appears 2 times"),
    (
        ["[templates]", T.replace("{optional}]", "{optional} with {hair}]").replace("with {hair} is", "is")],
        2,
        "inside the optional",
    ),
    (["[templates]", T, "[synonyms]", "person pedestrian"], 4, "not 'words = alternative"),
    (["[templates]", T, "[synonyms]", "person = a |"], 4, "not 'words = alternative"),
    (["[templates]", T, "[synonyms]", "", "- = dash"], 5, "start and end with a letter"),
    (["[templates]", T, "[synonyms]", "person = {age}"], 4, "brace or bracket"),
    (["[templates]", T, "[synonyms]", "person = a", "person = b"], 5, "listed twice (first at line 4)"),
    (["[templates]", "# none yet", "[synonyms]", "person = individual"], 4, "no templates"),
]


@pytest.mark.parametrize(("lines", "line", "message"), TEMPLATE_ERRORS)
def test_template_errors_name_the_line(tmp_path: Path, lines: list[str], line: int, message: str) -> None:
    path = _write(tmp_path / "templates.txt", lines)
    with pytest.raises(ConfigError) as error:
        load_caption_templates(path)
    assert f"{path}:{line}: " in str(error.value)
    assert message in str(error.value)


def test_missing_templates_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_caption_templates(tmp_path / "nope.txt")
