"""Reader for re-identification crop folders in the Market-1501 naming scheme.

A Market-1501 folder (``bounding_box_train``, ``bounding_box_test``, ``query``,
``gt_bbox``) holds person crops named ``{pid:04d}_c{cam}s{seq}_{frame:06d}_{idx:02d}.jpg``,
e.g. ``0002_c1s1_000451_03.jpg``: identity 2, camera 1, sequence 1, frame 451, the
4th detection in that frame. Two ids are special (Market-1501 README):

* ``-1`` (``-1_c1s1_...``): **junk**, crops of no use for evaluation (partial bodies).
  They are skipped unless ``include_junk=True``, in which case they get pid ``-1``
  (the SDK's "no identity").
* ``0000``: **distractors**, false detections. They only occur in
  ``bounding_box_test``. Without relabelling they keep pid ``0`` (a gallery negative
  that matches no query, as in the standard evaluation); when relabelling (training)
  they get pid ``-1`` because they are no training identity.

With ``relabel=True`` (the default for ``bounding_box_train``) the remaining
identities are numbered ``0..K-1`` in sorted order of their dataset ids and
``label_to_pid`` keeps the dataset id of each label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from personsearch_train.data.structures import UNLABELLED
from personsearch_train.errors import DatasetFormatError

__all__ = ["ReidCropSet", "load_market1501", "parse_market1501_name"]

_NAME = re.compile(r"^(-1|\d{4})_c(\d+)s(\d+)_(\d+)_(\d+)\.jpg$")
_JUNK = -1
_DISTRACTOR = 0


@dataclass(frozen=True, eq=False)
class ReidCropSet:
    """A folder of person crops with identity and camera labels.

    Attributes:
        root: The folder the crops were read from.
        names: ``N`` file names, sorted.
        paths: ``N`` absolute file paths.
        pids: ``[N]`` int64; contiguous labels when relabelled, else the dataset ids
            (``0`` = distractor); ``-1`` = junk or (relabelled) distractor.
        cameras: ``[N]`` int64 camera ids.
        sequences: ``[N]`` int64 sequence ids (the ``s`` number).
        frames: ``[N]`` int64 frame numbers.
        label_to_pid: ``[K]`` int64 dataset id of each label; empty when not relabelled.
    """

    root: Path
    names: tuple[str, ...]
    paths: tuple[Path, ...]
    pids: np.ndarray
    cameras: np.ndarray
    sequences: np.ndarray
    frames: np.ndarray
    label_to_pid: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        for name in ("pids", "cameras", "sequences", "frames", "label_to_pid"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.int64).reshape(-1))
        n = len(self.names)
        if not (
            len(self.paths)
            == len(self.pids)
            == len(self.cameras)
            == len(self.sequences)
            == len(self.frames)
            == n
        ):
            raise ValueError("names, paths, pids, cameras, sequences and frames must have the same length")

    @property
    def num_identities(self) -> int:
        """Number of training labels ``K`` (0 when not relabelled)."""
        return int(len(self.label_to_pid))


def parse_market1501_name(name: str) -> tuple[int, int, int, int, int]:
    """Split a Market-1501 crop file name into its numbers.

    Args:
        name: File name such as ``"0002_c1s1_000451_03.jpg"`` or ``"-1_c3s2_001234_01.jpg"``.

    Returns:
        ``(pid, camera, sequence, frame, index)``; pid ``-1`` = junk, ``0`` = distractor.

    Raises:
        DatasetFormatError: The name does not follow the scheme.
    """
    match = _NAME.match(name)
    if match is None:
        raise DatasetFormatError(
            f"{name}: not a Market-1501 crop name "
            "'{pid:04d}_c{cam}s{seq}_{frame:06d}_{idx:02d}.jpg'."
        )
    pid, camera, sequence, frame, index = (int(g) for g in match.groups())
    return pid, camera, sequence, frame, index


def load_market1501(
    folder: str | Path,
    subset: str = "bounding_box_train",
    *,
    relabel: bool | None = None,
    include_junk: bool = False,
) -> ReidCropSet:
    """Read one subset folder of a Market-1501-style dataset.

    Args:
        folder: The dataset folder (holding ``bounding_box_train/`` etc.).
        subset: Sub-folder to read: ``bounding_box_train``, ``bounding_box_test``,
            ``query``, ``gt_bbox``, or any folder using the same naming.
        relabel: Number identities ``0..K-1``; None = True for ``bounding_box_train`` only.
        include_junk: Keep the ``-1`` junk crops (with pid ``-1``).

    Returns:
        The crops sorted by file name. Only ``.jpg`` files are read (the archives
        also hold ``Thumbs.db``).

    Raises:
        DatasetFormatError: The folder is missing, empty, or a ``.jpg`` is misnamed.
    """
    root = (Path(folder).expanduser() / subset).resolve()
    if not root.is_dir():
        raise DatasetFormatError(f"{root}: folder not found. Point folder at the Market-1501 root.")
    if relabel is None:
        relabel = subset == "bounding_box_train"
    names, pids, cameras, sequences, frames = [], [], [], [], []
    for path in sorted(root.iterdir()):
        if path.suffix.lower() != ".jpg":
            continue
        try:
            pid, camera, sequence, frame, _ = parse_market1501_name(path.name)
        except DatasetFormatError as exc:
            raise DatasetFormatError(f"{root}/{exc}") from exc
        if pid == _JUNK and not include_junk:
            continue
        names.append(path.name)
        pids.append(pid)
        cameras.append(camera)
        sequences.append(sequence)
        frames.append(frame)
    if not names:
        raise DatasetFormatError(f"{root}: no Market-1501 crops (*.jpg) in this folder.")
    pid_array = np.asarray(pids, dtype=np.int64)
    label_to_pid = np.zeros(0, dtype=np.int64)
    if relabel:
        label_to_pid = np.unique(pid_array[pid_array > _DISTRACTOR])
        labels = np.full(len(pid_array), UNLABELLED, dtype=np.int64)
        identity = pid_array > _DISTRACTOR
        labels[identity] = np.searchsorted(label_to_pid, pid_array[identity])
        pid_array = labels
    return ReidCropSet(
        root=root,
        names=tuple(names),
        paths=tuple(root / name for name in names),
        pids=pid_array,
        cameras=np.asarray(cameras),
        sequences=np.asarray(sequences),
        frames=np.asarray(frames),
        label_to_pid=label_to_pid,
    )
