"""The one annotation structure every dataset reader returns (DESIGN.md section 2).

Conventions, used everywhere in the SDK:

* boxes are ``xyxy`` float32 in absolute pixels of the original image;
* person ids are int64 and ``-1`` marks a person with no identity label;
* in a *training* split, ids are remapped to contiguous labels ``0..K-1`` and
  ``label_to_pid`` keeps the dataset's original id of every label;
* in a *test* split, ids are the dataset's own identities (CUHK-SYSU: the query's
  index in the ``TestG`` files; PRW: the id in the annotation files).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["GalleryEntry", "ImageRecord", "PersonSearchSplit", "QueryRecord", "UNLABELLED"]

#: Person id of a box whose identity is not annotated.
UNLABELLED = -1


@dataclass(frozen=True, eq=False)
class ImageRecord:
    """One scene image and all the people annotated in it.

    Attributes:
        name: File name as the dataset's annotation files spell it (``"s1.jpg"``,
            ``"c1s1_000151.jpg"``); the key predictions files use.
        path: Absolute path of the image file.
        boxes: ``[M, 4]`` float32, ``xyxy`` pixels.
        pids: ``[M]`` int64; ``-1`` for unlabelled people.
        camera: Camera id (PRW: the digit after ``c`` in the name); ``-1`` if unknown.
    """

    name: str
    path: Path
    boxes: np.ndarray
    pids: np.ndarray
    camera: int = -1

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        pids = np.asarray(self.pids, dtype=np.int64).reshape(-1)
        if len(boxes) != len(pids):
            raise ValueError(f"{self.name}: {len(boxes)} boxes but {len(pids)} person ids")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "pids", pids)


@dataclass(frozen=True)
class QueryRecord:
    """One search query: a person given as a box in a scene image.

    Attributes:
        name: Scene image file name holding the query person.
        path: Absolute path of that image.
        box: ``[4]`` float32 ``xyxy`` pixels.
        pid: The query person's id (int).
        camera: Camera id of the query frame; ``-1`` if unknown.
    """

    name: str
    path: Path
    box: np.ndarray
    pid: int
    camera: int = -1

    def __post_init__(self) -> None:
        object.__setattr__(self, "box", np.asarray(self.box, dtype=np.float32).reshape(4))


@dataclass(frozen=True)
class GalleryEntry:
    """One image of a CUHK-SYSU ``TestG{N}`` gallery list for one query.

    Attributes:
        name: Gallery image file name.
        box: ``[4]`` float32 ``xyxy`` box of the query person in this image, or None
            when the protocol says the person is not in it.
    """

    name: str
    box: np.ndarray | None


@dataclass(frozen=True)
class PersonSearchSplit:
    """A train or test split of a person-search dataset.

    Attributes:
        dataset: ``"cuhk_sysu"`` or ``"prw"`` (or another registered reader's name).
        split: ``"train"`` or ``"test"``.
        root: Dataset root folder.
        images: Scene images in the dataset's own order (for CUHK-SYSU test, the
            ``pool.mat`` order; for PRW, the ``frame_*.mat`` order).
        queries: Queries in the dataset's order (``TestG50`` order for CUHK-SYSU,
            ``query_info.txt`` order for PRW); empty for training splits.
        label_to_pid: ``[K]`` int64; training label ``k`` is dataset identity
            ``label_to_pid[k]``. Empty for test splits.
        galleries: CUHK-SYSU only: gallery size -> per query (same order as
            ``queries``) the protocol's gallery list. Empty for PRW.
    """

    dataset: str
    split: str
    root: Path
    images: tuple[ImageRecord, ...]
    queries: tuple[QueryRecord, ...] = ()
    label_to_pid: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    galleries: Mapping[int, tuple[tuple[GalleryEntry, ...], ...]] = field(default_factory=dict)

    @property
    def num_identities(self) -> int:
        """Number of labelled training identities ``K`` (0 for test splits)."""
        return int(len(self.label_to_pid))

    def image_index(self) -> dict[str, int]:
        """Map every image name to its position in ``images``."""
        return {record.name: i for i, record in enumerate(self.images)}
