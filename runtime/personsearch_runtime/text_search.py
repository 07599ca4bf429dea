"""Sentence search in the runtime: tokenising, the text and crop encoders, query sentences.

A bundle exported with ``--text-checkpoint`` carries a dual encoder's two towers as
``text_encoder`` and ``crop_encoder`` and the text model's ``tokenizer.json`` (see the
"Text graphs" contract in :mod:`personsearch_runtime.bundle`). Everything here runs
without torch: tokenisation is the ``tokenizers`` package reading that file (the same
Rust tokenizer the trainer used, so the ids are the ones the model was trained on), the
graphs run on any runtime backend.

Sentences are checked before anything runs (:func:`check_sentence`): a query must be text
with at least one letter or digit, valid UTF-8 when given as bytes (or as a command-line
argument, which Python decodes with surrogate escapes). A sentence longer than the text
encoder's ``max_length`` tokens is cut at the end, as in training, with a
:class:`SentenceTruncatedWarning` naming it.

Several sentences describing one person become one query: the mean of their unit
embeddings, normalised again (:func:`combine_sentence_embeddings`), so each sentence
counts equally whatever its length.

Person crops for the crop encoder are cut from the original frame at each box rounded
outwards to whole pixels and clipped to the frame, then resized bilinearly to the
encoder's input size (:func:`crop_person_boxes`); the trainer's
``personsearch_train.data.person_crops.crop_person_boxes`` applies the same rule, and a
test compares the two.
"""

from __future__ import annotations

import math
import unicodedata
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from personsearch_runtime.bundle import Bundle, TokenizerSpec
from personsearch_runtime.detection import l2_normalize
from personsearch_runtime.errors import BundleError, InputError
from personsearch_runtime.preprocess import as_bgr_image

__all__ = [
    "SentenceEncoder",
    "SentenceTokenizer",
    "SentenceTruncatedWarning",
    "TokenizedSentences",
    "check_sentence",
    "combine_sentence_embeddings",
    "crop_person_boxes",
    "integer_crop_boxes",
]


class SentenceTruncatedWarning(UserWarning):
    """A query sentence had more tokens than the text encoder takes and was cut at the end."""


def _has_surrogates(text: str) -> bool:
    # Python decodes argv and environment bytes that are not UTF-8 to lone surrogates
    # (U+DC80..U+DCFF, "surrogateescape"); they are not text and no tokenizer knows them.
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def check_sentence(text: object, name: str = "text") -> str:
    """Check one query sentence and return it stripped.

    Args:
        text: A ``str``, or ``bytes`` holding UTF-8 text.
        name: The argument's name, for the message.

    Returns:
        The sentence without leading and trailing white space.

    Raises:
        InputError: Not text, bytes that are not UTF-8, empty or white space only, or
            no letter or digit at all (only punctuation or symbols).
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{name} is not UTF-8 text (byte {exc.start} is 0x{bytes(text)[exc.start]:02x}); "
                "give the sentence as UTF-8"
            ) from None
    if not isinstance(text, str):
        raise InputError(f"{name} is a {type(text).__name__}; expected a sentence (str)")
    if _has_surrogates(text):
        raise InputError(
            f"{name} holds bytes that are not UTF-8 text; give the sentence in UTF-8 (check the "
            "terminal's or the calling program's encoding)"
        )
    stripped = text.strip()
    if not stripped:
        raise InputError(
            f"{name} is empty; describe the person, e.g. 'a woman in a red coat with a black backpack'"
        )
    if not any(unicodedata.category(ch)[0] in "LN" for ch in stripped):
        raise InputError(
            f"{name} {stripped!r} has no letters or digits, only punctuation or symbols; describe the person "
            "in words"
        )
    return stripped


def combine_sentence_embeddings(embeddings: np.ndarray) -> np.ndarray:
    """One query from several sentences of one person.

    Args:
        embeddings: [S, E] float32 unit sentence embeddings, S >= 1.

    Returns:
        [1, E] float32: the normalised mean, so every sentence weighs the same.
    """
    embeddings = np.asarray(embeddings, np.float32)
    if embeddings.ndim != 2 or not len(embeddings):
        raise InputError(
            f"sentence embeddings have shape {list(embeddings.shape)}; expected [S, E] with S >= 1"
        )
    return l2_normalize(embeddings.mean(axis=0, keepdims=True))


def integer_crop_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Round boxes outwards to whole pixels inside the frame (the rule of both crop paths).

    ``x1 = floor(clip(x1, 0, W - 1))``, ``y1 = floor(clip(y1, 0, H - 1))``,
    ``x2 = max(ceil(clip(x2, 0, W)), x1 + 1)``, ``y2 = max(ceil(clip(y2, 0, H)), y1 + 1)``.

    Args:
        boxes: [M, 4] float xyxy pixels, finite.
        height: Frame height.
        width: Frame width.

    Returns:
        [M, 4] int32 ``x1, y1, x2, y2`` with ``0 <= x1 < x2 <= W`` and ``0 <= y1 < y2 <= H``.
    """
    out = np.empty((len(boxes), 4), np.int32)
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, np.float64).reshape(-1, 4)):
        left = math.floor(min(max(x1, 0.0), width - 1))
        top = math.floor(min(max(y1, 0.0), height - 1))
        out[i] = (
            left,
            top,
            max(math.ceil(min(max(x2, 0.0), width)), left + 1),
            max(math.ceil(min(max(y2, 0.0), height)), top + 1),
        )
    return out


