"""A ``torch.utils.data.Dataset`` of image-caption pairs for text-to-image retrieval training.

One item per caption (IRRA's training tuples ``(pid, image_id, img_path, caption)``):
``(image, target)`` with ``image`` the caption's crop as a ``[3, H, W]`` float32 RGB
tensor in ``[0, 1]`` and ``target = {"input_ids": [L] int64, "attention_mask": [L]
int64, "pids": [] int64, "image_index": int}``: the input contract of
:meth:`~personsearch_train.models.dual_encoder.DualEncoder.forward_train`.

Augmentation (IRRA ``--img_aug``): horizontal flip (0.5), zero-pad by ``pad`` pixels and
take a random crop of the input size, random erasing (scale 0.02-0.4, filled with the
normalisation mean). Random draws come from a generator seeded by
``(seed, epoch, index)``, so a sample is the same whichever worker or resumed run loads it.
Captions are tokenised once, when the dataset is built.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from personsearch_train.data.person_crops import read_person_crop
from personsearch_train.data.text_person import TextPersonSplit
from personsearch_train.errors import DatasetFormatError
from personsearch_train.text.image_towers import CLIP_MEAN
from personsearch_train.text.tokenization import TextTokenizer

__all__ = ["TextImagePairDataset"]


class TextImagePairDataset(torch.utils.data.Dataset):
    """Image-caption pairs of a training split.

    Args:
        split: A training :class:`~personsearch_train.data.text_person.TextPersonSplit`
            (pids are contiguous labels).
        tokenizer: The model's tokenizer.
        image_size: ``(height, width)`` of the model input.
        seed: Base seed of the augmentation generators.
        augment: Apply flip, pad-and-crop and random erasing.
        flip_prob: Probability of a horizontal flip.
        pad: Zero padding before the random crop, in pixels (IRRA: 10 at 384x128).
        erase_prob: Probability of random erasing.

    Raises:
        DatasetFormatError: The split has no captions.
    """

    def __init__(
        self,
        split: TextPersonSplit,
        *,
        tokenizer: TextTokenizer,
        image_size: tuple[int, int],
        seed: int = 0,
        augment: bool = True,
        flip_prob: float = 0.5,
        pad: int = 10,
        erase_prob: float = 0.5,
    ) -> None:
        if len(split.captions) == 0:
            raise DatasetFormatError(
                f"{split.root}: the {split.split} split of {split.dataset} has no captions"
            )
        self.split = split
        self.image_size = (int(image_size[0]), int(image_size[1]))
        tokens = tokenizer(list(split.captions))
        self.input_ids = torch.from_numpy(np.ascontiguousarray(tokens.input_ids, dtype=np.int64))
        self.attention_mask = torch.from_numpy(np.ascontiguousarray(tokens.attention_mask, dtype=np.int64))
        self.seed = int(seed)
        self.augment = bool(augment)
        self.flip_prob = float(flip_prob)
        self.pad = int(pad)
        self.erase_prob = float(erase_prob)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.split.captions)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch``."""
        self.epoch = int(epoch)

    def _augment(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if float(torch.rand((), generator=generator)) < self.flip_prob:
            image = image.flip(-1)
        height, width = self.image_size
        if self.pad > 0:
            padded = torch.nn.functional.pad(image, (self.pad, self.pad, self.pad, self.pad))
            top = int(torch.randint(0, 2 * self.pad + 1, (), generator=generator))
            left = int(torch.randint(0, 2 * self.pad + 1, (), generator=generator))
            image = padded[:, top : top + height, left : left + width]
        if float(torch.rand((), generator=generator)) < self.erase_prob:
            image = self._erase(image, generator)
        return image.contiguous()

    @staticmethod
    def _erase(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # Random erasing (Zhong et al.) with torchvision's defaults: area 2-40 %,
        # aspect ratio log-uniform in [0.3, 3.3]; up to 10 tries to fit the box.
        _, height, width = image.shape
        for _ in range(10):
            area = height * width * float(torch.empty(()).uniform_(0.02, 0.4, generator=generator))
            log_ratio = float(torch.empty(()).uniform_(np.log(0.3), np.log(1 / 0.3), generator=generator))
            ratio = float(np.exp(log_ratio))
            h = int(round(np.sqrt(area * ratio)))
            w = int(round(np.sqrt(area / ratio)))
            if 0 < h < height and 0 < w < width:
                top = int(torch.randint(0, height - h + 1, (), generator=generator))
                left = int(torch.randint(0, width - w + 1, (), generator=generator))
                image = image.clone()
                image[:, top : top + h, left : left + w] = torch.tensor(CLIP_MEAN).view(3, 1, 1)
                return image
        return image

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image_index = int(self.split.caption_image[index])
        crop = read_person_crop(self.split.image_paths[image_index], self.image_size)
        image = torch.from_numpy(crop)
        if self.augment:
            generator = torch.Generator().manual_seed(
                (self.seed * 1_000_003 + self.epoch) * 10_000_019 + index
            )
            image = self._augment(image, generator)
        target = {
            "input_ids": self.input_ids[index],
            "attention_mask": self.attention_mask[index],
            "pids": torch.tensor(int(self.split.caption_pids[index]), dtype=torch.int64),
            "image_index": image_index,
        }
        return image, target
