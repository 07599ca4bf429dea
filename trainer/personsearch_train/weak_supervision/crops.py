"""Person crops cut from scene images, for the instance (crop) branch of a method.

The crops go through our RoIAlign layer (:func:`personsearch_train.layers.roi_align`,
the ``personsearch_ops`` kernel when it is built) like every other pooling in the
trainer, so a crop branch and the search branch sample pixels the same way. The op
is differentiable in its input, so a loss on the crops trains whatever produced the
images (methods that augment or re-render scenes on the fly rely on that).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from personsearch_train.errors import ConfigError
from personsearch_train.layers.dataset_norm import DatasetSpecificBatchNorm
from personsearch_train.layers.roi_align import roi_align

__all__ = ["crop_people", "embed_person_crops", "frozen_running_statistics"]


def crop_people(
    images: list[torch.Tensor], boxes: list[torch.Tensor], *, output_size: tuple[int, int] = (256, 128)
) -> torch.Tensor:
    """Cut every box out of its image and resize it: the input of a crop branch.

    Each crop is RoIAlign with ``aligned=True`` (half-pixel model, so pixel centres
    line up with the box edges) and an adaptive sampling grid, i.e. a bilinear resize
    of the box contents that averages when it shrinks.

    Args:
        images: ``[C, H_i, W_i]`` float tensors (sizes may differ), all with the same
            ``C``, dtype and device.
        boxes: ``[M_i, 4]`` float ``xyxy`` pixels, one tensor per image (``M_i`` may be 0).
        output_size: ``(height, width)`` of the crops.

    Returns:
        ``[sum M_i, C, height, width]`` crops in image order, then box order, with the
        images' dtype and device; differentiable with respect to the images. With no
        boxes at all the result is empty, on the images' device and dtype.

    Raises:
        ValueError: The lists differ in length, an image is not ``[C, H, W]``, a box
            tensor is not ``[M, 4]``, or ``output_size`` is not two positive ints.
    """
    if len(images) != len(boxes):
        raise ValueError(f"crop_people got {len(images)} images but {len(boxes)} box tensors")
    if len(output_size) != 2 or not all(isinstance(s, int) for s in output_size) or min(output_size) <= 0:
        raise ValueError(f"output_size must be (height, width) positive ints, got {output_size!r}")
    for index, (image, image_boxes) in enumerate(zip(images, boxes, strict=True)):
        if image.dim() != 3:
            raise ValueError(f"image {index} must be [C, H, W], got shape {tuple(image.shape)}")
        if image_boxes.dim() != 2 or image_boxes.shape[1] != 4:
            raise ValueError(
                f"boxes of image {index} must be [M, 4] xyxy, got shape {tuple(image_boxes.shape)}"
            )
    crops = [
        # One call per image: scenes differ in size, so they cannot share a batch tensor.
        roi_align(
            image[None],
            [image_boxes.to(image.device)],
            output_size,
            spatial_scale=1.0,
            sampling_ratio=-1,
            aligned=True,
        )
        for image, image_boxes in zip(images, boxes, strict=True)
        if len(image_boxes)
    ]
    if crops:
        return torch.cat(crops)
    if images:
        return images[0].new_zeros((0, images[0].shape[0], *output_size))
    return torch.zeros(0, 3, *output_size)


@contextlib.contextmanager
def frozen_running_statistics(model: nn.Module, *, batch_statistics: bool = True) -> Iterator[None]:
    """BatchNorm layers of ``model`` leave their running statistics as they are.

    Used around a crop branch (R-SiamNet's instance path, SSL's exemplars): crops are
    a different input distribution from the scenes the running statistics serve at
    inference.

    Args:
        model: The model whose BatchNorm layers are switched for the block.
        batch_statistics: True: normalise with the batch's statistics (training
            behaviour). False: normalise with the running ones (eval behaviour), for a
            batch of one crop, whose statistics over one sample are undefined.
    """
    # Dataset-specific batch norms (hybrid pre-training) keep running statistics too.
    norm_types = (nn.modules.batchnorm._BatchNorm, DatasetSpecificBatchNorm)
    norms = [m for m in model.modules() if isinstance(m, norm_types)]
    saved = [(m.momentum, m.training) for m in norms]
    for m in norms:
        # With momentum 0 the update ``(1 - m) * running + m * batch`` keeps ``running``.
        m.momentum = 0.0
        if not batch_statistics:
            m.eval()
    try:
        yield
    finally:
        for m, (momentum, training) in zip(norms, saved, strict=True):
            m.momentum = momentum
            m.train(training)


def require_crop_encoder(model: nn.Module, *, method: str, model_name: str, crop_height: int) -> None:
    """Check that ``model`` can embed person crops ``crop_height`` pixels high.

    The instance path runs a crop through the trunk and head 2
    (``model.encode_crops``); the crop must give the head at least one row per stripe.

    Args:
        model: The built model.
        method: The method asking (named in the message).
        model_name: ``model.name`` from the recipe (named in the message).
        crop_height: ``method_args.crop_height``.

    Raises:
        ConfigError: The model has no ``encode_crops``, or the crops are too short for its head.
    """
    if not hasattr(model, "encode_crops"):
        raise ConfigError(
            f"model.name: {method} embeds person crops and needs a SeqNet model; "
            f"{model_name!r} has no instance path"
        )
    needed = 2 * model.backbone.stride * model.reid_head.stripes
    if crop_height < needed:
        raise ConfigError(
            f"method_args.crop_height: {crop_height} pixels give {model_name}'s head fewer rows "
            f"than its {model.reid_head.stripes} stripes; use at least {needed}"
        )


def embed_person_crops(
    model: nn.Module, images: list[torch.Tensor], boxes: list[torch.Tensor], *, output_size: tuple[int, int]
) -> torch.Tensor:
    """The instance path: cut the people out, resize them and embed the crops with ``model``.

    R-SiamNet's ``f^b`` and the crop view of hybrid pre-training's instance consistency.
    The crops run in the model's current mode with gradients, but leave the batch
    norms' running statistics alone (:func:`frozen_running_statistics`): inference only
    ever sees scenes. A single crop (one person on this process) is normalised with the
    running statistics, since the statistics of one sample are undefined.

    Args:
        model: A model with ``encode_crops(crops [N, 3, h, w]) -> [N, D]`` (SeqNet).
        images: ``B`` tensors ``[3, H_i, W_i]`` float RGB in ``[0, 1]``.
        boxes: ``B`` tensors ``[M_i, 4]`` float xyxy pixels.
        output_size: ``(height, width)`` of the crops.

    Returns:
        ``[sum M_i, D]`` embeddings in image, then box order.
    """
    crops = crop_people(images, boxes, output_size=output_size)
    with frozen_running_statistics(model, batch_statistics=len(crops) > 1):
        return model.encode_crops(crops)