def crop_person_boxes(image_bgr: np.ndarray, boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Cut each box out of a frame and resize it to the crop encoder's input.

    The box is rounded outwards to whole pixels inside the frame
    (:func:`integer_crop_boxes`, the rule shared with the trainer and the GPU path); the
    pixels ``[y1:y2, x1:x2]`` are resized with OpenCV's ``INTER_LINEAR`` to ``size`` and
    turned into RGB in ``[0, 1]``.

    Args:
        image_bgr: [H, W, 3] uint8 BGR frame.
        boxes: [M, 4] float xyxy in the frame's pixels (M may be 0).
        size: ``(height, width)`` of the crops.

    Returns:
        [M, 3, height, width] float32 RGB in ``[0, 1]``.

    Raises:
        InputError: Not an 8-bit image, or boxes that are not [M, 4] finite numbers.
    """
    import cv2

    image_bgr = as_bgr_image(image_bgr, "image_bgr")
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4) if np.size(boxes) else np.zeros((0, 4))
    if not np.isfinite(boxes).all():
        raise InputError("boxes are not finite; expected [M, 4] pixel coordinates x1, y1, x2, y2")
    crop_h, crop_w = int(size[0]), int(size[1])
    out = np.empty((len(boxes), 3, crop_h, crop_w), np.float32)
    for i, (left, top, right, bottom) in enumerate(integer_crop_boxes(boxes, *image_bgr.shape[:2])):
        crop = cv2.resize(image_bgr[top:bottom, left:right], (crop_w, crop_h), interpolation=cv2.INTER_LINEAR)
        out[i] = crop[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) / 255.0
    return out


@dataclass(frozen=True)
class TokenizedSentences:
    """Token ids of a batch of sentences, padded to the longest.

    Attributes:
        input_ids: [S, L] int64.
        attention_mask: [S, L] int64, 1 on real tokens.
        truncated: [S] bool, True where the sentence was cut at ``max_length`` tokens.
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    truncated: np.ndarray


class SentenceTokenizer:
    """The bundle's tokenizer: ``tokenizer.json`` read by the ``tokenizers`` package.

    Args:
        tokenizer_file: The bundle's ``tokenizer.json``.
        spec: The manifest's ``tokenizer`` section (length, padding, pad id).

    Raises:
        BundleError: ``tokenizers`` is missing or the file cannot be read.
    """

    def __init__(self, tokenizer_file: str | Path, spec: TokenizerSpec) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise BundleError(
                'sentence search needs the `tokenizers` package: pip install "personsearch[runtime]" '
                "(or pip install tokenizers)"
            ) from None
        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_file))
        except Exception as exc:  # noqa: BLE001 - the Rust loader raises a bare Exception on bad JSON
            raise BundleError(
                f"{tokenizer_file} cannot be read as a tokenizer.json ({exc}); re-export the bundle"
            ) from None
        # The file's own padding (MiniLM pads to 128) is replaced: we pad to the longest
        # sentence ourselves; truncation counts the special tokens, as in training.
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=spec.max_length)
        self._tokenizer = tokenizer
        self.spec = spec

    def __call__(self, sentences: Sequence[str]) -> TokenizedSentences:
        """Tokenise checked sentences (see :func:`check_sentence`).

        Args:
            sentences: S >= 1 sentences.

        Returns:
            Ids and mask padded to the longest sentence (or to ``max_length`` when the
            manifest says ``padding: max_length``).
        """
        encodings = self._tokenizer.encode_batch(list(sentences), add_special_tokens=True)
        longest = max(len(e.ids) for e in encodings)
        length = self.spec.max_length if self.spec.padding == "max_length" else longest
        ids = np.full((len(encodings), length), self.spec.pad_token_id, np.int64)
        mask = np.zeros((len(encodings), length), np.int64)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        truncated = np.array([bool(e.overflowing) for e in encodings], bool)
        return TokenizedSentences(input_ids=ids, attention_mask=mask, truncated=truncated)


