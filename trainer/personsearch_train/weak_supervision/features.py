"""One embedding per ground-truth box of a training set: the input of per-epoch clustering."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = ["BoxFeatures", "extract_box_features"]


@dataclass(frozen=True)
class BoxFeatures:
    """Embeddings of every ground-truth box of a training set.

    Attributes:
        features: ``[N, D]`` float32, L2-normalised.
        image_index: ``[N]`` int64 dataset item of each box.
        box_index: ``[N]`` int64 position of the box within its image.
    """

    features: torch.Tensor
    image_index: torch.Tensor
    box_index: torch.Tensor


@torch.no_grad()
def extract_box_features(
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    *,
    device: torch.device,
    batch_size: int = 2,
    embed: Callable[[list[torch.Tensor], list[dict[str, Any]]], list[torch.Tensor]] | None = None,
    progress: bool = False,
) -> BoxFeatures:
    """Embed every ground-truth box of a training dataset with ``model.embed_boxes``.

    Augmentation is switched off for the pass (no flip), and the model is returned to
    its previous train/eval mode afterwards.

    Args:
        model: Has ``embed_boxes(images, boxes) -> list of [M_i, D] float``.
        dataset: Items ``(image [3, H, W] float, target)`` with ``target["boxes"]``
            ``[M, 4] float32 xyxy`` and ``target["image_index"]`` (int).
        device: Where the model runs.
        batch_size: Images per ``embed_boxes`` call.
        embed: Another embedding of the boxes, called as ``embed(images, targets)``
            (targets with ``boxes`` on ``device``; a method reads what else it needs, such
            as person masks) with the model in eval mode and returning ``[M_i, D]`` per
            image (a method that fuses several paths or branches); ``model.embed_boxes``
            when None.
        progress: Show a progress bar.

    Returns:
        The features on the CPU, in dataset order.
    """
    was_training = model.training
    model.eval()
    saved_flip = getattr(dataset, "flip_prob", 0.0)
    if hasattr(dataset, "flip_prob"):
        dataset.flip_prob = 0.0
    if embed is None:

        def embed(images: list[torch.Tensor], targets: list[dict[str, Any]]) -> list[torch.Tensor]:
            return model.embed_boxes(images, [t["boxes"] for t in targets])

    feats, image_index, box_index = [], [], []
    try:
        starts = range(0, len(dataset), batch_size)
        for start in tqdm(starts, desc="extracting people", disable=not progress, leave=False):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            images = [img.to(device) for img, _ in items]
            targets = [{**t, "boxes": t["boxes"].to(device)} for _, t in items]
            for (_, target), emb in zip(items, embed(images, targets), strict=True):
                feats.append(nn.functional.normalize(emb.float().cpu(), dim=1))
                image_index.append(torch.full((len(emb),), target["image_index"], dtype=torch.int64))
                box_index.append(torch.arange(len(emb), dtype=torch.int64))
    finally:
        if hasattr(dataset, "flip_prob"):
            dataset.flip_prob = saved_flip
        model.train(was_training)
    return BoxFeatures(torch.cat(feats), torch.cat(image_index), torch.cat(box_index))
