"""Reader for the CUHK-SYSU person-search dataset (the real MATLAB annotation files).

Layout (as distributed, and as SeqNet/COAT expect it)::

    CUHK-SYSU/
      Image/SSM/*.jpg
      annotation/Images.mat                    variable Img
      annotation/pool.mat                      variable pool
      annotation/test/train_test/Train.mat     variable Train
      annotation/test/train_test/TestG{N}.mat  variable TestG{N}, N in 50..4000

MATLAB nesting, as ``scipy.io.loadmat`` returns it (field order matters: the
reference readers, SeqNet ``datasets/cuhk_sysu.py`` and OIM ``lib/datasets/psdb.py``,
read most of these structs by position, and so do we):

* ``Img``: ``1 x I`` struct array, fields ``(imname, nAppear, box)``; ``box`` is a
  ``1 x n`` struct array with fields ``(idlocate, ishard)`` and ``idlocate`` is the
  person's ``(x, y, w, h)``.
* ``pool``: cell array of test image names (the test pool, its order is the gallery
  order used everywhere in this SDK).
* ``Train``: ``K x 1`` cell array of ``1 x 1`` structs ``(idname, nAppear, scene)``;
  ``scene`` is a ``1 x n`` struct array ``(imname, idlocate, ishard)``.
* ``TestG{N}``: ``1 x Q`` struct array with fields ``Query`` (a ``1 x 1`` struct read
  by field name: ``imname``, ``idlocate``) and ``Gallery`` (a ``1 x N`` struct array
  ``(imname, idlocate, ishard)``, ``idlocate`` empty when the query person is not in
  that gallery image).

Semantics (methods.md section 2.1):

* boxes with ``w <= 0`` or ``h <= 0`` in ``Images.mat`` are dropped (an image left
  with none is kept with zero boxes; SeqNet asserts that never happens in the real files);
* training images are the ``Images.mat`` images not in ``pool.mat``, kept in
  ``Images.mat`` order (SeqNet sorts them by name; the order does not change any
  label, and file order keeps the reader deterministic without a sort convention);
* a training box gets the identity of the ``Train.mat`` entry (0-based entry index)
  whose appearance box is exactly equal to it; identities that label at least one
  training box are numbered ``0..K-1`` in entry order and ``label_to_pid[k]`` is the
  entry index. Every other box is unlabelled (``-1``);
* test images are the ``pool.mat`` images in pool order; queries come from
  ``TestG50`` in its order and query ``q`` has pid ``q``; a test box gets pid ``q``
  when it equals query ``q``'s box or one of its gallery ground-truth boxes in
  ``TestG50`` (all non-empty gallery boxes are used; SeqNet stops at the first empty
  one, which is the same thing because the files list the ground-truth images first);
* box comparison is exact on the stored ``(x, y, w, h)`` values; SeqNet truncates
  both sides to int32 first, which changes nothing for the integer-valued boxes of
  the real files. Boxes are returned as stored, converted to ``xyxy`` float32.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from personsearch_train.data.matfile import (
    flat,
    load_mat,
    mat_box,
    mat_string,
    record_field,
    single_record,
)
from personsearch_train.data.structures import (
    UNLABELLED,
    GalleryEntry,
    ImageRecord,
    PersonSearchSplit,
    QueryRecord,
)
from personsearch_train.errors import ConfigError, DatasetFormatError

__all__ = ["GALLERY_SIZES", "load_cuhk_sysu"]

#: Gallery sizes of the official ``TestG{N}.mat`` protocol files.
GALLERY_SIZES = (50, 100, 500, 1000, 2000, 4000)

_IMAGE_DIR = Path("Image") / "SSM"
_ANNOTATION_DIR = Path("annotation")
_PROTOCOL_DIR = _ANNOTATION_DIR / "test" / "train_test"
_PROTOCOL_NAME = re.compile(r"^TestG(\d+)\.mat$")

_Box = np.ndarray  # [4] float64 (x, y, w, h) as stored


def _xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """Convert ``[M, 4]`` float64 ``(x, y, w, h)`` to ``[M, 4]`` float32 ``xyxy``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1).astype(np.float32)


