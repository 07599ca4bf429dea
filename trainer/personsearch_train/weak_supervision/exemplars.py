"""Multi-scale person exemplars with the background removed: SSL's scale augmentation.

SSL (Wang et al., ICCV 2023, section 3.2, Eq. 1) crops each annotated person out of its
scene, multiplies the crop by a binary person mask (a human-parsing model's output in
the paper) and resizes it bilinearly to ``K`` fixed scales; with the crop at its own
size that gives ``K + 1`` exemplars per person. Here:

* **Masks** come from a per-scene label map (:mod:`personsearch_train.data.person_masks`:
  ``k + 1`` on the pixels of the ``k``-th annotated person, ``255`` on "some person"
  pixels of a foreground-only mask, 0 elsewhere; the synthetic generator writes one for
  every scene). Without one,
  an ellipse inscribed in the box stands in for the person's silhouette: it keeps the
  body's centre and drops most of the corners, where background dominates.
* **The original scale** keeps the person's own pixels (no resampling). People of a
  batch differ in size, so each masked crop is centred on a shared black canvas as large
  as the batch's largest person; since the removed background is black too, the canvas
  only adds more removed background, and the batch runs as one tensor.
* **Rescaled exemplars** are bilinear resizes of the masked crop (antialiased when
  shrinking, so a small scale sees the person rather than every n-th pixel of it).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from personsearch_train.data.person_masks import MASK_ANY_PERSON

__all__ = ["box_scales_kmeans", "masked_person_crops", "multi_scale_exemplars"]


def _integer_box(box: Tensor, height: int, width: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = (float(v) for v in box)
    left = min(max(int(math.floor(x1)), 0), width - 1)
    top = min(max(int(math.floor(y1)), 0), height - 1)
    right = max(min(int(math.ceil(x2)), width), left + 1)
    bottom = max(min(int(math.ceil(y2)), height), top + 1)
    return left, top, right, bottom


def _ellipse(height: int, width: int, device: torch.device) -> Tensor:
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height * 2.0 - 1.0
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width * 2.0 - 1.0
    return (ys[:, None] ** 2 + xs[None, :] ** 2) <= 1.0


def masked_person_crops(
    image: Tensor, boxes: Tensor, mask_labels: Tensor | None, *, remove_background: bool = True
) -> list[Tensor]:
    """Each person of one scene cut out at its own size, background set to 0.

    Args:
        image: ``[3, H, W]`` float scene.
        boxes: ``[M, 4]`` float ``xyxy`` pixels (rounded outwards to whole pixels).
        mask_labels: ``[H, W]`` uint8 label map (``k + 1`` for person ``k``,
            ``MASK_ANY_PERSON`` for unattributed person pixels, 0 background), or None
            for the inscribed-ellipse fallback.
        remove_background: False keeps the background (the masking ablation).

    Returns:
        ``M`` tensors ``[3, h_k, w_k]`` with the image's dtype and device.

    Raises:
        ValueError: The image, boxes or label map have the wrong shape.
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be [3, H, W], got {tuple(image.shape)}")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be [M, 4] xyxy, got {tuple(boxes.shape)}")
    height, width = image.shape[1:]
    if mask_labels is not None and tuple(mask_labels.shape) != (height, width):
        raise ValueError(
            f"person mask is {tuple(mask_labels.shape)} but the image is {(height, width)}; "
            "a mask must have its scene's size"
        )
    crops = []
    for index, box in enumerate(boxes):
        left, top, right, bottom = _integer_box(box, height, width)
        crop = image[:, top:bottom, left:right]
        if remove_background:
            if mask_labels is None:
                keep = _ellipse(bottom - top, right - left, image.device)
            else:
                labels = mask_labels[top:bottom, left:right].to(image.device)
                keep = (labels == index + 1) | (labels == MASK_ANY_PERSON)
            crop = crop * keep.to(crop.dtype)
        crops.append(crop)
    return crops


def _round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def multi_scale_exemplars(
    crops: list[Tensor], scales: list[tuple[int, int]], *, min_height: int, size_multiple: int = 16
) -> list[Tensor]:
    """The ``K + 1`` exemplar batches of a set of person crops.

    Args:
        crops: ``P`` person crops ``[3, h_p, w_p]`` (from :func:`masked_person_crops`).
        scales: ``K`` ``(height, width)`` target sizes.
        min_height: Smallest canvas height the embedding head accepts.
        size_multiple: The original-scale canvas is rounded up to a multiple of this
            (the trunk's total stride, so no row or column of it is dropped).

    Returns:
        ``K + 1`` tensors: ``[P, 3, H_0, W_0]`` (every crop centred at its own size on a
        black canvas of the batch's largest size), then ``[P, 3, h_s, w_s]`` per scale.
        Empty batches (``P = 0``) keep their spatial sizes.
    """
    if crops:
        reference = crops[0]
        canvas_h = _round_up(max(max(c.shape[1] for c in crops), min_height), size_multiple)
        canvas_w = _round_up(max(c.shape[2] for c in crops), size_multiple)
        canvas = reference.new_zeros((len(crops), 3, canvas_h, canvas_w))
        for p, crop in enumerate(crops):
            top = (canvas_h - crop.shape[1]) // 2
            left = (canvas_w - crop.shape[2]) // 2
            canvas[p, :, top : top + crop.shape[1], left : left + crop.shape[2]] = crop
    else:
        canvas = torch.zeros(0, 3, _round_up(min_height, size_multiple), size_multiple)
    batches = [canvas]
    for height, width in scales:
        resized = [
            F.interpolate(
                crop[None],
                size=(height, width),
                mode="bilinear",
                align_corners=False,
                antialias=crop.shape[1] > height or crop.shape[2] > width,
            )
            for crop in crops
        ]
        batches.append(torch.cat(resized) if resized else canvas.new_zeros((0, 3, height, width)))
    return batches


def box_scales_kmeans(
    boxes: np.ndarray, count: int, *, min_height: int, seed: int = 0, multiple: int = 8
) -> list[tuple[int, int]]:
    """``count`` exemplar sizes from k-means over the training boxes' ``(height, width)``.

    The paper's section 4.2 fixes its scales (112x48, 224x96, 448x192 for 1500x900
    scenes); scales fitted to a dataset's own box sizes serve other image sizes. Centres
    are sorted by height and rounded up to a multiple of ``multiple`` pixels; a centre
    shorter than ``min_height`` is scaled up to it with its aspect ratio kept, since the
    embedding head cannot take fewer rows.

    Args:
        boxes: ``[N, 4]`` float ``xyxy`` boxes (``N >= count``).
        count: ``K``.
        min_height: Smallest height the head takes.
        seed: k-means seed.
        multiple: Sizes are rounded up to a multiple of this.

    Returns:
        ``K`` ``(height, width)`` pairs, shortest first.

    Raises:
        ValueError: Fewer boxes than scales.
    """
    from sklearn.cluster import KMeans

    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) < count:
        raise ValueError(f"k-means over {len(boxes)} boxes cannot give {count} scales")
    sizes = np.stack([boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]], axis=1)
    centres = KMeans(n_clusters=count, n_init=10, random_state=seed).fit(sizes).cluster_centers_
    scales = []
    for height, width in sorted(centres.tolist()):
        if height < min_height:
            width, height = width * min_height / height, float(min_height)
        scales.append(
            (
                max(_round_up(int(round(height)), multiple), min_height),
                max(multiple, _round_up(int(round(width)), multiple)),
            )
        )
    return scales
