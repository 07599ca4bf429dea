"""Text-based person search in full images (TBPS): sentence queries for CUHK-SYSU and PRW.

The CUHK-SYSU-TBPS and PRW-TBPS benchmarks keep the scenes, galleries and protocols of
CUHK-SYSU and PRW and give each query person as sentences instead of a crop. The
annotations (github.com/Dacun/Text-based-Person-Search, read by MACA, SIGIR 2024) sit in
the dataset folder beside the usual layout::

    CUHK-SYSU-TBPS/   Image/, annotation/, CUHK-SYSU-TBPS_train, CUHK-SYSU-TBPS_test
    PRW-TBPS/         frames/, annotations/, query_box/, ..., PRW-TBPS_train, PRW-TBPS_test

Each file is a JSON list with one object per person appearance::

    {"pic_path": "s15533.jpg", "id": 6573, "desrciption": ["A man in ...", "..."]}

* ``pic_path``: the scene image (``c1s1_000151.jpg`` for PRW); a path, a PRW
  ``query_box`` crop name ``{pid}_{frame}.jpg`` or a name without extension are accepted;
* ``id``: the person's id. PRW: the id of the annotation files (:attr:`QueryRecord.pid`).
  CUHK-SYSU: the number in the ``idname`` of the ``TestG50`` query (``"p6573"`` -> 6573),
  which is what MACA compares (``int(idname[1:])``); the reader's own query pid is the
  query's index instead, and is used only when the protocol file has no ``idname``.
  An int, a digit string or a string like ``"p6573"``;
* ``desrciption`` (sic, the public files' spelling) or ``description``: one sentence or a
  list of sentences.

Like the public loaders, every sentence is one query: :func:`sentence_query_split` repeats
each query once per sentence (and its CUHK-SYSU gallery lists with it), so the existing
protocol functions (:func:`~personsearch_train.evaluation.person_search.evaluate_search`)
score sentence queries unchanged. Only numpy and the standard library are needed here.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from personsearch_train.atomic_files import atomic_write_bytes
from personsearch_train.data.matfile import flat, load_mat, mat_string, single_record
from personsearch_train.data.structures import PersonSearchSplit
from personsearch_train.errors import ConfigError, DatasetFormatError

__all__ = [
    "TBPS_DATASETS",
    "TBPS_FILE_STEMS",
    "SentenceQueries",
    "TbpsEntry",
    "load_sentence_queries",
    "match_sentence_queries",
    "read_tbps_entries",
    "sentence_query_split",
    "tbps_annotation_path",
    "write_tbps_json",
]

#: TBPS dataset name -> the person-search reader (and protocol) of its scenes.
TBPS_DATASETS: Mapping[str, str] = {"cuhk_sysu_tbps": "cuhk_sysu", "prw_tbps": "prw"}
#: TBPS dataset name -> stem of its annotation files (``<stem>_train``, ``<stem>_test``).
TBPS_FILE_STEMS: Mapping[str, str] = {"cuhk_sysu_tbps": "CUHK-SYSU-TBPS", "prw_tbps": "PRW-TBPS"}

_SENTENCE_KEYS = ("desrciption", "description")
# "p6573" -> 6573; the CUHK-SYSU idname, and the string form of a JSON id.
_ID_TEXT = re.compile(r"^[A-Za-z]*(-?\d+)$")
# A PRW query_box crop: "{pid}_{frame}.jpg".
_CROP_NAME = re.compile(r"^-?\d+_(.+)$")
_CUHK_PROTOCOL = Path("annotation") / "test" / "train_test" / "TestG50.mat"


@dataclass(frozen=True)
class TbpsEntry:
    """One object of a TBPS annotation file.

    Attributes:
        pic_path: The scene image (as the file spells it).
        pid: The person's id as the file gives it (an int, or a string like ``"p12"``).
        sentences: The sentences describing the person, each one query.
    """

    pic_path: str
    pid: int | str
    sentences: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class SentenceQueries:
    """The sentence queries of a TBPS test split, each tied to one query of the split.

    Attributes:
        sentences: ``S`` sentences, in file order (entry by entry, sentence by sentence).
        query_index: ``[S]`` int64, the position in ``split.queries`` of each sentence's
            query person.
        source: The annotation file they came from (for messages).

    Raises:
        ValueError: ``query_index`` not one int per sentence, or negative.
    """

    sentences: tuple[str, ...]
    query_index: np.ndarray
    source: str = "sentence queries"

    def __post_init__(self) -> None:
        index = np.asarray(self.query_index)
        if index.dtype.kind not in "iu" or index.shape != (len(self.sentences),):
            raise ValueError(
                f"query_index must be [{len(self.sentences)}] integers (one per sentence), got "
                f"dtype {index.dtype} shape {index.shape}"
            )
        if len(index) and int(index.min()) < 0:
            raise ValueError(f"query_index holds a negative position {int(index.min())}")
        object.__setattr__(self, "sentences", tuple(str(s) for s in self.sentences))
        object.__setattr__(self, "query_index", index.astype(np.int64))

    @property
    def num_sentences(self) -> int:
        """Number of sentence queries ``S``."""
        return len(self.sentences)

    def queries_without_sentences(self, num_queries: int) -> list[int]:
        """Positions in ``split.queries`` (of ``num_queries``) that no sentence describes."""
        described = set(self.query_index.tolist())
        return [q for q in range(num_queries) if q not in described]


def tbps_annotation_path(dataset: str, root: str | Path, split: str = "test") -> Path:
    """Find a TBPS annotation file: ``<root>/<stem>_<split>.json`` or the same name without ``.json``.

    Args:
        dataset: ``"cuhk_sysu_tbps"`` or ``"prw_tbps"``.
        root: The dataset folder (the CUHK-SYSU resp. PRW layout).
        split: ``"train"`` or ``"test"``.

    Returns:
        The file's path.

    Raises:
        ConfigError: An unknown dataset or split.
        DatasetFormatError: Neither file exists.
    """
    if dataset not in TBPS_FILE_STEMS:
        raise ConfigError(f"unknown TBPS dataset {dataset!r}; choose one of {', '.join(TBPS_FILE_STEMS)}")
    if split not in ("train", "test"):
        raise ConfigError(f"TBPS split must be 'train' or 'test', got {split!r}")
    base = Path(root).expanduser() / f"{TBPS_FILE_STEMS[dataset]}_{split}"
    # MACA's layout names the files without an extension; `personsearch synth` writes .json.
    for path in (base.with_name(base.name + ".json"), base):
        if path.is_file():
            return path
    raise DatasetFormatError(
        f"{base}.json: file not found (nor {base.name} without .json); put the {dataset} sentence "
        f"annotations ({TBPS_FILE_STEMS[dataset]}_{split} of github.com/Dacun/Text-based-Person-Search) "
        f"in the dataset folder {Path(root)}"
    )


def _sentences(item: Mapping[str, Any], where: str) -> tuple[str, ...]:
    present = [key for key in _SENTENCE_KEYS if key in item]
    if not present:
        raise DatasetFormatError(f"{where}: has no 'desrciption' (or 'description') with its sentences")
    if len(present) > 1 and item[present[0]] != item[present[1]]:
        raise DatasetFormatError(
            f"{where}: has both 'desrciption' and 'description' with different sentences; keep one"
        )
    value = item[present[0]]
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values:
        raise DatasetFormatError(
            f"{where}: '{present[0]}' must be a sentence or a non-empty list of sentences, "
            f"got {type(value).__name__} {value!r:.60}"
        )
    out = []
    for k, sentence in enumerate(values):
        if not isinstance(sentence, str) or not sentence.strip():
            raise DatasetFormatError(
                f"{where}: sentence {k} of '{present[0]}' is {sentence!r:.60}; every sentence must be "
                "non-empty text"
            )
        out.append(sentence.strip())
    return tuple(out)


def read_tbps_entries(path: str | Path) -> list[TbpsEntry]:
    """Read and check a TBPS annotation file.

    Args:
        path: The JSON file (a list of ``{"pic_path", "id", "desrciption"}`` objects).

    Returns:
        Its entries in file order.

    Raises:
        DatasetFormatError: A missing or unreadable file, invalid JSON, a top level
            that is not a list, or an entry without ``pic_path`` / ``id`` / sentences,
            or with an empty sentence (the message names the file and entry index).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetFormatError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(f"{path}: cannot read it as UTF-8 text ({exc})") from None
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    if not isinstance(data, list):
        raise DatasetFormatError(
            f"{path}: the top level must be a list of {{'pic_path', 'id', 'desrciption'}} objects, "
            f"found {type(data).__name__}"
        )
    entries = []
    for i, item in enumerate(data):
        where = f"{path}: entry [{i}]"
        if not isinstance(item, dict):
            raise DatasetFormatError(f"{where}: must be an object, found {type(item).__name__}")
        pic_path = item.get("pic_path")
        if not isinstance(pic_path, str) or not pic_path.strip():
            raise DatasetFormatError(
                f"{where}: 'pic_path' must name the query's scene image, got {pic_path!r}"
            )
        pid = item.get("id")
        if isinstance(pid, bool) or not isinstance(pid, (int, str)):
            raise DatasetFormatError(
                f"{where}: 'id' must be the person id (an int or a string like 'p12'), got {pid!r}"
            )
        entries.append(TbpsEntry(pic_path=pic_path.strip(), pid=pid, sentences=_sentences(item, where)))
    if not entries:
        raise DatasetFormatError(f"{path}: holds no entries; expected one per query person")
    return entries