def _read_images(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """Read ``Images.mat``.

    Returns:
        Image names in file order, and per name the valid boxes ``[M, 4]`` float64
        ``(x, y, w, h)`` in file order.
    """
    img = load_mat(path, ["Img"])["Img"]
    if np.asarray(img).dtype.names is None:
        raise DatasetFormatError(f"{path}: variable Img must be a struct array (imname, nAppear, box).")
    names: list[str] = []
    boxes: dict[str, np.ndarray] = {}
    for i, record in enumerate(flat(img)):
        where = f"{path}: Img({i + 1})"
        name = mat_string(
            record_field(record, 0, where, expected="(imname, nAppear, box)"), where + ".imname"
        )
        box_structs = flat(record_field(record, 2, where, expected="(imname, nAppear, box)"))
        rows = []
        for j, box_record in enumerate(box_structs):
            box_where = f"{where}.box({j + 1})"
            box = mat_box(record_field(box_record, 0, box_where, expected="(idlocate, ishard)"), box_where)
            if box is None:
                raise DatasetFormatError(f"{box_where}.idlocate: empty box.")
            rows.append(box)
        array = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
        valid = (array[:, 2] > 0) & (array[:, 3] > 0)
        if name in boxes:
            raise DatasetFormatError(f"{where}: image {name} is listed twice.")
        names.append(name)
        boxes[name] = array[valid]
    return names, boxes


def _read_pool(path: Path) -> list[str]:
    """Read ``pool.mat``: the test image names in pool order."""
    pool = load_mat(path, ["pool"])["pool"]
    return [mat_string(item, f"{path}: pool{{{i + 1}}}") for i, item in enumerate(flat(pool))]


def _read_train(path: Path) -> list[list[tuple[str, _Box]]]:
    """Read ``Train.mat``: per identity entry, its appearances ``(image name, xywh box)``."""
    train = load_mat(path, ["Train"])["Train"]
    identities = []
    for k, cell in enumerate(flat(train)):
        where = f"{path}: Train{{{k + 1}}}"
        entry = single_record(cell, where)
        scenes = flat(record_field(entry, 2, where, expected="(idname, nAppear, scene)"))
        appearances = []
        for j, scene in enumerate(scenes):
            scene_where = f"{where}.scene({j + 1})"
            expected = "(imname, idlocate, ishard)"
            name = mat_string(record_field(scene, 0, scene_where, expected=expected), scene_where + ".imname")
            box = mat_box(record_field(scene, 1, scene_where, expected=expected), scene_where + ".idlocate")
            if box is None:
                raise DatasetFormatError(f"{scene_where}.idlocate: empty box.")
            appearances.append((name, box))
        identities.append(appearances)
    return identities


def _read_protocol(
    path: Path, variable: str
) -> tuple[list[tuple[str, _Box]], list[list[tuple[str, _Box | None]]]]:
    """Read one ``TestG{N}.mat``.

    Returns:
        The queries ``(image name, xywh box)`` in file order and, per query, its gallery
        list ``(image name, xywh box or None)`` in file order.
    """
    protocol = np.asarray(load_mat(path, [variable])[variable])
    fields = protocol.dtype.names or ()
    if "Query" not in fields or "Gallery" not in fields:
        raise DatasetFormatError(
            f"{path}: variable {variable} must be a struct array with fields Query and Gallery."
        )
    queries = []
    galleries = []
    for q, item in enumerate(flat(protocol)):
        where = f"{path}: {variable}({q + 1})"
        query = single_record(item["Query"], where + ".Query")
        query_fields = query.dtype.names
        if "imname" not in query_fields or "idlocate" not in query_fields:
            raise DatasetFormatError(
                f"{where}.Query: needs fields imname and idlocate, found {query_fields}."
            )
        name = mat_string(query["imname"], where + ".Query.imname")
        box = mat_box(query["idlocate"], where + ".Query.idlocate")
        if box is None:
            raise DatasetFormatError(f"{where}.Query.idlocate: empty query box.")
        queries.append((name, box))
        galleries.append(_read_gallery(flat(item["Gallery"]), where + ".Gallery"))
    return queries, galleries


def _read_gallery(gallery: np.ndarray, where: str) -> list[tuple[str, _Box | None]]:
    """Read one ``1 x N`` Gallery struct array ``(imname, idlocate, ishard)`` by position.

    The large protocols hold millions of entries (TestG4000: 2,900 x 4,000), so the
    common case (a 1-element char array and a 4-number or empty box) is read by
    column without the generic helpers, which are kept for the error messages.
    """
    fields = gallery.dtype.names
    if fields is None or len(fields) < 3:
        found = "no fields" if fields is None else f"fields {fields}"
        raise DatasetFormatError(
            f"{where}: expected a struct with fields (imname, idlocate, ishard), found {found}."
        )
    entries: list[tuple[str, _Box | None]] = []
    for j, (name, box) in enumerate(zip(gallery[fields[0]], gallery[fields[1]], strict=True)):
        if isinstance(name, np.ndarray) and name.dtype.kind == "U" and name.size == 1:
            name = str(name.reshape(-1)[0])
        else:
            name = mat_string(name, f"{where}({j + 1}).imname")
        if isinstance(box, np.ndarray) and box.size == 0:
            entries.append((name, None))
        elif isinstance(box, np.ndarray) and box.size == 4 and box.dtype.kind in "biuf":
            entries.append((name, box.astype(np.float64).reshape(4)))
        else:
            entries.append((name, mat_box(box, f"{where}({j + 1}).idlocate")))
    return entries


def _assign(boxes: np.ndarray, pids: np.ndarray, box: _Box, pid: int) -> bool:
    """Give ``pid`` to the first box exactly equal to ``box``; return whether one was found."""
    hits = np.flatnonzero(np.all(boxes == box[None, :], axis=1))
    if len(hits) == 0:
        return False
    pids[hits[0]] = pid
    return True


def _protocol_sizes(protocol_dir: Path, requested: Sequence[int] | None) -> list[int]:
    """The gallery sizes to read: the requested ones, or every ``TestG{N}.mat`` present."""
    if requested is not None:
        sizes = sorted({int(n) for n in requested})
        for size in sizes:
            if not (protocol_dir / f"TestG{size}.mat").is_file():
                missing = protocol_dir / f"TestG{size}.mat"
                raise DatasetFormatError(f"{missing}: file not found (gallery size {size} was requested).")
        return sizes
    if not protocol_dir.is_dir():
        raise DatasetFormatError(f"{protocol_dir}: folder not found. Check the CUHK-SYSU root folder.")
    found = []
    for entry in protocol_dir.iterdir():
        match = _PROTOCOL_NAME.match(entry.name)
        if match:
            found.append(int(match.group(1)))
    return sorted(found)


def load_cuhk_sysu(
    root: str | Path, split: str, gallery_sizes: Sequence[int] | None = None
) -> PersonSearchSplit:
    """Read the CUHK-SYSU train or test split from its MATLAB annotation files.

    Args:
        root: The ``CUHK-SYSU`` folder (holding ``Image/SSM`` and ``annotation``).
        split: ``"train"`` or ``"test"``.
        gallery_sizes: Test split only: which ``TestG{N}`` protocols to read into
            ``galleries``; None reads every ``TestG{N}.mat`` present. ``TestG50.mat``
            is always read because it defines the queries and test identities.
            The big protocols are slow to load (``TestG4000.mat`` holds 2,900 x 4,000
            entries; ``scipy.io.loadmat`` alone takes minutes), so ask only for the
            sizes you evaluate.

    Returns:
        The split. Train: ``images`` in ``Images.mat`` order (minus the pool), pids
        are contiguous labels with ``label_to_pid`` = ``Train.mat`` entry index.
        Test: ``images`` in ``pool.mat`` order, ``queries`` in ``TestG50`` order with
        pid = query index, ``galleries[N][q]`` = the ``TestG{N}`` gallery list of query ``q``.

    Raises:
        DatasetFormatError: A file is missing or malformed, or the files disagree
            (a pool / gallery image absent from ``Images.mat``, protocols with
            different queries).
        ConfigError: ``split`` is not ``"train"`` or ``"test"``.
    """
    if split not in ("train", "test"):
        raise ConfigError(f"CUHK-SYSU split must be 'train' or 'test', got {split!r}.")
    root = Path(root).expanduser().resolve()
    annotation = root / _ANNOTATION_DIR
    image_dir = root / _IMAGE_DIR
    images_path = annotation / "Images.mat"
    pool_path = annotation / "pool.mat"
    all_names, name_to_boxes = _read_images(images_path)
    pool = _read_pool(pool_path)
    pool_set = set(pool)
    for name in pool:
        if name not in name_to_boxes:
            raise DatasetFormatError(f"{pool_path}: pool image {name} is not in {images_path}.")
    if len(pool_set) != len(pool):
        raise DatasetFormatError(f"{pool_path}: the pool lists some image more than once.")
    name_to_pids = {name: np.full(len(b), UNLABELLED, dtype=np.int64) for name, b in name_to_boxes.items()}

    if split == "train":
        train_path = root / _PROTOCOL_DIR / "Train.mat"
        identities = _read_train(train_path)
        unmatched = 0
        for index, appearances in enumerate(identities):
            for name, box in appearances:
                if name not in name_to_boxes:
                    raise DatasetFormatError(
                        f"{train_path}: Train{{{index + 1}}} names image {name}, "
                        f"which is not in {images_path}."
                    )
                if not _assign(name_to_boxes[name], name_to_pids[name], box, index):
                    unmatched += 1
        if unmatched:
            warnings.warn(
                f"{train_path}: {unmatched} identity boxes equal no valid box of {images_path}; "
                "they stay unlabelled.",
                stacklevel=2,
            )
        train_names = [name for name in all_names if name not in pool_set]
        used = sorted({int(p) for name in train_names for p in name_to_pids[name] if p != UNLABELLED})
        label_to_pid = np.asarray(used, dtype=np.int64)
        relabel = {pid: label for label, pid in enumerate(used)}
        records = []
        for name in train_names:
            pids = np.asarray([relabel.get(int(p), UNLABELLED) for p in name_to_pids[name]], dtype=np.int64)
            records.append(
                ImageRecord(
                    name=name, path=image_dir / name, boxes=_xywh_to_xyxy(name_to_boxes[name]), pids=pids
                )
            )
        return PersonSearchSplit(
            dataset="cuhk_sysu", split="train", root=root, images=tuple(records), label_to_pid=label_to_pid
        )

    protocol_dir = root / _PROTOCOL_DIR
    base_path = protocol_dir / "TestG50.mat"
    queries, base_galleries = _read_protocol(base_path, "TestG50")
    for q, ((q_name, q_box), gallery) in enumerate(zip(queries, base_galleries, strict=True)):
        if q_name not in pool_set:
            raise DatasetFormatError(
                f"{base_path}: TestG50({q + 1}).Query image {q_name} is not in {pool_path}."
            )
        _assign(name_to_boxes[q_name], name_to_pids[q_name], q_box, q)
        for g_name, g_box in gallery:
            if g_box is not None and g_name in name_to_boxes:
                _assign(name_to_boxes[g_name], name_to_pids[g_name], g_box, q)

    galleries: dict[int, tuple[tuple[GalleryEntry, ...], ...]] = {}
    for size in _protocol_sizes(protocol_dir, gallery_sizes):
        path = protocol_dir / f"TestG{size}.mat"
        if size == 50:
            size_queries, size_galleries = queries, base_galleries
        else:
            size_queries, size_galleries = _read_protocol(path, f"TestG{size}")
            if len(size_queries) != len(queries) or any(
                a[0] != b[0] or not np.array_equal(a[1], b[1])
                for a, b in zip(size_queries, queries, strict=True)
            ):
                raise DatasetFormatError(
                    f"{path}: its queries differ from those of {base_path} (count or order); "
                    "all TestG files must list the same queries in the same order."
                )
        per_query = []
        for q, gallery in enumerate(size_galleries):
            entries = []
            for g_name, g_box in gallery:
                if g_name not in pool_set:
                    raise DatasetFormatError(
                        f"{path}: TestG{size}({q + 1}).Gallery names image {g_name}, "
                        f"which is not in {pool_path}."
                    )
                if g_box is None:
                    entries.append(GalleryEntry(name=g_name, box=None))
                else:
                    x, y, w, h = g_box.tolist()
                    xyxy = np.array((x, y, x + w, y + h), dtype=np.float32)
                    entries.append(GalleryEntry(name=g_name, box=xyxy))
            per_query.append(tuple(entries))
        galleries[size] = tuple(per_query)

    records = tuple(
        ImageRecord(
            name=name,
            path=image_dir / name,
            boxes=_xywh_to_xyxy(name_to_boxes[name]),
            pids=name_to_pids[name],
        )
        for name in pool
    )
    query_records = tuple(
        QueryRecord(name=name, path=image_dir / name, box=_xywh_to_xyxy(box)[0], pid=q)
        for q, (name, box) in enumerate(queries)
    )
    return PersonSearchSplit(
        dataset="cuhk_sysu",
        split="test",
        root=root,
        images=records,
        queries=query_records,
        galleries=galleries,
    )
