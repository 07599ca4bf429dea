"""``unipt``: unified image-text pre-training on pseudo-captioned person crops (UniPT).

UniPT (Shao et al., ICCV 2023; methods.md 5.4) pre-trains both towers of a
text-to-image retrieval model *together*, on person crops whose captions were generated
from the images (:mod:`personsearch_train.methods.unipt.captioner`), so that data and
training match the downstream task. On a batch of ``B`` image-caption pairs:

* **model**: a two-stream :class:`~personsearch_train.models.dual_encoder.DualEncoder`;
  each tower projects every token (``Linear`` per token, the code snapshot's 1x1
  projection) and **max-pools over tokens** for its global embedding (recipe:
  ``image_tower_args.pooling: max``, ``text_pooling: max``);
* **contrast**: symmetric image-text InfoNCE over the diagonal of the cosine matrix,
  ``L_con = (CE(s, diag) + CE(s^T, diag)) / 2`` with ``s = cos / temperature``;
* **MLM** (BERT's, 15 % of the real tokens, 80/10/10 corruption): the masked caption is
  re-encoded by the text tower and a head (``Linear``-GELU-``LayerNorm``-``Linear`` to the
  vocabulary, training only) predicts the original tokens at the selected positions;
* ``L_pre = L_con + beta * L_mlm``, ``beta = 1``.

Known from the paper and its code, and what we chose:

* Eq. 1 and the code use raw cosine logits (temperature 1) at batch 512. At the CPU
  recipes' batch of 32 that signal is too flat to learn from in a few epochs, so the
  synthetic recipes set ``temperature: 0.02`` (IRRA's value); the paper-setting
  default stays 1.
* The code's CAE-style masked-image term regresses to a frozen CLIP ViT-B/16, which
  cannot be had offline. ``mim_teacher`` names any local image-text checkpoint whose
  image tower is the frozen teacher (e.g. the pseudo-caption scorer): half of each
  crop's token cells are blanked (filled with the normalisation mean), the student
  encodes the blanked crop, and a predictor (``Linear``-GELU-``Linear``) regresses the
  teacher's tokens of the *whole* crop at every position, masked (predicted) and visible
  (aligned) alike, with the MSE of unit vectors as in CAE's feature targets. Off by
  default (``mim_weight: 0``); the teacher is frozen and never saved in checkpoints.
* The MLM head sees the text only (two streams, no cross-attention), as BERT's MLM in a
  two-stream model.
* Every crop is its own identity (LUPerson has none); two crops given the same
  pseudo-caption are still negatives of each other, as in the paper.

The checkpoint is a plain dual encoder: ``unipt_finetune`` (or any text-retrieval
recipe) starts from it with ``--set model.init_from=RUN``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from personsearch_train.errors import ConfigError
from personsearch_train.losses.image_text_contrastive import image_text_contrastive
from personsearch_train.losses.masked_language import IGNORE_INDEX, mask_tokens
from personsearch_train.methods.base import MethodLosses, TrainingData, TrainingMethod
from personsearch_train.methods.registry import register_method
from personsearch_train.methods.text_retrieval import TextRetrievalMethod
from personsearch_train.text.image_towers import CLIP_MEAN

if TYPE_CHECKING:
    from personsearch_train.data.text_person import TextPersonSplit
    from personsearch_train.engine.config import ExperimentConfig
    from personsearch_train.models.dual_encoder import PairTrainingOutputs

__all__ = [
    "MaskedImageDistillation",
    "TextMaskedLanguageHead",
    "UniPT",
    "UniPTArgs",
    "UniPTLosses",
    "blank_token_cells",
    "token_grid",
]


@dataclass(frozen=True)
class UniPTArgs:
    """Settings of ``unipt`` (``method_args`` in a recipe).

    Attributes:
        temperature: Softmax temperature of the contrastive loss (paper: 1, raw cosines).
        contrastive_weight: Weight of ``L_con``.
        mlm_weight: ``beta``, weight of ``L_mlm`` (paper: 1; 0 disables MLM).
        mlm_probability: Share of real tokens selected for MLM (0.15).
        captions_file: Caption JSON of a ``luperson_t`` dataset, relative to
            ``data.root`` or absolute.
        eval_dataset: Optional text-person dataset whose test split scores the
            pre-trained towers zero-shot every ``eval.every`` epochs (``""``: none).
        eval_root: Its folder.
        mim_teacher: Run folder or checkpoint of an image-text model whose image tower is
            the frozen teacher of the masked-image term (``""``: none).
        mim_weight: Weight of the masked-image term (needs ``mim_teacher``).
        mim_mask_ratio: Share of token cells blanked per crop (code snapshot: 0.5).
        augment: Flip, pad-and-crop and random erasing of the crops.
        new_module_lr_factor: Learning-rate factor of modules initialised here
            (the image tower, projections, the MLM head) over ``optim.lr``.
        bias_lr_factor: Learning-rate factor of biases.
        bias_weight_decay: Weight decay of biases.
    """

    temperature: float = 1.0
    contrastive_weight: float = 1.0
    mlm_weight: float = 1.0
    mlm_probability: float = 0.15
    captions_file: str = "captions.json"
    eval_dataset: str = ""
    eval_root: str = ""
    mim_teacher: str = ""
    mim_weight: float = 0.0
    mim_mask_ratio: float = 0.5
    augment: bool = True
    new_module_lr_factor: float = 10.0
    bias_lr_factor: float = 1.0
    bias_weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ConfigError(f"method_args.temperature must be positive, got {self.temperature}")
        for name in ("contrastive_weight", "mlm_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"method_args.{name} must be >= 0, got {getattr(self, name)}")
        if self.contrastive_weight == 0 and self.mlm_weight == 0:
            raise ConfigError("method_args: contrastive_weight and mlm_weight are both 0; nothing to train")
        if not 0 < self.mlm_probability < 1:
            raise ConfigError(f"method_args.mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if self.mim_weight < 0:
            raise ConfigError(f"method_args.mim_weight must be >= 0, got {self.mim_weight}")
        if self.mim_weight > 0 and not self.mim_teacher:
            raise ConfigError(
                "method_args.mim_weight > 0 needs method_args.mim_teacher: the run folder or checkpoint "
                "of an image-text model whose image tower is the frozen teacher"
            )
        if not 0 < self.mim_mask_ratio < 1:
            raise ConfigError(f"method_args.mim_mask_ratio must be in (0, 1), got {self.mim_mask_ratio}")
        if bool(self.eval_dataset) != bool(self.eval_root):
            raise ConfigError("method_args.eval_dataset and eval_root go together; set both or neither")


class TextMaskedLanguageHead(nn.Module):
    """BERT's MLM head on text tokens alone: ``Linear``, GELU, ``LayerNorm``, ``Linear`` to the vocabulary.

    Args:
        width: Token width ``D``.
        vocab_size: ``V``.
    """

    def __init__(self, *, width: int, vocab_size: int) -> None:
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width))
        self.decoder = nn.Linear(width, vocab_size)

    def forward(self, tokens: Tensor) -> Tensor:
        """``[..., D]`` float token states -> ``[..., V]`` logits."""
        return self.decoder(self.transform(tokens))


def masked_token_loss(head: TextMaskedLanguageHead, tokens: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of the MLM head at the labelled positions only.

    Projecting only the ``~15 %`` selected positions to the vocabulary (30k words for
    MiniLM) instead of all ``B x L`` saves most of the head's cost.

    Args:
        head: The MLM head.
        tokens: ``[B, L, D]`` float token states of the masked captions.
        labels: ``[B, L]`` int64, original ids at selected positions, ``-100`` elsewhere.

    Returns:
        Scalar float32: mean CE over the selected positions; 0 (in the graph) if none.
    """
    selected = labels != IGNORE_INDEX
    if not bool(selected.any()):
        return tokens.sum() * 0.0
    logits = head(tokens[selected]).float()
    return F.cross_entropy(logits, labels[selected].long())


