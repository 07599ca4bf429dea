"""Writing the generated ground truth in the real dataset file layouts.

Layouts follow ``reference/methods.md`` sections 2.1 (CUHK-SYSU), 2.2 (PRW) and 5.1
(CUHK-PEDES, UFine6926 / UFine3C), plus the COCO ``instances_*.json`` detection format. MATLAB files are
written with ``scipy.io.savemat`` as struct arrays whose field *order* matches the
real files, because reference code (SeqNet ``datasets/cuhk_sysu.py``) reads the
fields by position.

Every file is written atomically (temporary file, fsync, rename), and the ``.mat``
header text is fixed instead of carrying the creation time, so one seed always
gives byte-identical files.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import scipy.io

from personsearch_train.atomic_files import atomic_write_bytes
from personsearch_train.data.synthetic.truth import (
    PedesTruth,
    PersonSearchTruth,
    QueryTruth,
    SceneTruth,
    UFineTruth,
)

__all__ = [
    "PRW_BOX_VARIABLES",
    "encode_jpeg",
    "write_coco",
    "write_cuhk_sysu",
    "write_json",
    "write_mat",
    "write_pedes",
    "write_prw",
    "write_prw_frame",
    "write_ufine",
    "query_lines",
    "tokenize",
]

#: Variable names of the PRW per-frame box arrays, as found across the real files.
PRW_BOX_VARIABLES: tuple[str, ...] = ("box_new", "anno_file", "anno_previous")

_MAT_HEADER_LENGTH = 116  # descriptive text at the start of a MATLAB 5 file


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """Encode ``[H, W, 3]`` uint8 RGB as JPEG bytes."""
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    )
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG image")
    return buf.tobytes()


def write_mat(path: Path, variables: dict[str, Any]) -> None:
    """Write a MATLAB 5 ``.mat`` file deterministically and atomically.

    Args:
        path: Destination.
        variables: Variable name -> value as ``scipy.io.savemat`` accepts it.
    """
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, variables, format="5", do_compression=False, oned_as="row")
    data = bytearray(buffer.getvalue())
    # scipy puts the current time into the header text; a fixed text keeps files reproducible.
    header = b"MATLAB 5.0 MAT-file, Platform: posix, Created by: personsearch synth"
    data[:_MAT_HEADER_LENGTH] = header.ljust(_MAT_HEADER_LENGTH, b" ")
    atomic_write_bytes(path, bytes(data))


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented UTF-8 JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(value, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))


def _struct_array(
    fields: Sequence[str], rows: Sequence[Sequence[Any]], shape: tuple[int, int] | None = None
) -> np.ndarray:
    """A MATLAB struct array (``1 x n`` unless ``shape``) with fields in the given order."""
    out = np.empty(shape or (1, len(rows)), dtype=[(f, object) for f in fields])
    flat = out.reshape(-1)
    for i, row in enumerate(rows):
        for name, value in zip(fields, row, strict=True):
            flat[i][name] = value
    return out


def _cell_column(values: Sequence[Any]) -> np.ndarray:
    """An ``n x 1`` MATLAB cell array."""
    out = np.empty((len(values), 1), dtype=object)
    for i, value in enumerate(values):
        out[i, 0] = value
    return out


def _xywh(box: np.ndarray) -> np.ndarray:
    """``[4]`` int xyxy -> ``1 x 4`` float64 ``(x, y, w, h)`` as the real files store it."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return np.asarray([[x1, y1, x2 - x1, y2 - y1]], dtype=np.float64)


def _idname(pid: int) -> str:
    return f"p{pid}"