def _batch_cap(model: Any) -> int:
    """The largest batch a graph declares (its engine profile's max)."""
    batch = model.inputs[0].shape[0]
    return model.dim(batch).max if isinstance(batch, str) else int(batch)


class SentenceEncoder:
    """The bundle's text and crop encoders: sentences and person crops to one embedding space.

    Args:
        bundle: A bundle with the text graphs (``manifest.has_text``).
        stage: ``stage(role) -> backend`` (the searcher's backend factory), called once
            per graph when first needed.

    Raises:
        BundleError: The bundle has no text graphs.
    """

    def __init__(self, bundle: Bundle, stage: Callable[[str], Any]) -> None:
        manifest = bundle.manifest
        if manifest.text is None or manifest.tokenizer is None:
            raise BundleError(
                f"bundle {bundle.root} has no text encoder; export one with 'personsearch export "
                "--checkpoint DET_RUN --text-checkpoint T2I_RUN --out BUNDLE' to search by sentence"
            )
        self.bundle = bundle
        self.spec = manifest.text
        self.tokenizer = SentenceTokenizer(bundle.root / manifest.tokenizer.file, manifest.tokenizer)
        self._stage = stage
        self._stages: dict[str, Any] = {}

    @property
    def embedding_dim(self) -> int:
        """E, the width of sentence and crop embeddings."""
        return self.spec.embedding_dim

    def _run(self, role: str, feed: dict[str, np.ndarray]) -> np.ndarray:
        if role not in self._stages:
            self._stages[role] = self._stage(role)
        model = self.bundle.manifest.models[role]
        value = self._stages[role].run(feed)[model.outputs[0].name]
        if not isinstance(value, np.ndarray) and hasattr(value, "get"):
            value = value.get()  # a device array (CuPy): embeddings are small, bring them home
        return np.asarray(value, np.float32)

    def encode(self, sentences: Sequence[str] | str, *, name: str = "text") -> np.ndarray:
        """Embed sentences.

        Args:
            sentences: One sentence or a list of them (each checked by :func:`check_sentence`).
            name: The argument's name, for messages.

        Returns:
            [S, E] float32 unit embeddings, one per sentence.

        Raises:
            InputError: No sentence, or a bad one (see :func:`check_sentence`).
        """
        if isinstance(sentences, (str, bytes, bytearray)):
            sentences = [sentences]
        sentences = list(sentences)
        if not sentences:
            raise InputError(f"{name} holds no sentence; give at least one description of the person")
        checked = [
            check_sentence(s, name if len(sentences) == 1 else f"{name}[{i}]")
            for i, s in enumerate(sentences)
        ]
        model = self.bundle.manifest.models["text_encoder"]
        cap = _batch_cap(model)
        parts = []
        for start in range(0, len(checked), cap):
            chunk = checked[start : start + cap]
            tokens = self.tokenizer(chunk)
            for sentence, cut in zip(chunk, tokens.truncated, strict=True):
                if cut:
                    warnings.warn(
                        f"the sentence {sentence[:60]!r}{'...' if len(sentence) > 60 else ''} is longer "
                        f"than the text encoder's {self.tokenizer.spec.max_length} tokens; only its "
                        "beginning is used",
                        SentenceTruncatedWarning,
                        stacklevel=2,
                    )
            feed = {
                model.inputs[0].name: tokens.input_ids,
                model.inputs[1].name: tokens.attention_mask,
            }
            parts.append(self._run("text_encoder", feed))
        return l2_normalize(np.concatenate(parts))

    def embed_crops(self, crops: Any) -> np.ndarray:
        """Embed prepared crops.

        Args:
            crops: [M, 3, Hc, Wc] float32 RGB in [0, 1], a numpy array or (GPU path) a CuPy one.

        Returns:
            [M, E] float32 unit embeddings, on the host.
        """
        model = self.bundle.manifest.models["crop_encoder"]
        if not len(crops):
            return np.zeros((0, self.embedding_dim), np.float32)
        cap = _batch_cap(model)
        dtype = model.inputs[0].dtype
        parts = [
            self._run("crop_encoder", {model.inputs[0].name: crops[start : start + cap].astype(dtype)})
            for start in range(0, len(crops), cap)
        ]
        return l2_normalize(np.concatenate(parts))

    def embed_boxes(self, image_bgr: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Crop ``boxes`` ([M, 4] float xyxy pixels) from a BGR frame and embed them: [M, E] float32."""
        return self.embed_crops(crop_person_boxes(image_bgr, boxes, self.spec.crop_size))