def _id_number(value: int | str) -> int | None:
    """The integer of an id: ``12``, ``"12"`` and ``"p12"`` all give 12; None if it has none."""
    if isinstance(value, int):
        return int(value)
    match = _ID_TEXT.match(value.strip())
    return int(match.group(1)) if match else None


def _image_names(pic_path: str) -> set[str]:
    """The scene image names ``pic_path`` may stand for (see the module docstring)."""
    # Both separators: the public files were made on several systems.
    name = PureWindowsPath(PurePosixPath(pic_path).name).name
    names = {name}
    crop = _CROP_NAME.match(name)
    if crop:
        names.add(crop.group(1))
    names |= {n + ".jpg" for n in names if not Path(n).suffix}
    return names


def _cuhk_query_ids(root: Path, num_queries: int) -> list[int] | None:
    """Per query, the number in its ``TestG50`` ``idname``; None when the file does not name them."""
    path = root / _CUHK_PROTOCOL
    protocol = np.asarray(load_mat(path, ["TestG50"])["TestG50"])
    if "Query" not in (protocol.dtype.names or ()):
        raise DatasetFormatError(f"{path}: variable TestG50 has no Query field")
    items = flat(protocol)
    if len(items) != num_queries:
        raise DatasetFormatError(
            f"{path}: {len(items)} queries, but the test split has {num_queries}; "
            "is the split read from this folder?"
        )
    ids = []
    for q, item in enumerate(items):
        where = f"{path}: TestG50({q + 1}).Query"
        query = single_record(item["Query"], where)
        if "idname" not in (query.dtype.names or ()):
            return None
        number = _id_number(mat_string(query["idname"], where + ".idname"))
        if number is None:
            return None
        ids.append(number)
    return ids