def write_cuhk_sysu(
    root: Path,
    truth: PersonSearchTruth,
    image_order: Sequence[str],
    query_hard: Sequence[bool],
    *,
    map_fn: Callable[..., Iterable[Any]] = map,
) -> None:
    """Write the CUHK-SYSU annotation files (images are written by the renderer).

    Files: ``annotation/Images.mat`` (``Img``), ``annotation/pool.mat`` (``pool``),
    ``annotation/test/train_test/Train.mat`` (``Train``) and one
    ``TestG{N}.mat`` (variable ``TestG{N}``) per gallery size in ``truth.galleries``.

    Args:
        root: The ``CUHK-SYSU`` folder.
        truth: What was drawn; ``truth.test`` is in pool order.
        image_order: Every image name in ``Images.mat`` order.
        query_hard: ``ishard`` flag of each query box.
        map_fn: ``map``-like callable used to write the ``TestG`` files (e.g. a
            process pool's ``map``).
    """
    scenes = {s.name: s for s in (*truth.train, *truth.test)}
    img_rows = []
    for name in image_order:
        scene = scenes[name]
        boxes = _struct_array(
            ("idlocate", "ishard"),
            [(_xywh(b), np.float64(h)) for b, h in zip(scene.boxes, scene.hard, strict=True)],
        )
        img_rows.append((name, np.float64(len(scene.boxes)), boxes))
    annotation = root / "annotation"
    write_mat(annotation / "Images.mat", {"Img": _struct_array(("imname", "nAppear", "box"), img_rows)})
    write_mat(annotation / "pool.mat", {"pool": _cell_column([s.name for s in truth.test])})

    # One Train.mat entry per training identity, appearances in image order.
    appearances: dict[int, list[tuple[str, np.ndarray, bool]]] = {}
    for name in image_order:
        scene = scenes[name]
        if scene.split != "train":
            continue
        for box, pid, hard in zip(scene.boxes, scene.pids, scene.hard, strict=True):
            if pid >= 0:
                appearances.setdefault(int(pid), []).append((name, box, bool(hard)))
    entries = []
    for pid in sorted(appearances):
        scene_rows = [(n, _xywh(b), np.float64(h)) for n, b, h in appearances[pid]]
        entries.append(
            _struct_array(
                ("idname", "nAppear", "scene"),
                [
                    (
                        _idname(pid),
                        np.float64(len(scene_rows)),
                        _struct_array(("imname", "idlocate", "ishard"), scene_rows),
                    )
                ],
                shape=(1, 1),
            )
        )
    protocol = annotation / "test" / "train_test"
    write_mat(protocol / "Train.mat", {"Train": _cell_column(entries)})

    jobs = [
        (protocol / f"TestG{size}.mat", f"TestG{size}", truth.queries, tuple(query_hard), galleries)
        for size, galleries in truth.galleries.items()
    ]
    # The gallery files hold hundreds of thousands of tiny structs, slow to serialise:
    # the caller may spread them over processes.
    for _ in map_fn(_write_protocol, jobs):
        pass


def _write_protocol(
    job: tuple[
        Path, str, Sequence[QueryTruth], Sequence[bool], Sequence[Sequence[tuple[str, np.ndarray | None]]]
    ],
) -> None:
    """Write one ``TestG{N}.mat``: a ``1 x Q`` struct array with fields ``(Query, Gallery)``."""
    path, variable, queries, query_hard, galleries = job
    rows = []
    for query, hard, gallery in zip(queries, query_hard, galleries, strict=True):
        q = _struct_array(
            ("imname", "idlocate", "ishard", "idname"),
            [(query.name, _xywh(query.box), np.float64(hard), _idname(query.pid))],
            shape=(1, 1),
        )
        g_rows = [
            (name, np.zeros((0, 0)) if box is None else _xywh(box), np.float64(0)) for name, box in gallery
        ]
        rows.append((q, _struct_array(("imname", "idlocate", "ishard"), g_rows)))
    write_mat(path, {variable: _struct_array(("Query", "Gallery"), rows)})


