"""A ``torch.utils.data.Dataset`` over a training :class:`PersonSearchSplit`.

Each item is ``(image, target)`` with ``image`` a ``[3, H, W]`` float32 RGB tensor in
``[0, 1]`` and ``target = {"boxes": [M, 4] float32 xyxy, "pids": [M] int64,
"image_index": int, "flipped": bool}``: the input contract of the models'
``forward_train``. With ``person_masks`` set, the target also holds
``"person_masks"``: the ``[H, W]`` uint8 label map of
:mod:`personsearch_train.data.person_masks`, flipped with the image. Random
augmentation draws from a generator seeded by ``(seed, epoch, index)``, so a sample
is the same whichever worker, rank or resumed run loads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from personsearch_train.data.images import read_bgr
from personsearch_train.data.person_masks import person_mask_path, read_person_mask
from personsearch_train.data.structures import UNLABELLED, PersonSearchSplit
from personsearch_train.data.transforms import random_hflip
from personsearch_train.errors import DatasetFormatError

__all__ = ["PersonSearchTrainDataset", "collate_batch", "image_sizes", "read_image"]


def read_image(path: str | Path) -> torch.Tensor:
    """Read an image file as a ``[3, H, W]`` float32 RGB tensor in ``[0, 1]``.

    Raises:
        DatasetFormatError: If the file is missing or not a readable image.
    """
    rgb = cv2.cvtColor(read_bgr(path), cv2.COLOR_BGR2RGB)
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div_(255.0)


def image_sizes(paths: list[Path]) -> np.ndarray:
    """``[N, 2]`` int64 ``(height, width)`` of each image, read from file headers only."""
    sizes = np.zeros((len(paths), 2), dtype=np.int64)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                width, height = image.size
        except OSError as exc:
            raise DatasetFormatError(f"{path}: cannot read image header: {exc}") from None
        sizes[i] = (height, width)
    return sizes


class PersonSearchTrainDataset(torch.utils.data.Dataset):
    """Training scenes with their person boxes and identity labels.

    Args:
        split: A training split (ids already contiguous labels, ``-1`` unlabelled).
        flip_prob: Probability of a horizontal flip.
        seed: Base seed of the augmentation generators.
        use_identities: If False, every box gets the unlabelled id (boxes-only training).
        drop_empty: Skip images with no annotated person.
        person_masks: Folder of per-person mask PNGs, one per image named
            ``<image stem>.png`` (see :mod:`personsearch_train.data.person_masks`;
            :func:`~personsearch_train.data.person_masks.default_person_mask_dir`
            finds the one shipped with a dataset). None: targets carry no masks.

    Raises:
        DatasetFormatError: No usable image, or ``person_masks`` is not a folder or
            lacks the mask of some image.
    """

    def __init__(
        self,
        split: PersonSearchSplit,
        *,
        flip_prob: float = 0.5,
        seed: int = 0,
        use_identities: bool = True,
        drop_empty: bool = True,
        person_masks: Path | None = None,
    ) -> None:
        self.split = split
        self.records = [r for r in split.images if len(r.boxes) > 0] if drop_empty else list(split.images)
        if not self.records:
            raise DatasetFormatError(f"{split.root}: the {split.split} split has no image with a person box")
        self.flip_prob = float(flip_prob)
        self.seed = int(seed)
        self.use_identities = bool(use_identities)
        self.epoch = 0
        self._sizes: np.ndarray | None = None
        self._pseudo: list[np.ndarray] | None = None
        self.person_masks: Path | None = None
        self.use_person_masks(person_masks)

    def use_person_masks(self, folder: Path | None) -> None:
        """Serve the person masks of ``folder`` with every item (None: no masks).

        Every training image's mask is looked for here, so a gap fails now rather than
        mid-epoch in a loader worker.

        Raises:
            DatasetFormatError: ``folder`` is not a folder or lacks the mask of some image.
        """
        if folder is None:
            self.person_masks = None
            return
        folder = Path(folder)
        if not folder.is_dir():
            raise DatasetFormatError(
                f"{folder}: person-mask folder not found; supply one mask PNG per training image "
                "named after the image (<image stem>.png), or leave the option unset to use the "
                "ellipse fallback."
            )
        missing = [
            path for path in (person_mask_path(folder, r.path) for r in self.records) if not path.is_file()
        ]
        if missing:
            shown = ", ".join(p.name for p in missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise DatasetFormatError(
                f"{folder}: {len(missing)} of {len(self.records)} training images have no person mask "
                f"(missing {shown}); supply one mask PNG per training image named after the image "
                "(<image stem>.png), or leave the option unset to use the ellipse fallback."
            )
        self.person_masks = folder

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch``."""
        self.epoch = int(epoch)

    def set_pseudo_labels(self, labels: list[np.ndarray] | None) -> None:
        """Replace the identity labels (e.g. cluster ids from a method's hook).

        Args:
            labels: Per item an ``[M_i]`` int64 array (``-1`` = unlabelled) matching
                that item's boxes, or None to go back to the split's labels.
        """
        if labels is not None:
            if len(labels) != len(self.records):
                raise ValueError(f"need pseudo labels for {len(self.records)} items, got {len(labels)}")
            labels = [np.asarray(x, dtype=np.int64).reshape(-1) for x in labels]
            for record, item in zip(self.records, labels, strict=True):
                if len(item) != len(record.boxes):
                    raise ValueError(
                        f"{record.name}: {len(record.boxes)} boxes but {len(item)} pseudo labels"
                    )
        self._pseudo = labels

    def sizes(self) -> np.ndarray:
        """``[N, 2]`` int64 ``(height, width)`` per item (cached)."""
        if self._sizes is None:
            self._sizes = image_sizes([r.path for r in self.records])
        return self._sizes

    def aspect_ratios(self) -> np.ndarray:
        """``[N]`` float64 width / height per item."""
        sizes = self.sizes()
        return sizes[:, 1] / np.maximum(sizes[:, 0], 1)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        record = self.records[index]
        image = read_image(record.path)
        boxes = torch.from_numpy(record.boxes.copy())
        if self._pseudo is not None:
            pids = torch.from_numpy(self._pseudo[index].copy())
        elif self.use_identities:
            pids = torch.from_numpy(record.pids.copy())
        else:
            pids = torch.full((len(boxes),), UNLABELLED, dtype=torch.int64)
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index)
        image, boxes, flipped = random_hflip(image, boxes, prob=self.flip_prob, generator=generator)
        target: dict[str, Any] = {"boxes": boxes, "pids": pids, "image_index": index, "flipped": flipped}
        if self.person_masks is not None:
            mask = read_person_mask(
                person_mask_path(self.person_masks, record.path),
                (int(image.shape[1]), int(image.shape[2])),
                num_persons=len(record.boxes),
            )
            # The same flip decision as the image, so label k + 1 stays inside box k.
            masks = torch.from_numpy(mask)
            target["person_masks"] = masks.flip(-1) if flipped else masks
        return image, target


def collate_batch(items: list[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Keep images as a list (they differ in size); the model batches them itself."""
    images = [item[0] for item in items]
    targets = [item[1] for item in items]
    return images, targets
