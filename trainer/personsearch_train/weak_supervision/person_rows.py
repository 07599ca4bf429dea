"""Where each annotated training person lives in a per-person memory, and what is known of them.

Weakly supervised methods keep one memory row per annotated person of the training set,
in dataset order: person ``m`` of item ``i`` is row ``sum(boxes_per_item[:i]) + m``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from personsearch_train.models.structures import TrainingOutputs

__all__ = ["PersonRows", "box_counts", "hidden_identities", "rows_of_targets"]


def box_counts(records: list[Any]) -> np.ndarray:
    """``[I]`` int64 number of annotated people of each training item."""
    return np.array([len(r.boxes) for r in records], dtype=np.int64)


def hidden_identities(records: list[Any]) -> np.ndarray:
    """``[N]`` int64 identity of every annotated person, in row order, for pseudo-label reports only."""
    return np.concatenate([np.asarray(r.pids, dtype=np.int64).reshape(-1) for r in records])


def rows_of_targets(row_offsets: Tensor, targets: list[dict[str, Any]]) -> Tensor:
    """``[sum M_b]`` int64 rows of every person of a batch, in image then box order.

    Args:
        row_offsets: ``[I]`` int64 first row of each training item.
        targets: The batch's targets (``image_index`` and ``boxes``).
    """
    device = row_offsets.device
    return torch.cat(
        [row_offsets[int(t["image_index"])] + torch.arange(len(t["boxes"]), device=device) for t in targets]
    )


class PersonRows(nn.Module):
    """Where each annotated training person lives in a per-person memory.

    Row of person ``m`` of dataset item ``i`` is ``sum(boxes_per_item[:i]) + m``.

    Args:
        boxes_per_item: ``[I]`` int64 annotated people of each training item, in dataset order.

    Attributes:
        row_offsets: ``[I]`` int64 buffer, first row of each item.
        image_of_row: ``[N]`` int64 buffer, the item of each row.
    """

    def __init__(self, boxes_per_item: np.ndarray) -> None:
        super().__init__()
        counts = torch.as_tensor(np.asarray(boxes_per_item, dtype=np.int64))
        self.register_buffer("row_offsets", torch.cumsum(counts, 0) - counts)
        self.register_buffer("image_of_row", torch.repeat_interleave(torch.arange(len(counts)), counts))

    @property
    def size(self) -> int:
        """Number of rows ``N``."""
        return int(self.image_of_row.numel())

    def of_targets(self, targets: list[dict[str, Any]]) -> Tensor:
        """``[sum M_b]`` int64 rows of every person of the batch, in image then box order."""
        return rows_of_targets(self.row_offsets, targets)

    def of_rois(self, outputs: TrainingOutputs, targets: list[dict[str, Any]]) -> Tensor:
        """``[K]`` int64 rows of the people head 2's sampled RoIs matched."""
        items = torch.tensor([int(t["image_index"]) for t in targets], device=self.row_offsets.device)
        image = items[outputs.person_image_index.to(items.device)]
        return self.row_offsets[image] + outputs.person_box_index.to(items.device)