def _query_person_ids(split: PersonSearchSplit) -> list[int]:
    """The id a TBPS file uses for each query person of ``split`` (see the module docstring)."""
    if split.dataset == "cuhk_sysu":
        ids = _cuhk_query_ids(Path(split.root), len(split.queries))
        if ids is not None:
            return ids
    return [int(query.pid) for query in split.queries]


def match_sentence_queries(
    entries: Sequence[TbpsEntry],
    split: PersonSearchSplit,
    person_ids: Sequence[int],
    *,
    source: str,
) -> SentenceQueries:
    """Tie every entry to one query of ``split`` by person id and image name.

    An entry matches the query of its id whose scene image ``pic_path`` names; when
    ``pic_path`` names none of them, the id alone decides if exactly one query has it.

    Args:
        entries: The annotation file's entries.
        split: The test split (``queries`` in the dataset's order).
        person_ids: The id of each query person as the file spells it (one per query).
        source: The annotation file, for messages.

    Returns:
        The sentences, each with its query's position.

    Raises:
        DatasetFormatError: An entry whose id no query has, or that matches several
            queries (the message names the file and entry index).
        ValueError: ``person_ids`` not one per query.
    """
    if len(person_ids) != len(split.queries):
        raise ValueError(f"{len(person_ids)} person ids for {len(split.queries)} queries")
    by_id: dict[int, list[int]] = {}
    for q, pid in enumerate(person_ids):
        by_id.setdefault(int(pid), []).append(q)
    sentences: list[str] = []
    positions: list[int] = []
    for i, entry in enumerate(entries):
        where = f"{source}: entry [{i}] (id {entry.pid!r}, pic_path {entry.pic_path!r})"
        number = _id_number(entry.pid)
        candidates = by_id.get(number, []) if number is not None else []
        if not candidates:
            raise DatasetFormatError(
                f"{where} matches no query of the {split.dataset} {split.split} split: no query person has "
                "this id. Is the file for this dataset folder (the test file, not the train one)?"
            )
        names = _image_names(entry.pic_path)
        by_name = [q for q in candidates if split.queries[q].name in names]
        if len(by_name) == 1:
            match = by_name[0]
        elif len(by_name) == 0 and len(candidates) == 1:
            match = candidates[0]
        else:
            listed = ", ".join(sorted({split.queries[q].name for q in (by_name or candidates)}))
            raise DatasetFormatError(
                f"{where} matches {len(by_name or candidates)} queries (images {listed}); pic_path must "
                "name the query's scene image"
            )
        sentences += entry.sentences
        positions += [match] * len(entry.sentences)
    return SentenceQueries(
        sentences=tuple(sentences), query_index=np.asarray(positions, dtype=np.int64), source=source
    )


