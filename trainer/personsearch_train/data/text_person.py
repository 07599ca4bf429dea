"""Readers for text-to-image person retrieval datasets (one JSON list per dataset).

Supported layouts (methods.md section 5.1; IRRA ``datasets/*.py``; UFineBench README):

============  ==========================================  ============  ==================
name          annotation file (in the dataset folder)     image key     images relative to
============  ==========================================  ============  ==================
cuhk_pedes    ``reid_raw.json``                           ``file_path`` ``imgs/``
icfg_pedes    ``ICFG-PEDES.json`` (or ``ICFG_PEDES.json``) ``file_path`` ``imgs/``
rstpreid      ``data_captions.json``                      ``img_path``  ``imgs/``
ufine6926     ``UFine6926.json`` / ``ufine6926.json``     ``file_path`` the dataset folder
ufine3c       ``UFine3C.json`` / ``ufine3c.json``         ``file_path`` the dataset folder
============  ==========================================  ============  ==================

Every file is a JSON list of entries ``{"split", "id", <image key>, "captions": [...]}``;
UFine3C entries also carry ``"source"`` (kept in ``image_sources``). The UFineBench
annotation file names are not published (the data needs a signed licence); the
names above are tried in order, and ``annotation_file=`` names any other file.
Their ``file_path`` values look like ``images/1.jpg`` and are taken relative to the
dataset folder.

Identity conventions (IRRA):

* ``split`` is ``train``, ``test``, or anything else = ``val``;
* training pids are contiguous labels ``0..K-1`` in sorted order of the JSON ids, and
  ``label_to_pid`` keeps the JSON id of each label. For CUHK-PEDES (ids start at 1
  and are contiguous) this is exactly IRRA's ``pid = id - 1``; for ICFG-PEDES and
  RSTPReid (0-based, contiguous in train) it is IRRA's ``pid = id``. IRRA asserts
  contiguity; we remap instead, so a gap in the ids does not stop training;
* test / val pids are the JSON ids as they are (IRRA keeps them);
* images are kept once each, in file order; captions are expanded in file order,
  each with its image's pid and index (IRRA's training tuples
  ``(pid, image_id, img_path, caption)`` are ``(caption_pids[m], caption_image[m],
  image_paths[caption_image[m]], captions[m])``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from personsearch_train.errors import ConfigError, DatasetFormatError

__all__ = ["TEXT_PERSON_DATASETS", "TextPersonSplit", "load_text_person", "read_entry_list"]


@dataclass(frozen=True)
class _TextLayout:
    """Where one text-person dataset keeps its annotation file and images."""

    files: tuple[str, ...]
    image_key: str
    image_dir: str


_LAYOUTS: dict[str, _TextLayout] = {
    "cuhk_pedes": _TextLayout(files=("reid_raw.json",), image_key="file_path", image_dir="imgs"),
    "icfg_pedes": _TextLayout(
        files=("ICFG-PEDES.json", "ICFG_PEDES.json"), image_key="file_path", image_dir="imgs"
    ),
    "rstpreid": _TextLayout(files=("data_captions.json",), image_key="img_path", image_dir="imgs"),
    "ufine6926": _TextLayout(files=("UFine6926.json", "ufine6926.json"), image_key="file_path", image_dir=""),
    "ufine3c": _TextLayout(files=("UFine3C.json", "ufine3c.json"), image_key="file_path", image_dir=""),
}

#: Names accepted by :func:`load_text_person`.
TEXT_PERSON_DATASETS = tuple(_LAYOUTS)


@dataclass(frozen=True, eq=False)
class TextPersonSplit:
    """One split of a text-to-image person retrieval dataset.

    Attributes:
        dataset: Reader name (``"cuhk_pedes"``, ``"icfg_pedes"``, ...).
        split: ``"train"``, ``"test"`` or ``"val"``.
        root: Dataset folder.
        image_paths: ``N`` absolute image paths, once each, in annotation file order.
        image_pids: ``[N]`` int64; training: contiguous labels ``0..K-1``; test/val:
            the dataset's ids.
        captions: ``M`` caption strings, in file order (each entry's captions in turn).
        caption_pids: ``[M]`` int64, the pid of each caption's image.
        caption_image: ``[M]`` int64, index into ``image_paths`` of each caption's image.
        label_to_pid: ``[K]`` int64; training label ``k`` is JSON id ``label_to_pid[k]``.
            Empty for test/val splits.
        image_sources: ``N`` strings: UFine3C's ``source`` per image, ``""`` when absent.
    """

    dataset: str
    split: str
    root: Path
    image_paths: tuple[Path, ...]
    image_pids: np.ndarray
    captions: tuple[str, ...]
    caption_pids: np.ndarray
    caption_image: np.ndarray
    label_to_pid: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    image_sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("image_pids", "caption_pids", "caption_image", "label_to_pid"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.int64).reshape(-1))
        if len(self.image_pids) != len(self.image_paths):
            raise ValueError(f"{len(self.image_paths)} images but {len(self.image_pids)} image pids")
        if not (len(self.captions) == len(self.caption_pids) == len(self.caption_image)):
            raise ValueError("captions, caption_pids and caption_image must have the same length")

    @property
    def num_identities(self) -> int:
        """Number of training labels ``K`` (0 for test/val splits)."""
        return int(len(self.label_to_pid))


def _annotation_path(root: Path, dataset: str, annotation_file: str | Path | None) -> Path:
    if annotation_file is not None:
        path = Path(annotation_file)
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise DatasetFormatError(f"{path}: annotation file not found.")
        return path
    layout = _LAYOUTS[dataset]
    for name in layout.files:
        if (root / name).is_file():
            return root / name
    tried = " or ".join(layout.files)
    raise DatasetFormatError(
        f"{root / layout.files[0]}: file not found (looked for {tried} in {root}). "
        "Point root at the dataset folder, or pass annotation_file=."
    )


def _entry_split(value: Any) -> str:
    # IRRA: everything that is neither "train" nor "test" is validation data.
    return value if value in ("train", "test") else "val"


def read_entry_list(path: Path) -> list[Any]:
    """The JSON list of an annotation file (text-person layouts and LUPerson-T alike).

    Raises:
        DatasetFormatError: The file is unreadable, not JSON, or not a list.
    """
    try:
        with path.open(encoding="utf-8") as handle:
            entries = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetFormatError(f"{path}: not a readable JSON file ({exc}).") from exc
    if not isinstance(entries, list):
        raise DatasetFormatError(f"{path}: expected a JSON list of entries, found {type(entries).__name__}.")
    return entries


def load_text_person(
    root: str | Path, dataset: str, split: str, *, annotation_file: str | Path | None = None
) -> TextPersonSplit:
    """Read one split of a text-to-image person dataset.

    Args:
        root: The dataset folder (e.g. ``CUHK-PEDES``, holding the JSON and ``imgs/``).
        dataset: One of :data:`TEXT_PERSON_DATASETS`.
        split: ``"train"``, ``"test"`` or ``"val"``.
        annotation_file: Override the annotation JSON (absolute, or relative to ``root``).

    Returns:
        The split, following IRRA's id conventions (see the module docstring).

    Raises:
        DatasetFormatError: The JSON is missing or malformed (the message names the
            entry index and key), or the split has no entries.
        ConfigError: Unknown ``dataset`` or ``split``.
    """
    if dataset not in _LAYOUTS:
        raise ConfigError(f"unknown text-person dataset {dataset!r}; choose one of {', '.join(_LAYOUTS)}.")
    if split not in ("train", "test", "val"):
        raise ConfigError(f"text-person split must be 'train', 'test' or 'val', got {split!r}.")
    root = Path(root).expanduser().resolve()
    layout = _LAYOUTS[dataset]
    path = _annotation_path(root, dataset, annotation_file)
    image_root = root / layout.image_dir if layout.image_dir else root

    image_paths: list[Path] = []
    raw_ids: list[int] = []
    sources: list[str] = []
    captions: list[str] = []
    caption_image: list[int] = []
    for index, entry in enumerate(read_entry_list(path)):
        where = f"{path}: entry {index}"
        if not isinstance(entry, dict):
            raise DatasetFormatError(f"{where} is a {type(entry).__name__}, expected an object.")
        for key in ("split", "id", layout.image_key, "captions"):
            if key not in entry:
                raise DatasetFormatError(f"{where} has no key {key!r}.")
        if _entry_split(entry["split"]) != split:
            continue
        raw_id = entry["id"]
        if isinstance(raw_id, bool) or not isinstance(raw_id, (int, str)):
            raise DatasetFormatError(f"{where}: 'id' must be an integer, found {raw_id!r}.")
        try:
            pid = int(raw_id)
        except ValueError as exc:
            raise DatasetFormatError(f"{where}: 'id' must be an integer, found {raw_id!r}.") from exc
        image = entry[layout.image_key]
        if not isinstance(image, str) or not image:
            raise DatasetFormatError(f"{where}: {layout.image_key!r} must be a non-empty string.")
        entry_captions = entry["captions"]
        if not isinstance(entry_captions, list) or not all(isinstance(c, str) for c in entry_captions):
            raise DatasetFormatError(f"{where}: 'captions' must be a list of strings.")
        source = entry.get("source", "")
        if not isinstance(source, str):
            raise DatasetFormatError(f"{where}: 'source' must be a string.")
        image_index = len(image_paths)
        image_paths.append(image_root / image)
        raw_ids.append(pid)
        sources.append(source)
        for caption in entry_captions:
            captions.append(caption)
            caption_image.append(image_index)
    if not image_paths:
        raise DatasetFormatError(f"{path}: no entries with split {split!r}.")

    ids = np.asarray(raw_ids, dtype=np.int64)
    label_to_pid = np.zeros(0, dtype=np.int64)
    if split == "train":
        label_to_pid, ids = np.unique(ids, return_inverse=True)
        ids = ids.astype(np.int64).reshape(-1)
    image_index_array = np.asarray(caption_image, dtype=np.int64)
    return TextPersonSplit(
        dataset=dataset,
        split=split,
        root=root,
        image_paths=tuple(image_paths),
        image_pids=ids,
        captions=tuple(captions),
        caption_pids=ids[image_index_array] if len(image_index_array) else np.zeros(0, dtype=np.int64),
        caption_image=image_index_array,
        label_to_pid=label_to_pid.astype(np.int64),
        image_sources=tuple(sources),
    )
