"""Writers of small dataset files in the exact real layouts, for the reader tests.

The MATLAB files are built with numpy object / structured arrays so that
``scipy.io.loadmat`` (default options) returns the same nesting as the real files:

* a MATLAB ``1 x n`` struct array = a ``(1, n)`` structured array with object fields;
* a MATLAB cell array = an object array (``(N, 1)`` like the real ``pool``/``Train``);
* a char row = a Python ``str``; a numeric row = a ``(1, k)`` float64 array;
* an empty box = a ``(0, 0)`` float64 array.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

Box = Sequence[float]


def struct_array(fields: Sequence[str], rows: Sequence[Sequence[Any]]) -> np.ndarray:
    """A MATLAB ``1 x len(rows)`` struct array with the given field order."""
    array = np.empty((1, len(rows)), dtype=[(name, object) for name in fields])
    for i, row in enumerate(rows):
        assert len(row) == len(fields)
        for name, value in zip(fields, row, strict=True):
            array[name][0, i] = value
    return array


def cell_column(values: Sequence[Any]) -> np.ndarray:
    """A MATLAB ``N x 1`` cell array."""
    cell = np.empty((len(values), 1), dtype=object)
    for i, value in enumerate(values):
        cell[i, 0] = value
    return cell


def mat_row(box: Box | None) -> np.ndarray:
    """A numeric ``1 x 4`` row, or the ``0 x 0`` empty matrix for None."""
    if box is None:
        return np.zeros((0, 0), dtype=np.float64)
    return np.asarray(box, dtype=np.float64).reshape(1, -1)


def scalar(value: float) -> np.ndarray:
    return np.array([[float(value)]])


def write_cuhk_sysu(
    root: Path,
    images: Sequence[tuple[str, Sequence[Box]]],
    pool: Sequence[str],
    train: Sequence[Sequence[tuple[str, Box]]],
    protocols: dict[int, Sequence[tuple[str, Box, Sequence[tuple[str, Box | None]]]]],
) -> Path:
    """Write ``CUHK-SYSU/annotation/...`` in the real layout.

    Args:
        root: Dataset folder to create.
        images: ``Images.mat`` content: (image name, xywh boxes) in file order.
        pool: ``pool.mat`` names in order.
        train: ``Train.mat``: per identity, its appearances (image name, xywh box).
        protocols: gallery size -> per query (query image, query xywh box, gallery list of
            (image name, xywh box or None)).
    """
    annotation = root / "annotation"
    protocol_dir = annotation / "test" / "train_test"
    protocol_dir.mkdir(parents=True, exist_ok=True)
    (root / "Image" / "SSM").mkdir(parents=True, exist_ok=True)

    img_rows = []
    for name, boxes in images:
        box_struct = struct_array(
            ("idlocate", "ishard"), [(mat_row(box), scalar(i % 2)) for i, box in enumerate(boxes)]
        )
        img_rows.append((name, scalar(len(boxes)), box_struct))
    scipy.io.savemat(annotation / "Images.mat", {"Img": struct_array(("imname", "nAppear", "box"), img_rows)})
    scipy.io.savemat(annotation / "pool.mat", {"pool": cell_column(list(pool))})

    entries = []
    for k, appearances in enumerate(train):
        scene = struct_array(
            ("imname", "idlocate", "ishard"), [(name, mat_row(box), scalar(0)) for name, box in appearances]
        )
        entries.append(
            struct_array(("idname", "nAppear", "scene"), [(f"p{k + 1}", scalar(len(appearances)), scene)])
        )
    scipy.io.savemat(protocol_dir / "Train.mat", {"Train": cell_column(entries)})

    for size, queries in protocols.items():
        rows = []
        for q, (q_name, q_box, gallery) in enumerate(queries):
            query = struct_array(
                ("imname", "idlocate", "ishard", "idname"), [(q_name, mat_row(q_box), scalar(0), f"t{q + 1}")]
            )
            gallery_struct = struct_array(
                ("imname", "idlocate", "ishard"), [(name, mat_row(box), scalar(0)) for name, box in gallery]
            )
            rows.append((query, gallery_struct))
        variable = f"TestG{size}"
        scipy.io.savemat(
            protocol_dir / f"{variable}.mat", {variable: struct_array(("Query", "Gallery"), rows)}
        )
    return root


# The standard small CUHK-SYSU: three training images, three pool images, one
# invalid box per kind, an identity whose box matches nothing, a fractional box.
CUHK_IMAGES = [
    ("s1.jpg", [(10, 20, 30, 60), (100, 50, 40, 80), (5, 5, 0, 10)]),
    ("s2.jpg", [(0, 0, 20, 40), (200, 100, 30, 70)]),
    ("s3.jpg", [(50.5, 60, 25, 50)]),
    ("s4.jpg", [(12, 14, 22, 44), (300, 30, 20, 40)]),
    ("s5.jpg", [(7, 8, 9, 10), (1, 1, -3, 5)]),
    ("s6.jpg", [(30, 30, 30, 60)]),
]
CUHK_POOL = ["s4.jpg", "s2.jpg", "s5.jpg"]
CUHK_TRAIN = [
    [("s1.jpg", (100, 50, 40, 80)), ("s6.jpg", (30, 30, 30, 60))],
    [("s1.jpg", (999, 999, 10, 10))],  # one appearance, equal to no box
    [("s3.jpg", (50.5, 60, 25, 50)), ("s1.jpg", (10, 20, 30, 60))],
]
CUHK_PROTOCOLS = {
    50: [
        ("s4.jpg", (12, 14, 22, 44), [("s2.jpg", (200, 100, 30, 70)), ("s5.jpg", None)]),
        ("s2.jpg", (0, 0, 20, 40), [("s5.jpg", (7, 8, 9, 10)), ("s4.jpg", None)]),
    ],
    100: [
        ("s4.jpg", (12, 14, 22, 44), [("s2.jpg", (200, 100, 30, 70)), ("s5.jpg", None)]),
        ("s2.jpg", (0, 0, 20, 40), [("s4.jpg", None), ("s5.jpg", (7, 8, 9, 10))]),
    ],
}


def write_prw(
    root: Path,
    train: dict[str, tuple[str, np.ndarray]],
    test: dict[str, tuple[str, np.ndarray]],
    query_lines: Sequence[str],
    line_end: str = "\r\n",
) -> Path:
    """Write ``PRW/`` in the real layout.

    Args:
        root: Dataset folder.
        train / test: frame name (no extension) -> (box variable name, M x 5 array), in order.
        query_lines: ``query_info.txt`` lines without line ends.
        line_end: The line end (the real file uses CRLF).
    """
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "frames").mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(root / "frame_train.mat", {"img_index_train": cell_column(list(train))})
    scipy.io.savemat(root / "frame_test.mat", {"img_index_test": cell_column(list(test))})
    for frames in (train, test):
        for frame, (variable, boxes) in frames.items():
            scipy.io.savemat(
                root / "annotations" / f"{frame}.jpg.mat", {variable: np.asarray(boxes, np.float64)}
            )
    (root / "query_info.txt").write_bytes("".join(line + line_end for line in query_lines).encode())
    return root


PRW_TRAIN = {
    "c1s1_000151": ("box_new", [[5, 10, 20, 30, 60], [-2, 100, 50, 40, 80], [3, -4, 7, 20, 40]]),
    "c2s1_000200": ("anno_file", [[5, 1.5, 2.7, 10.2, 20.9]]),
    "c3s2_000010": ("anno_previous", [[932, 0, 0, 10, 10], [-2, 1, 2, 3, 4]]),
}
PRW_TEST = {
    "c1s3_000500": ("box_new", [[7, 10, 10, 20, 40], [-2, 50, 50, 10, 20]]),
    "c4s1_000020": ("anno_file", [[7, 30, 30, 25, 50]]),
    "c6s2_000033": ("anno_previous", [[9, 0, 0, 10, 10]]),
    "c2s1_000999": ("box_new", np.zeros((0, 5))),
}
PRW_QUERIES = ["7 10.5 10.25 20 40.6 c1s3_000500", "9 -1.5 0 10 10 c6s2_000033"]