def token_grid(num_tokens: int, image_size: tuple[int, int]) -> tuple[int, int, int]:
    """The cell grid of an image tower's tokens: ``(leading tokens, rows, columns)``.

    A ResNet tower's tokens are its feature-map cells; a ViT's are a class token and then
    the patches. The grid keeps the crop's aspect ratio.

    Args:
        num_tokens: ``T``, tokens per crop.
        image_size: ``(height, width)`` of the crops.

    Raises:
        ConfigError: ``T`` (or ``T - 1``) is not a grid of the crop's aspect ratio.
    """
    height, width = image_size
    for leading in (0, 1):
        cells = num_tokens - leading
        rows = round((cells * height / width) ** 0.5)
        if rows > 0 and cells % rows == 0 and abs(rows / (cells // rows) - height / width) < 1e-6:
            return leading, rows, cells // rows
    raise ConfigError(
        f"cannot lay {num_tokens} image tokens on a grid of a {height}x{width} crop; the masked-image "
        "term needs a ResNet or ViT image tower"
    )


def blank_token_cells(
    images: Tensor, cell_mask: Tensor, *, rows: int, columns: int, fill: tuple[float, float, float]
) -> Tensor:
    """Fill the pixels of the masked token cells with a constant colour.

    Args:
        images: ``[B, 3, H, W]`` float RGB in ``[0, 1]``; ``H`` and ``W`` multiples of the grid.
        cell_mask: ``[B, rows * columns]`` bool, True where the cell is blanked (row-major).
        rows: Grid rows.
        columns: Grid columns.
        fill: RGB value of blanked pixels.

    Returns:
        ``[B, 3, H, W]`` float, a new tensor.
    """
    batch, _, height, width = images.shape
    pixels = cell_mask.view(batch, 1, rows, columns).to(images.dtype)
    pixels = F.interpolate(pixels, size=(height, width), mode="nearest")
    colour = torch.tensor(fill, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return images * (1 - pixels) + colour * pixels


class MaskedImageDistillation(nn.Module):
    """CAE-style masked-image term against a frozen teacher image tower.

    Args:
        teacher: The teacher's image tower (frozen here, kept out of the module tree so
            it is neither trained nor saved).
        student_width: Token width ``D`` of the student.
        teacher_width: Token width of the teacher.
        mask_ratio: Share of cells blanked per crop.
    """

    def __init__(
        self, teacher: nn.Module, *, student_width: int, teacher_width: int, mask_ratio: float
    ) -> None:
        super().__init__()
        teacher.requires_grad_(False).eval()
        self._teacher = [teacher]
        self.predictor = nn.Sequential(
            nn.Linear(student_width, student_width), nn.GELU(), nn.Linear(student_width, teacher_width)
        )
        self.mask_ratio = float(mask_ratio)

    def forward(self, model: nn.Module, images: Tensor) -> Tensor:
        """The term for ``[B, 3, H, W]`` crops: MSE of unit predicted and teacher tokens."""
        teacher = self._teacher[0].to(images.device)
        with torch.no_grad():
            target = teacher(images).tokens.float()
        leading, rows, columns = token_grid(target.shape[1], tuple(images.shape[-2:]))
        cells = rows * columns
        masked_count = max(1, round(self.mask_ratio * cells))
        # A random permutation per crop: exactly masked_count cells blanked in each.
        order = torch.rand(images.shape[0], cells, device=images.device).argsort(dim=1)
        cell_mask = torch.zeros(images.shape[0], cells, dtype=torch.bool, device=images.device)
        cell_mask.scatter_(1, order[:, :masked_count], True)
        blanked = blank_token_cells(images, cell_mask, rows=rows, columns=columns, fill=CLIP_MEAN)
        student = model.image_outputs(blanked).tokens
        if student.shape[1] != target.shape[1]:
            raise ConfigError(
                f"the student image tower gives {student.shape[1]} tokens, the mim_teacher's "
                f"{target.shape[1]}; use a teacher with the same tower and image size"
            )
        predicted = F.normalize(self.predictor(student).float(), dim=-1)
        return F.mse_loss(predicted, F.normalize(target, dim=-1), reduction="mean") * target.shape[-1]


class UniPTLosses(MethodLosses):
    """``L_con + beta * L_mlm`` on a dual encoder's pair outputs.

    Args:
        args: The method's settings.
        feature_dim: Token width ``D`` of the text tower.
        vocab_size: The tokenizer's vocabulary size.
        mask_token_id: The tokenizer's mask token (required when MLM is on).
        special_token_ids: Ids never masked nor drawn as random replacements.
        teacher: The frozen teacher image tower of the masked-image term (None: off).
    """

    def __init__(
        self,
        args: UniPTArgs,
        *,
        feature_dim: int,
        vocab_size: int,
        mask_token_id: int | None,
        special_token_ids: frozenset[int],
        teacher: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.args = args
        self.mlm_head: TextMaskedLanguageHead | None = None
        if args.mlm_weight > 0:
            if mask_token_id is None:
                raise ConfigError(
                    "method_args.mlm_weight > 0 but the tokenizer has no mask token; set mlm_weight: 0 "
                    "or use a tokenizer with [MASK]"
                )
            self.mlm_head = TextMaskedLanguageHead(width=feature_dim, vocab_size=vocab_size)
        self.vocab_size = int(vocab_size)
        self.mask_token_id = mask_token_id
        self.special_token_ids = frozenset(int(i) for i in special_token_ids)
        self.masked_image: MaskedImageDistillation | None = None
        if args.mim_weight > 0:
            if teacher is None:
                raise ConfigError("method_args.mim_weight > 0 but no mim_teacher image tower was given")
            self.masked_image = MaskedImageDistillation(
                teacher,
                student_width=feature_dim,
                teacher_width=int(getattr(teacher, "embed_dim", feature_dim)),
                mask_ratio=args.mim_mask_ratio,
            )

    def forward(  # type: ignore[override]
        self,
        model: nn.Module,
        outputs: PairTrainingOutputs,
        images: list[Tensor],
        targets: list[dict[str, Any]],
    ) -> dict[str, Tensor]:
        """``loss_con``, ``loss_mlm`` and ``loss_mim`` (those with weight > 0)."""
        args = self.args
        losses: dict[str, Tensor] = {}
        if args.contrastive_weight > 0:
            losses["loss_con"] = args.contrastive_weight * image_text_contrastive(
                outputs.image.embedding.float(),
                outputs.text.embedding.float(),
                logit_scale=1.0 / args.temperature,
            )
        if self.mlm_head is not None:
            masked, labels = mask_tokens(
                outputs.input_ids,
                outputs.attention_mask,
                mask_token_id=int(self.mask_token_id),  # type: ignore[arg-type]
                vocab_size=self.vocab_size,
                special_token_ids=self.special_token_ids,
                probability=args.mlm_probability,
            )
            masked_text = model.text_outputs(masked, outputs.attention_mask)
            losses["loss_mlm"] = args.mlm_weight * masked_token_loss(
                self.mlm_head, masked_text.tokens, labels
            )
        if self.masked_image is not None:
            losses["loss_mim"] = args.mim_weight * self.masked_image(model, torch.stack(images))
        return losses


@register_method
class UniPT(TextRetrievalMethod):
    """UniPT pre-training: image-text contrast + MLM on pseudo-captioned crops, max-pooled towers."""

    name = "unipt"
    summary = "UniPT pre-training: contrastive + MLM on pseudo-captioned crops (luperson_t)"
    Args = UniPTArgs
    reads_identities = False

    def check_config(self, cfg: ExperimentConfig) -> None:
        """A dual encoder on a captioned crop set; identity labels are never read.

        Raises:
            ConfigError: Naming the key.
        """
        # The base's checks (dataset kind...), not TextRetrievalMethod's demand for identity labels.
        TrainingMethod.check_config(self, cfg)
        if cfg.data.mix:
            raise ConfigError("data.mix: unipt pre-trains on one captioned crop set; remove data.mix")
        if not cfg.model.name.startswith("dual_encoder"):
            raise ConfigError(
                f"model.name {cfg.model.name!r}: unipt pre-trains a dual encoder (dual_encoder_*)"
            )
        if cfg.eval.every > 0 and not self.args.eval_dataset and cfg.data.dataset == "luperson_t":
            raise ConfigError(
                "eval.every > 0 but a pseudo-captioned set has no test split; set eval.every: 0, or "
                "method_args.eval_dataset/eval_root to score the towers zero-shot on a text-person test set"
            )

    def build_train_data(
        self, cfg: ExperimentConfig, *, rank: int = 0, world_size: int = 1, train_split: Any = None
    ) -> TrainingData:
        """The caption list of ``data.root`` (``method_args.captions_file``), one item per caption."""
        if train_split is None:
            from personsearch_train.data.registry import load_text_split

            options = (
                {"annotation_file": Path(self.args.captions_file)} if cfg.data.dataset == "luperson_t" else {}
            )
            train_split = load_text_split(cfg.data.dataset, cfg.data.root, "train", **options)
        return super().build_train_data(cfg, rank=rank, world_size=world_size, train_split=train_split)

    def build_test_data(self, cfg: ExperimentConfig) -> TextPersonSplit:
        """The zero-shot test split named by ``method_args.eval_dataset`` (else ``data.dataset``'s)."""
        from personsearch_train.data.registry import load_text_split

        if self.args.eval_dataset:
            return load_text_split(self.args.eval_dataset, self.args.eval_root, "test")
        return load_text_split(cfg.data.dataset, cfg.data.root, "test")

    def build_losses(self, cfg: ExperimentConfig, model: nn.Module, data: TrainingData) -> UniPTLosses:
        """Contrast, MLM (sized by the model's tokenizer) and the optional masked-image term."""
        tokenizer = model.tokenizer
        teacher = None
        if self.args.mim_weight > 0:
            from personsearch_train.engine.checkpoint import load_model_from_checkpoint

            teacher_model, _ = load_model_from_checkpoint(self.args.mim_teacher)
            teacher = getattr(teacher_model, "image_tower", None)
            if teacher is None or tuple(getattr(teacher_model, "image_size", ())) != tuple(model.image_size):
                raise ConfigError(
                    f"method_args.mim_teacher {self.args.mim_teacher}: needs a dual encoder with the "
                    f"image size {list(model.image_size)} of this model"
                )
        return UniPTLosses(
            self.args,
            feature_dim=int(model.feature_dim),
            vocab_size=int(tokenizer.vocab_size),
            mask_token_id=tokenizer.mask_token_id,
            special_token_ids=tokenizer.special_token_ids,
            teacher=teacher,
        )