def load_sentence_queries(
    dataset: str, root: str | Path, split: PersonSearchSplit, *, annotation_file: str | Path | None = None
) -> SentenceQueries:
    """Read a TBPS test file and tie its sentences to the queries of ``split``.

    Args:
        dataset: ``"cuhk_sysu_tbps"`` or ``"prw_tbps"``.
        root: The dataset folder (holding ``<stem>_test[.json]``).
        split: Its person-search test split (:func:`~personsearch_train.data.registry.load_split`
            of the dataset in :data:`TBPS_DATASETS`).
        annotation_file: Another file to read instead of the one in ``root``.

    Returns:
        The sentence queries.

    Raises:
        ConfigError: An unknown dataset, or a split of another dataset.
        DatasetFormatError: A missing or malformed file, or an entry that matches no query.
    """
    if dataset not in TBPS_DATASETS:
        raise ConfigError(f"unknown TBPS dataset {dataset!r}; choose one of {', '.join(TBPS_DATASETS)}")
    if split.dataset != TBPS_DATASETS[dataset] or split.split != "test":
        raise ConfigError(
            f"{dataset} needs the {TBPS_DATASETS[dataset]} test split, got {split.dataset} {split.split}"
        )
    path = Path(annotation_file) if annotation_file is not None else tbps_annotation_path(dataset, root)
    entries = read_tbps_entries(path)
    return match_sentence_queries(entries, split, _query_person_ids(split), source=str(path))


def sentence_query_split(split: PersonSearchSplit, queries: SentenceQueries) -> PersonSearchSplit:
    """The test split with one query per sentence, for the unchanged person-search protocols.

    Query ``s`` of the result is ``split.queries[queries.query_index[s]]``, and so is each
    CUHK-SYSU gallery list; images and the dataset name stay, so
    :func:`~personsearch_train.evaluation.person_search.evaluate_search` scores sentence
    ``s`` exactly as the image query it stands for (mAP and top-k are means over sentences).

    Args:
        split: The person-search test split.
        queries: Its sentence queries.

    Returns:
        The expanded split.

    Raises:
        ValueError: A ``query_index`` position outside ``split.queries``.
    """
    index = queries.query_index
    if len(index) and int(index.max()) >= len(split.queries):
        raise ValueError(
            f"{queries.source}: query position {int(index.max())} is outside the split's "
            f"{len(split.queries)} queries; were the sentences matched to another split?"
        )
    galleries = {size: tuple(per_query[int(q)] for q in index) for size, per_query in split.galleries.items()}
    return dataclasses.replace(
        split, queries=tuple(split.queries[int(q)] for q in index), galleries=galleries
    )


def write_tbps_json(path: str | Path, entries: Sequence[TbpsEntry]) -> Path:
    """Write a TBPS annotation file in the public layout, atomically.

    Objects are ``{"pic_path", "id", "desrciption"}`` with the public files' spelling and
    the sentences as a list.

    Args:
        path: Destination (its folder is created if needed).
        entries: One per person appearance (test files: one per query).

    Returns:
        The path written.

    Raises:
        ValueError: An entry without sentences or with an empty one.
    """
    rows = []
    for i, entry in enumerate(entries):
        if not entry.sentences or not all(s.strip() for s in entry.sentences):
            raise ValueError(f"entry {i} ({entry.pic_path}, id {entry.pid}) has no or an empty sentence")
        rows.append({"pic_path": entry.pic_path, "id": entry.pid, "desrciption": list(entry.sentences)})
    path = Path(path)
    atomic_write_bytes(path, (json.dumps(rows, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
    return path
