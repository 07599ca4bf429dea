"""In-memory ground truth of a generated dataset: exactly what was drawn and written.

Tests compare what the dataset readers load from disk against these records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from personsearch_train.data.synthetic.identities import Identity

__all__ = ["PedesTruth", "PersonSearchTruth", "QueryTruth", "SceneTruth", "UFineTruth"]


@dataclass(frozen=True, eq=False)
class SceneTruth:
    """One generated scene image.

    Attributes:
        name: File name as written in the annotation files (``"s12.jpg"``, ``"c3s1_000150.jpg"``).
        split: ``"train"`` or ``"test"``.
        width: Image width in pixels.
        height: Image height in pixels.
        camera: Camera id (PRW) or -1.
        boxes: ``[M, 4]`` int64 ``xyxy`` pixels (``x2 = x + w``), tight around each drawn person.
        identities: ``[M]`` int64 key of the identity drawn in each box (one-off
            background people have their own keys).
        pids: ``[M]`` int64 identity as annotated in the dataset files (the identity
            key for labelled people), -1 for unlabelled / unknown people.
        hard: ``[M]`` bool, the ``ishard`` flag written for CUHK-SYSU (small or occluded).
        visibility: ``[M]`` float32 fraction of each person left visible.
    """

    name: str
    split: str
    width: int
    height: int
    camera: int
    boxes: np.ndarray
    identities: np.ndarray
    pids: np.ndarray
    hard: np.ndarray
    visibility: np.ndarray

    def xywh(self) -> np.ndarray:
        """Boxes as ``[M, 4]`` int64 ``(x, y, w, h)``, as the ``.mat`` files store them."""
        out = self.boxes.copy()
        out[:, 2:] -= out[:, :2]
        return out


@dataclass(frozen=True, eq=False)
class QueryTruth:
    """One query as written in ``TestG*.mat`` / ``query_info.txt``.

    Attributes:
        name: Scene image holding the query person.
        box: ``[4]`` int64 ``xyxy``.
        pid: Identity key of the query person.
        camera: Camera id (PRW) or -1.
    """

    name: str
    box: np.ndarray
    pid: int
    camera: int = -1


@dataclass(frozen=True, eq=False)
class PersonSearchTruth:
    """Ground truth of one synthetic person-search dataset (CUHK-SYSU or PRW layout).

    Attributes:
        dataset: ``"cuhk_sysu"`` or ``"prw"``.
        root: Folder the dataset was written to.
        train: Training scenes, in the order the files list them (``Images.mat`` order
            minus the pool for CUHK-SYSU, ``frame_train.mat`` order for PRW).
        test: Test scenes (``pool.mat`` order / ``frame_test.mat`` order).
        queries: Queries in file order (``TestG50`` / ``query_info.txt``).
        galleries: CUHK-SYSU only: gallery size as written in the file name -> per
            query, ``(image name, xyxy int64 box or None)`` entries in file order.
        identities: Appearance of every identity key drawn.
    """

    dataset: str
    root: Path
    train: tuple[SceneTruth, ...]
    test: tuple[SceneTruth, ...]
    queries: tuple[QueryTruth, ...]
    galleries: dict[int, tuple[tuple[tuple[str, np.ndarray | None], ...], ...]] = field(default_factory=dict)
    identities: dict[int, Identity] = field(default_factory=dict)

    def split(self, name: str) -> tuple[SceneTruth, ...]:
        """The scenes of ``"train"`` or ``"test"``."""
        if name not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {name!r}")
        return self.train if name == "train" else self.test


@dataclass(frozen=True)
class PedesTruth:
    """One entry of the synthetic CUHK-PEDES ``reid_raw.json``.

    Attributes:
        split: ``"train"``, ``"val"`` or ``"test"``.
        id: 1-based person id.
        file_path: Path relative to ``imgs/``.
        captions: The two attribute captions.
    """

    split: str
    id: int
    file_path: str
    captions: tuple[str, ...]


@dataclass(frozen=True)
class UFineTruth:
    """One entry of the synthetic ``UFine6926.json`` or ``UFine3C.json``.

    Attributes:
        split: ``"train"``, ``"val"`` or ``"test"`` (always ``"test"`` in UFine3C).
        id: 1-based person id (UFine3C keeps the UFine6926 test ids).
        file_path: Image path relative to the dataset folder (``images/...``).
        captions: The two captions.
        source: UFine3C only: ``"cross_domain"``, ``"cross_granularity"`` or
            ``"cross_style"``; empty for UFine6926.
    """

    split: str
    id: int
    file_path: str
    captions: tuple[str, ...]
    source: str = ""
