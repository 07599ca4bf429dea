"""Readers for detection-only person datasets: COCO person json and CrowdHuman odgt.

These sets have person boxes but no identities, so every box has pid ``-1``; they
feed detection pre-training (hybrid pre-training, DESIGN.md section 3).

COCO (``instances_*.json``): ``images`` (``id``, ``file_name``), ``annotations``
(``image_id``, ``category_id``, ``bbox`` = ``[x, y, w, h]``, ``iscrowd``) and
``categories`` (``id``, ``name``). Only the category named ``person`` is read.
Crowd annotations (``iscrowd = 1``, one box around a group of people) are
**excluded**: they are not single-person boxes, and ``ImageRecord`` has no ignore
flag; a trainer that wants them as ignore regions must read them itself. Boxes with
``w <= 0`` or ``h <= 0`` are dropped.

CrowdHuman (``annotation_{train,val}.odgt``): one JSON object per line,
``{"ID": ..., "gtboxes": [{"tag", "fbox", "vbox", "hbox", "extra": {"ignore", ...}}]}``,
boxes ``[x, y, w, h]``; the image is ``<ID>.jpg``. Only ``tag == "person"`` boxes
without ``extra.ignore == 1`` are kept; ``tag == "mask"`` marks crowds, reflections
and the like and is excluded, as are ignored persons (same reason as COCO crowds).
Full boxes (``fbox``) may reach beyond the image border (they cover the occluded
body); they are returned unclipped because the reader does not open the images.

Both readers drop images left with no box unless ``keep_empty=True``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from personsearch_train.data.structures import UNLABELLED, ImageRecord, PersonSearchSplit
from personsearch_train.errors import ConfigError, DatasetFormatError

__all__ = ["COCO_ANNOTATION_PATTERN", "load_coco_persons", "load_coco_scenes", "load_crowdhuman"]

#: Annotation files of a COCO-layout folder: ``annotations/instances_<images folder>.json``.
COCO_ANNOTATION_PATTERN = "instances_train*.json"

_CROWDHUMAN_BOXES = {"full": "fbox", "visible": "vbox", "head": "hbox"}


def _xywh_box(value: Any, where: str) -> np.ndarray:
    """Validate a JSON ``[x, y, w, h]`` and return it as ``[4]`` float64."""
    if (
        not isinstance(value, list)
        or len(value) != 4
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        raise DatasetFormatError(f"{where}: expected a box [x, y, w, h] of 4 numbers, found {value!r}.")
    box = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(box)):
        raise DatasetFormatError(f"{where}: the box has a NaN or infinite value.")
    return box


def _record(name: str, path: Path, boxes: list[np.ndarray]) -> ImageRecord:
    xywh = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1).astype(np.float32)
    return ImageRecord(name=name, path=path, boxes=xyxy, pids=np.full(len(xyxy), UNLABELLED, dtype=np.int64))


def load_coco_persons(
    annotation_json: str | Path, image_root: str | Path, *, keep_empty: bool = False
) -> list[ImageRecord]:
    """Read the person boxes of a COCO-format detection json.

    Args:
        annotation_json: The COCO ``instances_*.json`` file.
        image_root: Folder the ``file_name`` values are relative to.
        keep_empty: Keep images that have no (non-crowd) person box.

    Returns:
        One record per image in the json's ``images`` order; boxes ``[M, 4]`` float32
        xyxy, pids all ``-1``, camera ``-1``.

    Raises:
        DatasetFormatError: The file is missing, not JSON, lacks keys, has no
            ``person`` category, or an annotation refers to an unknown image.
    """
    path = Path(annotation_json).expanduser().resolve()
    image_root = Path(image_root).expanduser().resolve()
    if not path.is_file():
        raise DatasetFormatError(f"{path}: file not found.")
    try:
        with path.open(encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetFormatError(f"{path}: not a readable JSON file ({exc}).") from exc
    if not isinstance(data, dict):
        raise DatasetFormatError(f"{path}: expected a JSON object with images, annotations, categories.")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetFormatError(f"{path}: key {key!r} is missing or not a list.")
    person_ids = {
        c.get("id") for c in data["categories"] if isinstance(c, dict) and c.get("name") == "person"
    }
    if not person_ids:
        raise DatasetFormatError(f"{path}: no category named 'person' in 'categories'.")

    names: dict[Any, str] = {}
    order: list[Any] = []
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            raise DatasetFormatError(f"{path}: images[{i}] needs 'id' and a string 'file_name'.")
        if image["id"] in names:
            raise DatasetFormatError(f"{path}: images[{i}] repeats image id {image['id']!r}.")
        names[image["id"]] = image["file_name"]
        order.append(image["id"])

    boxes: dict[Any, list[np.ndarray]] = {image_id: [] for image_id in order}
    for i, annotation in enumerate(data["annotations"]):
        where = f"{path}: annotations[{i}]"
        if not isinstance(annotation, dict):
            raise DatasetFormatError(f"{where} is not an object.")
        if annotation.get("category_id") not in person_ids:
            continue
        if annotation.get("iscrowd", 0):
            continue
        image_id = annotation.get("image_id")
        if image_id not in boxes:
            raise DatasetFormatError(f"{where}: image_id {image_id!r} is not in 'images'.")
        box = _xywh_box(annotation.get("bbox"), where + ".bbox")
        if box[2] > 0 and box[3] > 0:
            boxes[image_id].append(box)

    return [
        _record(names[image_id], image_root / names[image_id], boxes[image_id])
        for image_id in order
        if keep_empty or boxes[image_id]
    ]


def load_crowdhuman(
    odgt_path: str | Path, image_root: str | Path, box: str = "full", *, keep_empty: bool = False
) -> list[ImageRecord]:
    """Read a CrowdHuman ``.odgt`` annotation file.

    Args:
        odgt_path: The ``annotation_train.odgt`` / ``annotation_val.odgt`` file.
        image_root: Folder holding ``<ID>.jpg``.
        box: ``"full"`` (``fbox``, whole body including occluded parts), ``"visible"``
            (``vbox``) or ``"head"`` (``hbox``).
        keep_empty: Keep images that have no kept person box.

    Returns:
        One record per line in file order; boxes ``[M, 4]`` float32 xyxy, pids ``-1``.

    Raises:
        DatasetFormatError: The file is missing, a line is not JSON, or a key is missing
            (the message gives the line number).
        ConfigError: ``box`` is not one of the three kinds.
    """
    if box not in _CROWDHUMAN_BOXES:
        raise ConfigError(f"CrowdHuman box must be one of {', '.join(_CROWDHUMAN_BOXES)}, got {box!r}.")
    key = _CROWDHUMAN_BOXES[box]
    path = Path(odgt_path).expanduser().resolve()
    image_root = Path(image_root).expanduser().resolve()
    if not path.is_file():
        raise DatasetFormatError(f"{path}: file not found.")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(f"{path}: cannot read it as text ({exc}).") from exc
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(f"{where} is not valid JSON ({exc}).") from exc
        if not isinstance(entry, dict) or not isinstance(entry.get("ID"), str):
            raise DatasetFormatError(f"{where}: needs a string 'ID'.")
        gtboxes = entry.get("gtboxes")
        if not isinstance(gtboxes, list):
            raise DatasetFormatError(f"{where}: 'gtboxes' is missing or not a list.")
        kept = []
        for j, gt in enumerate(gtboxes):
            gt_where = f"{where}: gtboxes[{j}]"
            if not isinstance(gt, dict) or "tag" not in gt:
                raise DatasetFormatError(f"{gt_where} needs a 'tag'.")
            if gt["tag"] != "person":
                continue
            extra = gt.get("extra", {})
            if not isinstance(extra, dict):
                raise DatasetFormatError(f"{gt_where}: 'extra' must be an object.")
            if extra.get("ignore", 0) == 1:
                continue
            if key not in gt:
                raise DatasetFormatError(f"{gt_where} has no {key!r} ({box} box).")
            value = _xywh_box(gt[key], f"{gt_where}.{key}")
            if value[2] > 0 and value[3] > 0:
                kept.append(value)
        if kept or keep_empty:
            name = entry["ID"] + ".jpg"
            records.append(_record(name, image_root / name, kept))
    return records


def load_coco_scenes(root: str | Path, split: str) -> PersonSearchSplit:
    """The ``coco_scenes`` reader: a COCO-layout detection set as a person-search training split.

    Detection-only scenes are a hybrid pre-training source (``data.mix``): they give
    the detector boxes but nobody an identity, so every pid is ``-1``. The folder has
    COCO's layout, as the full COCO download and ``personsearch synth --subtask-sets``
    write it::

        root/annotations/instances_train2017.json
        root/train2017/000000000001.jpg ...

    The annotation file is ``annotations/instances_train*.json`` (the newest by name when
    there are several) and its images are in the folder named after it
    (``instances_train2017.json`` -> ``train2017/``). Images without a (non-crowd) person
    box are left out: they would train the detector on background only.

    Args:
        root: The COCO-layout folder.
        split: Must be ``"train"``: a pre-training source has no test split.

    Returns:
        The training split: ``dataset="coco_scenes"``, records in the json's order with
        boxes ``[M, 4]`` float32 xyxy and pids ``[M]`` int64 all ``-1``, no identities.

    Raises:
        ConfigError: ``split`` is not ``"train"``.
        DatasetFormatError: No annotation file or image folder, an unreadable json (see
            :func:`load_coco_persons`), or not one image with a person box.
    """
    if split != "train":
        raise ConfigError(
            f"coco_scenes is a pre-training source with a train split only, not {split!r}; "
            "evaluate on a person-search dataset with a test split (cuhk_sysu, prw)."
        )
    folder = Path(root).expanduser().resolve()
    annotations = sorted((folder / "annotations").glob(COCO_ANNOTATION_PATTERN))
    if not annotations:
        raise DatasetFormatError(
            f"{folder}: no annotations/{COCO_ANNOTATION_PATTERN} (a COCO-layout folder holds "
            "annotations/instances_train2017.json and train2017/)."
        )
    annotation = annotations[-1]
    image_root = folder / annotation.stem.removeprefix("instances_")
    if not image_root.is_dir():
        raise DatasetFormatError(f"{annotation}: its image folder {image_root} does not exist.")
    records = load_coco_persons(annotation, image_root)
    if not records:
        raise DatasetFormatError(
            f"{annotation}: not one image has a (non-crowd) person box; nothing to train on."
        )
    return PersonSearchSplit(dataset="coco_scenes", split="train", root=folder, images=tuple(records))
