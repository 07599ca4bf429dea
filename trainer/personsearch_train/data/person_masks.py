"""Per-person mask files of scene images: where they live, how they are encoded, reading them.

A person mask is a single-channel uint8 PNG label map with the scene image's size,
stored as ``<dataset root>/person_masks/<image file stem>.png`` (the dataset root is
the folder a reader's :attr:`PersonSearchSplit.root` points to, e.g. ``CUHK-SYSU/``
or ``PRW/``; ``s12.jpg`` -> ``person_masks/s12.png``). Pixel values:

* ``0`` (:data:`MASK_BACKGROUND`): no person;
* ``k + 1`` for ``k`` in ``0..253``: the pixel shows the ``k``-th person of the image
  in annotation order, i.e. ``ImageRecord.boxes[k]`` as the dataset's reader returns
  it (so a pixel labelled ``k + 1`` lies inside box ``k``);
* ``255`` (:data:`MASK_ANY_PERSON`): a person, without saying which; for masks that
  only separate foreground from background, e.g. a human parser run on the whole
  scene. Such a mask may mix 255 with per-person labels.

The synthetic generator writes these masks for its CUHK-SYSU and PRW scenes (from the
renderer's per-pixel owner map, occluded parts excluded). Nothing here imports torch.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from personsearch_train.data.structures import PersonSearchSplit
from personsearch_train.errors import DatasetFormatError

__all__ = [
    "MASK_ANY_PERSON",
    "MASK_BACKGROUND",
    "MAX_MASK_PERSONS",
    "PERSON_MASK_DIR",
    "default_person_mask_dir",
    "person_mask_path",
    "read_person_mask",
]

#: Folder name of the masks inside a dataset root.
PERSON_MASK_DIR = "person_masks"
#: Mask value of pixels that show no person.
MASK_BACKGROUND = 0
#: Mask value of pixels that show a person whose box is not told.
MASK_ANY_PERSON = 255
#: Most people a mask can tell apart (labels ``1..254``; 255 is reserved).
MAX_MASK_PERSONS = MASK_ANY_PERSON - 1

# What to tell a user whose mask folder does not fit the images.
_ADVICE = (
    "supply one single-channel uint8 PNG per training image, named after the image "
    "(<image stem>.png) and of the image's size, or leave the person-mask option unset "
    "to use the ellipse fallback"
)


def default_person_mask_dir(split: PersonSearchSplit) -> Path | None:
    """The mask folder that ships with a dataset, if any.

    Args:
        split: A split read by a dataset reader; its ``root`` is the dataset folder
            (``CUHK-SYSU/``, ``PRW/``, ...), where the synthetic generator also puts
            ``person_masks/``.

    Returns:
        ``split.root / "person_masks"`` when that folder exists, else None.
    """
    folder = Path(split.root) / PERSON_MASK_DIR
    return folder if folder.is_dir() else None


def person_mask_path(mask_dir: Path, image_path: Path) -> Path:
    """The mask file of one image: ``mask_dir / "<image stem>.png"``."""
    return Path(mask_dir) / f"{Path(image_path).stem}.png"


def read_person_mask(path: Path, size: tuple[int, int], *, num_persons: int | None = None) -> np.ndarray:
    """Read and check one person-mask PNG.

    Args:
        path: Mask file.
        size: ``(height, width)`` of the image the mask belongs to.
        num_persons: Boxes annotated in that image; when given, a label above it
            (other than :data:`MASK_ANY_PERSON`) is an error, because it would point
            at a box that does not exist (masks out of step with the annotations).

    Returns:
        ``[H, W]`` uint8 label map (see the module docstring for the values).

    Raises:
        DatasetFormatError: The file is missing, cannot be decoded, is not a 2-D
            uint8 image, has another size than the image, or names a missing box.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(f"{path}: person mask not found; {_ADVICE}.")
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise DatasetFormatError(f"{path}: person mask cannot be decoded; {_ADVICE}.")
    if mask.ndim != 2 or mask.dtype != np.uint8:
        channels = 1 if mask.ndim == 2 else mask.shape[2]
        raise DatasetFormatError(
            f"{path}: person mask must be a single-channel uint8 label map, found {channels} "
            f"channel(s) of {mask.dtype}; {_ADVICE}."
        )
    height, width = (int(v) for v in size)
    if mask.shape != (height, width):
        raise DatasetFormatError(
            f"{path}: person mask is {mask.shape[1]}x{mask.shape[0]} pixels but its image is "
            f"{width}x{height}; {_ADVICE}."
        )
    if num_persons is not None:
        labels = mask[mask != MASK_ANY_PERSON]
        top = int(labels.max()) if labels.size else MASK_BACKGROUND
        if top > num_persons:
            raise DatasetFormatError(
                f"{path}: person mask labels a pixel {top} (person {top - 1}) but the image has "
                f"{num_persons} annotated box(es); labels must follow the annotation order "
                f"(value k + 1 = box k, {MASK_ANY_PERSON} = some person)."
            )
    return mask
