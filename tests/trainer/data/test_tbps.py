"""TBPS sentence queries: the annotation reader, the query matching, the expanded split and synth's files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from personsearch_train.data import load_cuhk_sysu, load_prw
from personsearch_train.data.structures import GalleryEntry, ImageRecord, PersonSearchSplit, QueryRecord
from personsearch_train.data.synthetic.generator import SyntheticManifest, generate_dataset
from personsearch_train.data.tbps import (
    SentenceQueries,
    TbpsEntry,
    load_sentence_queries,
    match_sentence_queries,
    read_tbps_entries,
    sentence_query_split,
    tbps_annotation_path,
    write_tbps_json,
)
from personsearch_train.errors import ConfigError, DatasetFormatError


def _write(path: Path, entries: object) -> Path:
    path.write_text(json.dumps(entries))
    return path


# ------------------------------------------------------------------------------------ on disk


def test_prw_both_spellings_string_or_list_and_id_forms(prw_root: Path) -> None:
    # The fixture's queries: pid 7 on c1s3_000500, pid 9 on c6s2_000033. MACA's name has no .json.
    _write(
        prw_root / "PRW-TBPS_test",
        [
            {"pic_path": "c1s3_000500.jpg", "id": 7, "desrciption": ["A man in red.", "  Red shirt.  "]},
            {"pic_path": "query_box/9_c6s2_000033.jpg", "id": "9", "description": "A woman in blue."},
            {"pic_path": "c6s2_000033", "id": 9, "desrciption": "Blue dress."},
        ],
    )
    split = load_prw(prw_root, "test")
    queries = load_sentence_queries("prw_tbps", prw_root, split)
    assert queries.sentences == ("A man in red.", "Red shirt.", "A woman in blue.", "Blue dress.")
    assert queries.query_index.dtype == np.int64
    assert queries.query_index.tolist() == [0, 0, 1, 1]
    assert queries.source == str(prw_root / "PRW-TBPS_test")
    assert queries.queries_without_sentences(len(split.queries)) == []


def test_cuhk_sysu_ids_are_the_protocol_idnames(cuhk_root: Path) -> None:
    # TestG50: query 0 is s4.jpg (idname t1), query 1 is s2.jpg (idname t2); MACA compares
    # the number in the idname, not the reader's pid (the query index).
    _write(
        cuhk_root / "CUHK-SYSU-TBPS_test.json",
        [
            {"pic_path": "s2.jpg", "id": "p2", "desrciption": ["second person"]},
            {"pic_path": "Image/SSM/s4.jpg", "id": 1, "desrciption": ["first person", "again"]},
        ],
    )
    split = load_cuhk_sysu(cuhk_root, "test")
    queries = load_sentence_queries("cuhk_sysu_tbps", cuhk_root, split)
    assert queries.sentences == ("second person", "first person", "again")
    assert queries.query_index.tolist() == [1, 0, 0]
    # The query index 0 is no person id of the file: entry [0] names an unknown person.
    _write(cuhk_root / "CUHK-SYSU-TBPS_test.json", [{"pic_path": "s4.jpg", "id": 0, "desrciption": "x"}])
    with pytest.raises(DatasetFormatError, match=r"entry \[0\] \(id 0, pic_path 's4.jpg'\) matches no query"):
        load_sentence_queries("cuhk_sysu_tbps", cuhk_root, split)


def test_annotation_path_prefers_json_and_names_both_when_missing(tmp_path: Path) -> None:
    (tmp_path / "PRW-TBPS_test").write_text("[]")
    assert tbps_annotation_path("prw_tbps", tmp_path) == tmp_path / "PRW-TBPS_test"
    (tmp_path / "PRW-TBPS_test.json").write_text("[]")
    assert tbps_annotation_path("prw_tbps", tmp_path) == tmp_path / "PRW-TBPS_test.json"
    with pytest.raises(DatasetFormatError, match=r"CUHK-SYSU-TBPS_train\.json: file not found \(nor "):
        tbps_annotation_path("cuhk_sysu_tbps", tmp_path, "train")
    with pytest.raises(ConfigError, match="unknown TBPS dataset 'prw'"):
        tbps_annotation_path("prw", tmp_path)
    with pytest.raises(ConfigError, match="split must be 'train' or 'test'"):
        tbps_annotation_path("prw_tbps", tmp_path, "val")


def test_the_split_must_be_the_scenes_test_split(prw_root: Path) -> None:
    with pytest.raises(ConfigError, match="prw_tbps needs the prw test split, got prw train"):
        load_sentence_queries("prw_tbps", prw_root, load_prw(prw_root, "train"))


# ------------------------------------------------------------------------------- bad files


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[{", r"not valid JSON \(Expecting"),
        ('{"pic_path": "a.jpg"}', "the top level must be a list"),
        ("[]", "holds no entries"),
        ('[{"pic_path": "a.jpg", "id": 1, "desrciption": ["ok"]}, 3]', r"entry \[1\]: must be an object"),
        ('[{"id": 1, "desrciption": "x"}]', r"entry \[0\]: 'pic_path' must name"),
        (
            '[{"pic_path": "a.jpg", "id": true, "desrciption": "x"}]',
            r"entry \[0\]: 'id' must be the person id",
        ),
        ('[{"pic_path": "a.jpg", "id": 1}]', r"entry \[0\]: has no 'desrciption'"),
        ('[{"pic_path": "a.jpg", "id": 1, "desrciption": []}]', "a sentence or a non-empty list"),
        ('[{"pic_path": "a.jpg", "id": 1, "desrciption": ["ok", "  "]}]', "sentence 1 of 'desrciption'"),
        ('[{"pic_path": "a.jpg", "id": 1, "desrciption": [7]}]', "sentence 0 of 'desrciption' is 7"),
        (
            '[{"pic_path": "a.jpg", "id": 1, "desrciption": "x", "description": "y"}]',
            "both 'desrciption' and 'description' with different sentences",
        ),
    ],
)
def test_malformed_files_name_the_file_and_entry(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "PRW-TBPS_test.json"
    path.write_text(content)
    with pytest.raises(DatasetFormatError, match=message) as raised:
        read_tbps_entries(path)
    assert str(raised.value).startswith(f"{path}: ")


def test_same_sentences_under_both_spellings_and_missing_file(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "t.json", [{"pic_path": "a.jpg", "id": "p3", "desrciption": "x", "description": "x"}]
    )
    assert read_tbps_entries(path) == [TbpsEntry(pic_path="a.jpg", pid="p3", sentences=("x",))]
    with pytest.raises(DatasetFormatError, match="missing.json: file not found"):
        read_tbps_entries(tmp_path / "missing.json")


# ----------------------------------------------------------------------------- matching


def _prw_split() -> PersonSearchSplit:
    def query(name: str, pid: int) -> QueryRecord:
        return QueryRecord(name=name, path=Path("/x") / name, box=np.zeros(4), pid=pid)

    images = tuple(
        ImageRecord(name=name, path=Path("/x") / name, boxes=np.zeros((0, 4)), pids=np.zeros(0))
        for name in ("c1s1_000001.jpg", "c2s1_000002.jpg", "c3s1_000003.jpg")
    )
    queries = (query("c1s1_000001.jpg", 5), query("c2s1_000002.jpg", 5), query("c3s1_000003.jpg", 8))
    return PersonSearchSplit(dataset="prw", split="test", root=Path("/x"), images=images, queries=queries)


def test_matching_by_image_then_by_unique_id() -> None:
    split = _prw_split()
    entries = [
        TbpsEntry("c2s1_000002.jpg", 5, ("b",)),
        TbpsEntry("query_box/5_c1s1_000001.jpg", "p5", ("a",)),
        # An image no query of id 8 has: the id alone decides, as it names one query.
        TbpsEntry("c9s9_000009.jpg", 8, ("c", "d")),
    ]
    queries = match_sentence_queries(entries, split, [5, 5, 8], source="f.json")
    assert queries.sentences == ("b", "a", "c", "d")
    assert queries.query_index.tolist() == [1, 0, 2, 2]


def test_ambiguous_and_unknown_entries_are_refused() -> None:
    split = _prw_split()
    with pytest.raises(DatasetFormatError, match=r"f.json: entry \[0\] .* matches 2 queries \(images c1s1"):
        match_sentence_queries([TbpsEntry("c9s9_000009.jpg", 5, ("x",))], split, [5, 5, 8], source="f.json")
    with pytest.raises(DatasetFormatError, match=r"entry \[1\] \(id 'p77', .*\) matches no query of the prw"):
        match_sentence_queries(
            [TbpsEntry("c3s1_000003.jpg", 8, ("x",)), TbpsEntry("c3s1_000003.jpg", "p77", ("y",))],
            split,
            [5, 5, 8],
            source="f.json",
        )
    with pytest.raises(DatasetFormatError, match="matches no query"):
        match_sentence_queries([TbpsEntry("a.jpg", "person", ("x",))], split, [5, 5, 8], source="f.json")


# ---------------------------------------------------------------------------- expanded split


def test_expanded_split_repeats_queries_and_their_galleries() -> None:
    split = _prw_split()
    galleries = {
        50: tuple((GalleryEntry(f"g{q}.jpg", None),) for q in range(3)),
        100: tuple((GalleryEntry(f"h{q}.jpg", np.ones(4, np.float32)),) for q in range(3)),
    }
    split = PersonSearchSplit(
        dataset="cuhk_sysu",
        split="test",
        root=split.root,
        images=split.images,
        queries=split.queries,
        galleries=galleries,
    )
    queries = SentenceQueries(("a", "b", "c", "d"), np.array([2, 0, 0, 1]))
    expanded = sentence_query_split(split, queries)
    assert expanded.dataset == "cuhk_sysu" and expanded.images is split.images
    assert expanded.queries == tuple(split.queries[q] for q in (2, 0, 0, 1))
    for size in (50, 100):
        assert expanded.galleries[size] == tuple(galleries[size][q] for q in (2, 0, 0, 1))
    with pytest.raises(ValueError, match="query position 3 is outside the split's 3 queries"):
        sentence_query_split(split, SentenceQueries(("a",), np.array([3])))


def test_sentence_queries_checks_its_index() -> None:
    with pytest.raises(ValueError, match=r"query_index must be \[2\] integers"):
        SentenceQueries(("a", "b"), np.array([0]))
    with pytest.raises(ValueError, match=r"query_index must be \[1\] integers"):
        SentenceQueries(("a",), np.array([0.5]))
    with pytest.raises(ValueError, match="negative position -1"):
        SentenceQueries(("a",), np.array([-1]))


def test_writer_round_trip_and_refusals(tmp_path: Path) -> None:
    entries = [TbpsEntry("s1.jpg", 3, ("one.", "two.")), TbpsEntry("s2.jpg", "p4", ("three.",))]
    path = write_tbps_json(tmp_path / "sub" / "CUHK-SYSU-TBPS_test.json", entries)
    assert json.loads(path.read_text())[0] == {"pic_path": "s1.jpg", "id": 3, "desrciption": ["one.", "two."]}
    assert read_tbps_entries(path) == entries
    assert [p.name for p in path.parent.iterdir()] == ["CUHK-SYSU-TBPS_test.json"]  # no temporary left
    with pytest.raises(ValueError, match=r"entry 0 \(s1.jpg, id 3\) has no or an empty sentence"):
        write_tbps_json(tmp_path / "x.json", [TbpsEntry("s1.jpg", 3, ("ok", " "))])


# ------------------------------------------------------------------------------ synth output


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> SyntheticManifest:
    return generate_dataset(tmp_path_factory.mktemp("tbps_synth") / "out", "tiny", seed=5, workers=1)


@pytest.mark.parametrize(
    ("dataset", "folder", "stem"),
    [("cuhk_sysu_tbps", "CUHK-SYSU", "CUHK-SYSU-TBPS"), ("prw_tbps", "PRW", "PRW-TBPS")],
)
def test_synth_writes_two_sentences_per_query_and_train_person(
    tiny: SyntheticManifest, dataset: str, folder: str, stem: str
) -> None:
    root = tiny.root / folder
    truth = tiny.cuhk_sysu if folder == "CUHK-SYSU" else tiny.prw
    split = (load_cuhk_sysu if folder == "CUHK-SYSU" else load_prw)(root, "test")
    test_entries = read_tbps_entries(root / f"{stem}_test.json")
    assert len(test_entries) == len(split.queries) == len(truth.queries) > 0
    for entry, query in zip(test_entries, truth.queries, strict=True):
        assert (entry.pic_path, entry.pid) == (query.name, query.pid)
        assert len(entry.sentences) == 2 and entry.sentences[0] != entry.sentences[1]
        assert all(sentence.strip() for sentence in entry.sentences)
    queries = load_sentence_queries(dataset, root, split)
    assert queries.num_sentences == 2 * len(split.queries)
    assert queries.query_index.tolist() == np.repeat(np.arange(len(split.queries)), 2).tolist()
    train_entries = read_tbps_entries(root / f"{stem}_train.json")
    labelled = [(scene.name, int(pid)) for scene in truth.train for pid in scene.pids if pid >= 0]
    assert [(e.pic_path, e.pid) for e in train_entries] == labelled
