"""A CLIP-style checkpoint from a local Hugging Face folder, as a pseudo-caption scorer.

UniPT scores its attribute prompts with a frozen CLIP (paper section 3). Users who have
CLIP weights on disk (a ``save_pretrained`` folder of ``openai/clip-vit-base-patch16``
or any other ``CLIPModel``: ``config.json`` with ``model_type: clip``, the weights and
the tokenizer files) can score with them instead of a retrieval run trained here; no
weights are ever fetched (``local_files_only``).

:class:`HuggingFaceClip` gives such a model the interface
:class:`~personsearch_train.methods.unipt.captioner.PromptScorer` expects of our dual
encoders: ``encode_images`` on ``[0, 1]`` RGB crops, ``encode_texts`` on token ids,
``tokenizer`` and ``image_size``. Crops are resized to the model's square input without
CLIP's centre crop, which would cut the head and feet off a standing person; the
normalisation is the folder's own (``preprocessor_config.json``), CLIP's by default.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from personsearch_train.errors import ConfigError
from personsearch_train.text.image_towers import CLIP_MEAN, CLIP_STD

__all__ = ["HuggingFaceClip", "is_huggingface_clip_folder"]


def is_huggingface_clip_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding a Hugging Face CLIP model (``model_type: clip``)."""
    config = Path(path).expanduser() / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type") == "clip"
    except (OSError, ValueError):
        return False


class HuggingFaceClip(nn.Module):
    """A local ``transformers`` CLIP model with the dual-encoder scoring interface.

    Args:
        folder: The model folder (``config.json``, weights, tokenizer files).
        max_length: Longest prompt in tokens (CLIP's context is 77).

    Raises:
        ConfigError: The folder is not a CLIP model, or its weights or tokenizer do not load.
    """

    def __init__(self, folder: str | Path, *, max_length: int = 77) -> None:
        super().__init__()
        from transformers import AutoTokenizer, CLIPModel

        folder = Path(folder).expanduser()
        if not is_huggingface_clip_folder(folder):
            raise ConfigError(
                f"{folder} is not a Hugging Face CLIP folder (config.json with model_type 'clip'); "
                "give a CLIPModel save_pretrained folder or the run folder of a retrieval training"
            )
        try:
            self.clip = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
            text_tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{folder}: the CLIP model or its tokenizer does not load: {exc}") from None
        self.folder = folder
        self.max_length = min(int(max_length), int(self.clip.config.text_config.max_position_embeddings))
        self._text_tokenizer = text_tokenizer
        side = int(self.clip.config.vision_config.image_size)
        #: ``(height, width)`` the crops are resized to.
        self.image_size: tuple[int, int] = (side, side)
        mean, std = self._normalisation(folder)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @staticmethod
    def _normalisation(folder: Path) -> tuple[Sequence[float], Sequence[float]]:
        """The folder's image mean and std, CLIP's when it does not say."""
        path = folder / "preprocessor_config.json"
        if path.is_file():
            config = json.loads(path.read_text(encoding="utf-8"))
            if "image_mean" in config and "image_std" in config:
                return tuple(config["image_mean"]), tuple(config["image_std"])
        return CLIP_MEAN, CLIP_STD

    @property
    def logit_scale(self) -> float:
        """CLIP's learned softmax scale (``exp`` of its log-parameter)."""
        return float(self.clip.logit_scale.detach().exp())

    def tokenizer(self, texts: list[str]) -> Any:
        """Token ids and attention masks of ``texts``, padded to the longest.

        Returns:
            An object with ``input_ids`` and ``attention_mask``, ``[T, L]`` int64 arrays.
        """
        return self._text_tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np"
        )

    @staticmethod
    def _features(output: Any) -> torch.Tensor:
        # transformers 5 returns a ModelOutput whose pooler_output holds the projected
        # embedding; older releases return the tensor itself.
        return output if isinstance(output, torch.Tensor) else output.pooler_output

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Unit image embeddings.

        Args:
            images: ``[N, 3, H, W]`` float32 RGB in ``[0, 1]``, any size.

        Returns:
            ``[N, E]`` float32, L2-normalised.
        """
        if tuple(images.shape[-2:]) != self.image_size:
            images = F.interpolate(images, size=self.image_size, mode="bilinear", align_corners=False)
        pixels = (images - self.mean) / self.std
        return F.normalize(self._features(self.clip.get_image_features(pixel_values=pixels)).float(), dim=-1)

    def encode_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Unit text embeddings.

        Args:
            input_ids: ``[T, L]`` int64 token ids.
            attention_mask: ``[T, L]`` int64, 1 on real tokens.

        Returns:
            ``[T, E]`` float32, L2-normalised.
        """
        output = self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        return F.normalize(self._features(output).float(), dim=-1)
