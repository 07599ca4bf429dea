"""SSL's scale-invariant loss (Wang et al., ICCV 2023, section 3.2, Eqs. 2-4).

Self-similarity driven Scale-invariant Learning crops every annotated person of a scene
image, masks its background and resizes the crop to ``K`` scales; a multi-scale
exemplar branch embeds the original-scale crop ``f_i^o`` and the ``K`` rescaled ones
``f_i^s``. For person ``i`` of image ``b``, with instance feature ``f_i`` from the main
branch and ``D`` the squared Euclidean distance between L2-normalised features,

    ``l_i = [m + max_{s=1..K} D(f_i, f_i^s) - min_{j != i in b, s=0..K} D(f_i, f_j^s)]_+
    + gamma * D(f_i, f_i^o)``   (Eqs. 2-3)

(hardest own-scale positive against the most confusing exemplar of another person of
the same image, plus a pull towards the original-scale exemplar), averaged over the
``P_b`` persons of image ``b`` (Eq. 2) and then over the ``B`` images (Eq. 4). The paper
uses ``m = 0.3`` and ``gamma = 0.05`` (section 4.2).

A person alone in its image has no negative: its hinge term is 0 and only the
``gamma`` pull remains (the paper does not say; a missing minimum has nothing to push
away from).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["scale_invariant_loss"]


def scale_invariant_loss(
    instance: Tensor,
    exemplars: Tensor,
    image_ids: Tensor,
    *,
    margin: float = 0.3,
    gamma: float = 0.05,
) -> Tensor:
    """Eq. 4: Eq. 2 averaged over the persons of each image, then over the images.

    Args:
        instance: ``[P, D]`` float instance features ``f_i`` of the main branch
            (normalised here).
        exemplars: ``[P, S, D]`` float exemplar features, ``S = K + 1``; ``[:, 0]`` is the
            original-scale exemplar ``f_i^o`` and ``[:, 1:]`` the ``K`` rescaled ones
            (normalised here).
        image_ids: ``[P]`` int64 scene image of each person; any values, only equality
            matters.
        margin: ``m``.
        gamma: ``gamma``, weight of the original-scale pull.

    Returns:
        Scalar float32; 0 (in the graph) for ``P = 0``.

    Raises:
        ValueError: Shapes disagree or ``S < 2`` (no rescaled exemplar).
    """
    if instance.dim() != 2 or exemplars.dim() != 3:
        raise ValueError(
            f"instance [P, D] and exemplars [P, S, D] expected, got {tuple(instance.shape)}, "
            f"{tuple(exemplars.shape)}"
        )
    count, dim = instance.shape
    if exemplars.shape[0] != count or exemplars.shape[2] != dim or image_ids.shape != (count,):
        raise ValueError(
            f"exemplars must be [P, S, D] and image_ids [P] for instance {tuple(instance.shape)}, got "
            f"{tuple(exemplars.shape)}, {tuple(image_ids.shape)}"
        )
    if exemplars.shape[1] < 2:
        raise ValueError(
            f"exemplars need the original scale and at least one rescaled one, got S = {exemplars.shape[1]}"
        )
    if count == 0:
        return (instance.sum() + exemplars.sum()).float() * 0.0
    f = F.normalize(instance.float(), dim=1)
    g = F.normalize(exemplars.float(), dim=2)
    # Between unit vectors D = 2 - 2 cos; every (i, j, s) triple at once is P*P*S, small.
    distance = 2.0 - 2.0 * torch.einsum("id,jsd->ijs", f, g)  # [P, P, S]
    rows = torch.arange(count, device=f.device)
    own = distance[rows, rows]  # [P, S]
    pull = own[:, 0]
    hardest_positive = own[:, 1:].amax(dim=1)
    others = (image_ids[:, None] == image_ids[None, :]) & ~torch.eye(count, dtype=torch.bool, device=f.device)
    nearest_other = distance.amin(dim=2).masked_fill(~others, float("inf")).amin(dim=1)
    has_negative = others.any(dim=1)
    hinge = F.relu(margin + hardest_positive - nearest_other)
    per_person = torch.where(has_negative, hinge, torch.zeros_like(hinge)) + gamma * pull
    _, image_index = torch.unique(image_ids, return_inverse=True)
    images = int(image_index.max()) + 1
    per_image_sum = per_person.new_zeros(images).index_add_(0, image_index, per_person)
    per_image_count = torch.bincount(image_index, minlength=images).to(per_person.dtype)
    return (per_image_sum / per_image_count).mean()
