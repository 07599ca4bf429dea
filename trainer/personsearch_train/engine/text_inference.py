"""Run a dual-encoder model over a text-to-image person split: one embedding per caption and per image.

The model is duck-typed (the text-retrieval models implement it; tests use small fakes):

* ``model.tokenizer(texts) -> tokens`` with ``tokens.input_ids`` and
  ``tokens.attention_mask``, each ``[B, L]`` int64;
* ``model.image_size -> (height, width)``, the input size of the image encoder;
* ``model.encode_images(images [B, 3, H, W] float32 RGB in [0, 1]) -> [B, D]``;
* ``model.encode_texts(input_ids [B, L] int64, attention_mask [B, L] int64) -> [B, D]``,

both encoders returning L2-normalised rows. Gallery images are read with
:func:`~personsearch_train.data.person_crops.read_person_crop`, the reader training
uses, so evaluation sees the pixels training saw. The result,
:class:`TextRetrievalEmbeddings`, is what
:class:`~personsearch_train.evaluation.text_evaluator.TextRetrievalEvaluator` scores.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from personsearch_train.atomic_files import atomic_replace
from personsearch_train.data.person_crops import read_person_crop
from personsearch_train.data.text_person import TextPersonSplit
from personsearch_train.errors import PredictionsFormatError

__all__ = [
    "TEXT_MODEL_ATTRIBUTES",
    "TextRetrievalEmbeddings",
    "embed_text_split",
    "missing_text_model_attributes",
]

#: What a model needs for :func:`embed_text_split`.
TEXT_MODEL_ATTRIBUTES = ("tokenizer", "image_size", "encode_images", "encode_texts")

_ARRAY_KEYS = ("text_embeddings", "text_pids", "image_embeddings", "image_pids")
_SOURCE_KEYS = ("caption_sources", "image_sources")


def _sources(values: Sequence[str], count: int, name: str) -> tuple[str, ...]:
    # An empty sequence means "no sources" (every dataset but UFine3C): one "" per row.
    values = tuple(str(v) for v in values)
    if not values:
        return ("",) * count
    if len(values) != count:
        raise ValueError(f"{name} has {len(values)} entries for {count} rows")
    return values


@dataclass(frozen=True, eq=False)
class TextRetrievalEmbeddings:
    """Embeddings of every caption (queries) and every image (gallery) of a split.

    Attributes:
        text_embeddings: ``[M, D]`` float32, one L2-normalised row per caption.
        text_pids: ``[M]`` int64 identity of each caption.
        image_embeddings: ``[N, D]`` float32, one L2-normalised row per gallery image.
        image_pids: ``[N]`` int64 identity of each image.
        caption_sources: ``M`` strings, UFine3C's ``source`` of each caption's image
            (``""`` when the dataset has none). Given empty, filled with ``""``.
        image_sources: ``N`` strings, the same per image.

    Raises:
        ValueError: Arrays of inconsistent lengths or widths.
    """

    text_embeddings: np.ndarray
    text_pids: np.ndarray
    image_embeddings: np.ndarray
    image_pids: np.ndarray
    caption_sources: tuple[str, ...] = ()
    image_sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("text_embeddings", "image_embeddings"):
            value = np.asarray(getattr(self, name), dtype=np.float32)
            if value.ndim != 2:
                raise ValueError(f"{name} must be [rows, D], got shape {value.shape}")
            object.__setattr__(self, name, value)
        for name in ("text_pids", "image_pids"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.int64).reshape(-1))
        texts, images = self.text_embeddings, self.image_embeddings
        if texts.shape[1] != images.shape[1]:
            raise ValueError(
                f"text embeddings are {texts.shape[1]}-d but image embeddings {images.shape[1]}-d"
            )
        if len(self.text_pids) != len(texts):
            raise ValueError(f"{len(texts)} text embeddings but {len(self.text_pids)} text pids")
        if len(self.image_pids) != len(images):
            raise ValueError(f"{len(images)} image embeddings but {len(self.image_pids)} image pids")
        object.__setattr__(
            self, "caption_sources", _sources(self.caption_sources, len(texts), "caption_sources")
        )
        object.__setattr__(self, "image_sources", _sources(self.image_sources, len(images), "image_sources"))

    @property
    def num_texts(self) -> int:
        """Number of captions ``M``."""
        return int(len(self.text_pids))

    @property
    def num_images(self) -> int:
        """Number of gallery images ``N``."""
        return int(len(self.image_pids))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the embeddings as an ``.npz`` atomically (temporary file, fsync, rename).

        Args:
            path: Destination file; its folder is created if needed.

        Returns:
            The path written.
        """
        path = Path(path)
        arrays = {key: getattr(self, key) for key in _ARRAY_KEYS}
        # Unicode arrays, not object arrays, so loading never needs pickle. np.array of an
        # empty tuple would be float64; give it the string dtype explicitly.
        arrays.update({key: np.asarray(getattr(self, key), dtype=np.str_) for key in _SOURCE_KEYS})
        # Through a handle: given a name, np.savez would append ".npz" to the temporary one.
        with atomic_replace(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, allow_pickle=False, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TextRetrievalEmbeddings:
        """Read embeddings written by :meth:`save`.

        Args:
            path: The ``.npz`` file.

        Returns:
            The embeddings.

        Raises:
            PredictionsFormatError: Missing or unreadable file, a missing key, or
                inconsistent arrays (the message names the file).
        """
        path = Path(path)
        if not path.is_file():
            raise PredictionsFormatError(f"{path}: text-retrieval embeddings file not found")
        try:
            with np.load(path, allow_pickle=False) as archive:
                missing = [k for k in (*_ARRAY_KEYS, *_SOURCE_KEYS) if k not in archive.files]
                if missing:
                    raise PredictionsFormatError(
                        f"{path}: key {missing[0]!r} is missing; not a text-retrieval embeddings file"
                    )
                arrays = {k: archive[k] for k in _ARRAY_KEYS}
                sources = {k: tuple(str(s) for s in archive[k].reshape(-1)) for k in _SOURCE_KEYS}
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise PredictionsFormatError(f"{path}: not a readable .npz archive ({exc})") from None
        try:
            return cls(**arrays, **sources)
        except ValueError as exc:
            raise PredictionsFormatError(f"{path}: {exc}") from None


def missing_text_model_attributes(model: object) -> list[str]:
    """The attributes of the text-retrieval model interface that ``model`` lacks.

    Args:
        model: Any object (a checkpoint's model).

    Returns:
        Names from :data:`TEXT_MODEL_ATTRIBUTES` it does not have; empty for a text model.
    """
    return [name for name in TEXT_MODEL_ATTRIBUTES if not hasattr(model, name)]


def _rows(output: torch.Tensor, count: int, what: str) -> np.ndarray:
    rows = output.detach().float().cpu().numpy()
    if rows.ndim != 2 or rows.shape[0] != count:
        raise ValueError(
            f"{what} returned shape {tuple(rows.shape)} for a batch of {count}; expected [{count}, D]"
        )
    return rows


def _batches(count: int, batch_size: int) -> list[range]:
    return [range(start, min(start + batch_size, count)) for start in range(0, count, batch_size)]


def _embed_images(
    model: nn.Module, paths: Sequence[Path], device: torch.device, batch_size: int, progress: bool
) -> np.ndarray:
    if not paths:
        raise ValueError("the split has no images to embed")
    size = tuple(int(v) for v in model.image_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"model.image_size must be (height, width), got {model.image_size!r}")
    chunks = []
    for batch in tqdm(_batches(len(paths), batch_size), desc="images", disable=not progress):
        pixels = np.stack([read_person_crop(paths[i], size) for i in batch])
        chunks.append(
            _rows(model.encode_images(torch.from_numpy(pixels).to(device)), len(batch), "encode_images")
        )
    return np.concatenate(chunks).astype(np.float32, copy=False)


def _embed_texts(
    model: nn.Module, captions: Sequence[str], device: torch.device, batch_size: int, progress: bool
) -> list[np.ndarray]:
    chunks = []
    for batch in tqdm(_batches(len(captions), batch_size), desc="captions", disable=not progress):
        tokens = model.tokenizer([captions[i] for i in batch])
        ids = torch.as_tensor(np.asarray(tokens.input_ids), dtype=torch.int64).to(device)
        mask = torch.as_tensor(np.asarray(tokens.attention_mask), dtype=torch.int64).to(device)
        chunks.append(_rows(model.encode_texts(ids, mask), len(batch), "encode_texts"))
    return chunks


def embed_text_split(
    model: nn.Module,
    split: TextPersonSplit,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    progress: bool = False,
) -> TextRetrievalEmbeddings:
    """Embed every image and every caption of a text-person split.

    The model runs in eval mode under ``torch.inference_mode`` and is put back into
    the mode it was in afterwards. It must already be on ``device`` (as
    :func:`~personsearch_train.engine.inference.predict_split` expects too); only the
    inputs are moved.

    Args:
        model: A model with the interface in the module docstring
            (:data:`TEXT_MODEL_ATTRIBUTES`).
        split: The split (usually ``test``); gallery = ``split.image_paths`` in order,
            queries = ``split.captions`` in order.
        device: Where the inputs go.
        batch_size: Images, and captions, per encoder call.
        progress: Show tqdm progress bars.

    Returns:
        The embeddings, rows in split order; sources from ``split.image_sources``.

    Raises:
        ValueError: ``batch_size`` below 1, a model lacking the interface, or an encoder
            returning the wrong number of rows or mismatched widths.
        DatasetFormatError: An image that is missing or cannot be decoded.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    missing = missing_text_model_attributes(model)
    if missing:
        raise ValueError(
            f"{type(model).__name__} is not a text-retrieval model: it has no {', '.join(missing)}"
        )
    device = torch.device(device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            images = _embed_images(model, split.image_paths, device, batch_size, progress)
            text_chunks = _embed_texts(model, split.captions, device, batch_size, progress)
    finally:
        model.train(was_training)
    # A split may have images without captions; keep the [0, D] shape then.
    texts = np.concatenate(text_chunks) if text_chunks else np.zeros((0, images.shape[1]), np.float32)
    image_sources = _sources(split.image_sources, len(split.image_paths), "split.image_sources")
    return TextRetrievalEmbeddings(
        text_embeddings=texts,
        text_pids=split.caption_pids,
        image_embeddings=images,
        image_pids=split.image_pids,
        caption_sources=tuple(image_sources[i] for i in split.caption_image),
        image_sources=image_sources,
    )
