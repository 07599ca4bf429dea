"""Reader for the PRW (Person Re-identification in the Wild) person-search dataset.

Layout (as distributed)::

    PRW/
      frames/<frame>.jpg
      annotations/<frame>.jpg.mat   M x 5 [id, x, y, w, h] under box_new, anno_file or anno_previous
      frame_train.mat               variable img_index_train: N x 1 cell of frame names (no extension)
      frame_test.mat                variable img_index_test
      query_info.txt                one query a line: "pid x y w h frame_name" (CRLF line ends)

Semantics (methods.md section 2.2, SeqNet ``datasets/prw.py``):

* the box variable is looked up as ``box_new``, then ``anno_file``, then
  ``anno_previous``;
* id ``-2`` (a person of unknown identity) becomes ``-1``;
* negative coordinates are clipped at 0 *in the stored* ``(x, y, w, h)`` *before*
  ``x2 = x + w, y2 = y + h`` (the order SeqNet uses; a box at ``x = -5, w = 20``
  becomes ``[0, .., 20, ..]``, not ``[0, .., 15, ..]``);
* with ``integer_boxes=True`` (the default) boxes are then truncated to integers,
  as SeqNet does with ``astype(np.int32)`` for both annotation and query boxes;
  published PRW numbers were computed on these integer boxes (the IoU threshold of
  the search metric depends on box width and height). Pass ``integer_boxes=False``
  to keep the fractional values;
* the camera is the digit after ``c`` in ``c<cam>s<seq>_<frame>``;
* train ids are remapped to ``0..K-1`` in sorted order of the dataset ids and
  ``label_to_pid`` keeps the dataset id of each label; test ids stay as in the files;
* queries come from ``query_info.txt`` in file order, with ``x2 = x + w, y2 = y + h``
  computed in floats, then (``integer_boxes``) truncated, then clipped at 0.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from personsearch_train.data.matfile import flat, load_mat, mat_string
from personsearch_train.data.structures import UNLABELLED, ImageRecord, PersonSearchSplit, QueryRecord
from personsearch_train.errors import ConfigError, DatasetFormatError

__all__ = ["BOX_VARIABLES", "camera_of", "load_prw"]

#: Variable names of the per-frame box array, in the order they are tried.
BOX_VARIABLES = ("box_new", "anno_file", "anno_previous")

#: PRW's id for a person whose identity is not annotated.
_UNKNOWN_ID = -2

_CAMERA = re.compile(r"c(\d)")
_SPLIT_FILES = {"train": ("frame_train.mat", "img_index_train"), "test": ("frame_test.mat", "img_index_test")}


def camera_of(frame_name: str) -> int:
    """Camera id of a PRW frame: the digit after ``c`` in ``c<cam>s<seq>_<frame>``.

    Args:
        frame_name: Frame name with or without extension, e.g. ``"c3s1_012345.jpg"``.

    Returns:
        The camera id (PRW has cameras 1..6).

    Raises:
        DatasetFormatError: The name has no ``c<digit>``.
    """
    match = _CAMERA.search(frame_name)
    if match is None:
        raise DatasetFormatError(f"PRW frame name {frame_name!r} has no camera id 'c<digit>' in it.")
    return int(match.group(1))


def _read_frame_list(path: Path, variable: str) -> list[str]:
    """Frame names with ``.jpg`` appended, in file order."""
    names = load_mat(path, [variable])[variable]
    frames = []
    for i, item in enumerate(flat(names)):
        name = mat_string(item, f"{path}: {variable}{{{i + 1}}}").strip()
        if not name:
            raise DatasetFormatError(f"{path}: {variable}{{{i + 1}}} is an empty frame name.")
        frames.append(name + ".jpg")
    if len(set(frames)) != len(frames):
        raise DatasetFormatError(f"{path}: some frame is listed twice in {variable}.")
    return frames


def _read_frame_boxes(path: Path, integer_boxes: bool) -> tuple[np.ndarray, np.ndarray]:
    """Read one ``annotations/<frame>.jpg.mat``.

    Returns:
        ``[M, 4]`` float32 xyxy boxes and ``[M]`` int64 ids (``-1`` for unknown).
    """
    present = load_mat(path, BOX_VARIABLES, require="any")
    variable = next(name for name in BOX_VARIABLES if name in present)
    array = np.asarray(present[variable])
    if array.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    if array.ndim != 2 or array.shape[1] != 5 or array.dtype.kind not in "biuf":
        raise DatasetFormatError(
            f"{path}: variable {variable} must be an M x 5 numeric array [id, x, y, w, h], "
            f"found dtype {array.dtype} and shape {array.shape}."
        )
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise DatasetFormatError(f"{path}: variable {variable} holds NaN or infinite values.")
    raw_ids = array[:, 0]
    if np.any(raw_ids != np.round(raw_ids)):
        raise DatasetFormatError(f"{path}: variable {variable} has non-integer person ids in column 1.")
    ids = raw_ids.astype(np.int64)
    bad = ids[(ids < 0) & (ids != _UNKNOWN_ID) & (ids != UNLABELLED)]
    if len(bad):
        raise DatasetFormatError(
            f"{path}: unexpected negative person id {int(bad[0])} (only -2 marks unknown)."
        )
    ids[ids == _UNKNOWN_ID] = UNLABELLED
    xywh = np.clip(array[:, 1:], 0, None)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    if integer_boxes:
        boxes = np.trunc(boxes)
    return boxes.astype(np.float32), ids


def _read_queries(path: Path, frames_dir: Path, integer_boxes: bool) -> list[QueryRecord]:
    """Read ``query_info.txt`` (LF or CRLF line ends)."""
    if not path.is_file():
        raise DatasetFormatError(f"{path}: file not found. Check the PRW root folder.")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(f"{path}: cannot read it as text ({exc}).") from exc
    queries = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise DatasetFormatError(
                f"{path}: line {number} has {len(fields)} fields; expected 6: pid x y w h frame_name."
            )
        try:
            pid = int(fields[0])
            x, y, w, h = (float(v) for v in fields[1:5])
        except ValueError as exc:
            raise DatasetFormatError(
                f"{path}: line {number}: {exc}; expected 'pid x y w h frame_name'."
            ) from exc
        box = np.array([x, y, x + w, y + h], dtype=np.float64)
        if not np.all(np.isfinite(box)):
            raise DatasetFormatError(f"{path}: line {number} has a NaN or infinite coordinate.")
        if integer_boxes:
            box = np.trunc(box)
        box = np.clip(box, 0, None)
        name = fields[5] + ".jpg"
        try:
            camera = camera_of(name)
        except DatasetFormatError as exc:
            raise DatasetFormatError(f"{path}: line {number}: {exc}") from exc
        queries.append(QueryRecord(name=name, path=frames_dir / name, box=box, pid=pid, camera=camera))
    return queries


def load_prw(root: str | Path, split: str, *, integer_boxes: bool = True) -> PersonSearchSplit:
    """Read the PRW train or test split.

    Args:
        root: The ``PRW`` folder (holding ``frames/``, ``annotations/``, ``frame_*.mat``).
        split: ``"train"`` or ``"test"``.
        integer_boxes: Truncate boxes to integers after the xywh -> xyxy conversion,
            as the SeqNet reader does (the setting published numbers use).

    Returns:
        The split: ``images`` in ``frame_*.mat`` order with camera ids; for ``train``
        contiguous labels and ``label_to_pid``; for ``test`` the dataset ids and the
        queries of ``query_info.txt`` in file order.

    Raises:
        DatasetFormatError: A file is missing or malformed, or a query names a frame
            that is not in ``frame_test.mat``.
        ConfigError: ``split`` is not ``"train"`` or ``"test"``.
    """
    if split not in _SPLIT_FILES:
        raise ConfigError(f"PRW split must be 'train' or 'test', got {split!r}.")
    root = Path(root).expanduser().resolve()
    frames_dir = root / "frames"
    list_file, variable = _SPLIT_FILES[split]
    frames = _read_frame_list(root / list_file, variable)
    annotations = []
    for name in frames:
        boxes, ids = _read_frame_boxes(root / "annotations" / f"{name}.mat", integer_boxes)
        try:
            camera = camera_of(name)
        except DatasetFormatError as exc:
            raise DatasetFormatError(f"{root / list_file}: {exc}") from exc
        annotations.append((name, boxes, ids, camera))

    if split == "train":
        used = sorted({int(i) for _, _, ids, _ in annotations for i in ids if i != UNLABELLED})
        relabel = {pid: label for label, pid in enumerate(used)}
        records = tuple(
            ImageRecord(
                name=name,
                path=frames_dir / name,
                boxes=boxes,
                pids=np.asarray([relabel.get(int(i), UNLABELLED) for i in ids], dtype=np.int64),
                camera=camera,
            )
            for name, boxes, ids, camera in annotations
        )
        return PersonSearchSplit(
            dataset="prw",
            split="train",
            root=root,
            images=records,
            label_to_pid=np.asarray(used, dtype=np.int64),
        )

    records = tuple(
        ImageRecord(name=name, path=frames_dir / name, boxes=boxes, pids=ids, camera=camera)
        for name, boxes, ids, camera in annotations
    )
    query_path = root / "query_info.txt"
    queries = _read_queries(query_path, frames_dir, integer_boxes)
    known = set(frames)
    for q, query in enumerate(queries):
        if query.name not in known:
            raise DatasetFormatError(
                f"{query_path}: query {q + 1} names frame {query.name[:-4]}, which is not in "
                f"{root / list_file}."
            )
    return PersonSearchSplit(dataset="prw", split="test", root=root, images=records, queries=tuple(queries))