def write_prw_frame(path: Path, variable: str, boxes: np.ndarray, pids: np.ndarray) -> None:
    """Write one PRW ``<frame>.jpg.mat``: an ``M x 5`` float64 ``[id, x, y, w, h]`` array.

    Args:
        path: Destination (``annotations/<frame>.jpg.mat``).
        variable: One of :data:`PRW_BOX_VARIABLES`.
        boxes: ``[M, 4]`` int ``xyxy``.
        pids: ``[M]`` int identities, negative for unknown people (written as -2).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    rows = np.zeros((len(boxes), 5), dtype=np.float64)
    rows[:, 0] = np.where(np.asarray(pids) >= 0, pids, -2)
    rows[:, 1:3] = boxes[:, :2]
    rows[:, 3:] = boxes[:, 2:] - boxes[:, :2]
    write_mat(path, {variable: rows})


def write_prw(
    root: Path, truth: PersonSearchTruth, box_variables: dict[str, str], *, frame_files: bool = True
) -> None:
    """Write the PRW annotation files (frames are written by the renderer).

    Files: ``annotations/<frame>.jpg.mat`` (an ``M x 5`` ``[id, x, y, w, h]`` array,
    id -2 for unknown people), ``frame_train.mat`` (``img_index_train``),
    ``frame_test.mat`` (``img_index_test``) and ``query_info.txt`` (CRLF line ends).

    Args:
        root: The ``PRW`` folder.
        truth: What was drawn.
        box_variables: Frame name -> which of :data:`PRW_BOX_VARIABLES` its file uses.
        frame_files: Also write the per-frame files (False when the renderer already
            wrote them with :func:`write_prw_frame`).
    """
    for scene in (*truth.train, *truth.test) if frame_files else ():
        write_prw_frame(
            root / "annotations" / f"{scene.name}.mat", box_variables[scene.name], scene.boxes, scene.pids
        )
    stem = lambda name: name[: -len(".jpg")]  # noqa: E731
    write_mat(
        root / "frame_train.mat", {"img_index_train": _cell_column([stem(s.name) for s in truth.train])}
    )
    write_mat(root / "frame_test.mat", {"img_index_test": _cell_column([stem(s.name) for s in truth.test])})
    lines = "".join(line + "\r\n" for line in query_lines(truth.queries))
    atomic_write_bytes(root / "query_info.txt", lines.encode("ascii"))


def tokenize(caption: str) -> list[str]:
    """Lower-case word tokens of a caption (the ``processed_tokens`` of CUHK-PEDES)."""
    return re.findall(r"[a-z]+", caption.lower())


def write_pedes(root: Path, entries: Sequence[PedesTruth]) -> None:
    """Write ``reid_raw.json`` in the CUHK-PEDES layout (images are written by the renderer).

    Args:
        root: The ``PEDES`` folder (holding ``imgs/``).
        entries: One entry per image.
    """
    value = [
        {
            "split": e.split,
            "captions": list(e.captions),
            "file_path": e.file_path,
            "processed_tokens": [tokenize(c) for c in e.captions],
            "id": e.id,
        }
        for e in entries
    ]
    write_json(root / "reid_raw.json", value)


def write_ufine(path: Path, entries: Sequence[UFineTruth]) -> None:
    """Write a UFineBench-style annotation list (``UFine6926.json`` / ``UFine3C.json``).

    Entries are ``{"split", "id", "file_path", "captions"}``, plus ``"source"`` when
    the entry has one (UFine3C). Images are written by the renderer.

    Args:
        path: Destination JSON, inside the dataset folder that ``file_path`` values
            are relative to.
        entries: One entry per image.
    """
    value = []
    for e in entries:
        row: dict[str, Any] = {
            "split": e.split,
            "id": e.id,
            "file_path": e.file_path,
            "captions": list(e.captions),
        }
        if e.source:
            row["source"] = e.source
        value.append(row)
    write_json(path, value)


def write_coco(path: Path, scenes: Sequence[SceneTruth]) -> None:
    """Write a COCO ``instances`` json with one category, person (id 1).

    Args:
        path: Destination json; ``file_name`` values are the scene names, relative to
            the image folder beside it.
        scenes: Images and their person boxes (every person, labelled or not).
    """
    images, annotations = [], []
    for image_id, scene in enumerate(scenes, start=1):
        images.append({"id": image_id, "file_name": scene.name, "width": scene.width, "height": scene.height})
        for box in scene.xywh():
            x, y, w, h = (int(v) for v in box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": 1, "name": "person", "supercategory": "person"}]
    write_json(path, {"images": images, "annotations": annotations, "categories": categories})


def query_lines(queries: Sequence[QueryTruth]) -> list[str]:
    """``query_info.txt`` lines (without line ends), for tests and tools."""
    out = []
    for q in queries:
        x, y, w, h = (int(v) for v in _xywh(q.box)[0])
        out.append(f"{q.pid} {x} {y} {w} {h} {q.name[: -len('.jpg')]}")
    return out
