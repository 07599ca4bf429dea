"""Predict a text-based person search (TBPS) test split: sentences against detected people.

:func:`predict_sentence_search` drives any :class:`SentenceSearchPredictor` (something
that can read a scene image, detect people and embed each detection with a text model's
crop encoder, and embed sentences in the same space) over a test split and returns
:class:`~personsearch_train.evaluation.predictions.SearchPredictions` for the split with
one query per sentence (:func:`~personsearch_train.data.tbps.sentence_query_split`), so
the unchanged CUHK-SYSU and PRW protocols score it:

* gallery images go to ``detect`` in groups of ``batch_size`` consecutive images of
  ``split.images`` (as :func:`~personsearch_train.evaluation.split_prediction.predict_search_split`
  does: the grouping can change a detector's output);
* the gallery embeddings are the cross-modal crop embeddings of the detections, not the
  detector's re-id embeddings;
* query row ``s`` is the embedding of sentence ``s``.

:class:`CheckpointSentencePredictor` is the PyTorch implementation: a person-search
checkpoint's detector (run by the same adapter as ``personsearch eval --checkpoint``)
plus a dual encoder of a text-retrieval checkpoint (methods ``irra``, ``cfam``). The
exporter implements the protocol over the torch-free runtime. The loop itself needs only
numpy (and tqdm); torch is imported when a :class:`CheckpointSentencePredictor` is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from tqdm import tqdm

from personsearch_train.data.images import read_bgr
from personsearch_train.data.person_crops import crop_person_boxes
from personsearch_train.data.structures import PersonSearchSplit
from personsearch_train.data.tbps import SentenceQueries, sentence_query_split
from personsearch_train.evaluation.predictions import SearchPredictions

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "CheckpointSentencePredictor",
    "SentenceSearchPredictor",
    "predict_sentence_search",
]

#: Sentences per ``encode_sentences`` call made by :func:`predict_sentence_search`.
SENTENCE_CHUNK = 256

#: What ``detect`` returns per image: ``(boxes [N, 4], scores [N], crop_embeddings [N, E])``.
DetectedPeople = tuple[np.ndarray, np.ndarray, np.ndarray]


class SentenceSearchPredictor(Protocol):
    """A detector plus a text model's two encoders, as :func:`predict_sentence_search` drives them."""

    @property
    def batch_size(self) -> int:
        """Gallery images per ``detect`` call."""

    @property
    def embedding_dim(self) -> int | None:
        """Width ``E`` of the crop and sentence embeddings, or None if only the outputs tell."""

    def load_image(self, path: Path) -> np.ndarray:
        """Read the image at ``path`` as ``[H, W, 3]`` uint8 BGR."""

    def detect(self, images: list[np.ndarray]) -> Sequence[DetectedPeople]:
        """Detect people in ``B`` images (one batch) and embed each with the crop encoder.

        Args:
            images: ``B`` images from :meth:`load_image`.

        Returns:
            ``B`` tuples ``(boxes [N, 4] float32 xyxy original pixels, scores [N] float32,
            crop_embeddings [N, E] float32 L2-normalised)``.
        """

    def encode_sentences(self, sentences: list[str]) -> np.ndarray:
        """Embed sentences with the text encoder.

        Args:
            sentences: ``S`` sentences.

        Returns:
            ``[S, E]`` float32, L2-normalised, in the crop embeddings' space.
        """


def _chunks(count: int, size: int) -> list[range]:
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


def _check_rows(what: str, array: np.ndarray, rows: int, width: int | None) -> np.ndarray:
    array = np.asarray(array, dtype=np.float32)
    if rows == 0 and array.size == 0:
        # An image without detections may come back as (0,), (0, 0) or (0, E).
        return np.zeros((0, width or 0), dtype=np.float32)
    if array.ndim != 2 or array.shape[0] != rows or (width is not None and array.shape[1] != width):
        expected = f"({rows}, {width if width is not None else 'E'})"
        raise ValueError(f"the predictor's {what} returned shape {array.shape}, expected {expected}")
    return array


def predict_sentence_search(
    predictor: SentenceSearchPredictor,
    split: PersonSearchSplit,
    queries: SentenceQueries,
    *,
    progress: bool = True,
    source: str | None = None,
) -> SearchPredictions:
    """Detect and crop-embed every gallery image of ``split`` and embed every sentence.

    Args:
        predictor: The models, behind the :class:`SentenceSearchPredictor` protocol.
        split: The person-search test split (gallery = ``split.images`` in order).
        queries: Its sentence queries (:func:`~personsearch_train.data.tbps.load_sentence_queries`).
        progress: Show tqdm progress bars.
        source: Where the predictions came from, for error messages.

    Returns:
        Predictions for ``sentence_query_split(split, queries)``: ``query_embeddings``
        row ``s`` is sentence ``s``; gallery embeddings are crop embeddings.

    Raises:
        ValueError: No sentences, a ``batch_size`` below 1, or a predictor returning the
            wrong number of results, rows or widths.
    """
    if queries.num_sentences == 0:
        raise ValueError(f"{queries.source}: no sentences to search for")
    # Checked against the split here so a mismatch fails before any image is read.
    sentence_query_split(split, queries)
    batch_size = int(predictor.batch_size)
    if batch_size < 1:
        raise ValueError(f"the predictor's batch_size must be >= 1, got {batch_size}")
    width = predictor.embedding_dim
    rows = []
    for chunk in tqdm(
        _chunks(queries.num_sentences, SENTENCE_CHUNK), desc="sentences", disable=not progress, leave=False
    ):
        encoded = predictor.encode_sentences([queries.sentences[i] for i in chunk])
        encoded = _check_rows("encode_sentences", encoded, len(chunk), width)
        width = int(encoded.shape[1])
        rows.append(encoded)
    sentence_embeddings = np.concatenate(rows)

    names: list[str] = []
    boxes: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    embeddings: list[np.ndarray] = []
    groups = [split.images[i : i + batch_size] for i in range(0, len(split.images), batch_size)]
    for group in tqdm(groups, desc="gallery", disable=not progress, leave=False):
        found = predictor.detect([predictor.load_image(record.path) for record in group])
        if len(found) != len(group):
            raise ValueError(f"the predictor's detect returned {len(found)} results for {len(group)} images")
        for record, (det_boxes, det_scores, det_embeddings) in zip(group, found, strict=True):
            det_scores = np.asarray(det_scores, dtype=np.float32).reshape(-1)
            count = len(det_scores)
            names.append(record.name)
            boxes.append(_check_rows("detect boxes", det_boxes, count, 4))
            scores.append(det_scores)
            embeddings.append(_check_rows("detect crop embeddings", det_embeddings, count, width))
    return SearchPredictions.from_per_image(
        names,
        boxes,
        scores,
        embeddings,
        sentence_embeddings,
        source=source or f"sentence-search predictions on {split.dataset} {split.split}",
    )


class CheckpointSentencePredictor:
    """A person-search model's detections, embedded by a dual encoder's crop and text towers.

    Both models are put in eval mode; gradients are off around every call.

    Args:
        detector: A person-search model with ``predict`` and ``embed_boxes`` (SeqNet family).
        text_model: A dual encoder with ``tokenizer``, ``image_size``, ``encode_images``
            and ``encode_texts`` (:class:`~personsearch_train.models.dual_encoder.DualEncoder`).
        device: Where both models run (they are moved there).
        batch_size: Gallery images per detector call.
        encoder_batch_size: Crops, and sentences, per encoder call.

    Raises:
        ValueError: A batch size below 1.
    """

    def __init__(
        self,
        detector: nn.Module,
        text_model: nn.Module,
        *,
        device: torch.device | str = "cpu",
        batch_size: int = 1,
        encoder_batch_size: int = 64,
    ) -> None:
        import torch

        from personsearch_train.engine.inference import TorchSplitPredictor

        if batch_size < 1 or encoder_batch_size < 1:
            raise ValueError(
                f"batch sizes must be >= 1, got batch_size={batch_size}, "
                f"encoder_batch_size={encoder_batch_size}"
            )
        self.device = torch.device(device)
        self.detector = detector.to(self.device).eval()
        self.text_model = text_model.to(self.device).eval()
        self.encoder_batch_size = int(encoder_batch_size)
        self._batch_size = int(batch_size)
        # Detection through the adapter `personsearch eval --checkpoint` uses, so both
        # evaluations see the same boxes and scores for the same batches.
        self._detections = TorchSplitPredictor(self.detector, self.device)
        self.crop_size = tuple(int(v) for v in text_model.image_size)

    @property
    def batch_size(self) -> int:
        """Gallery images per detector call."""
        return self._batch_size

    @property
    def embedding_dim(self) -> int | None:
        """The dual encoder's embedding width if it declares one."""
        dim = getattr(self.text_model, "embedding_dim", None)
        return None if dim is None else int(dim)

    def load_image(self, path: Path) -> np.ndarray:
        """Decode ``path`` as ``[H, W, 3]`` uint8 BGR."""
        return read_bgr(path)

    def _encode_crops(self, crops: np.ndarray) -> np.ndarray:
        import torch

        out = []
        with torch.no_grad():
            for chunk in _chunks(len(crops), self.encoder_batch_size):
                pixels = torch.from_numpy(crops[chunk.start : chunk.stop]).to(self.device)
                out.append(self.text_model.encode_images(pixels).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.embedding_dim or 0), dtype=np.float32)

    def detect(self, images: list[np.ndarray]) -> list[DetectedPeople]:
        """Detect with the person-search model, then embed every detection's crop.

        Args:
            images: ``B`` ``[H, W, 3]`` uint8 BGR images.

        Returns:
            ``B`` tuples ``(boxes [N, 4], scores [N], crop_embeddings [N, E])``, float32.
        """
        import torch

        # The [3, H, W] RGB float tensor `read_image` makes from the same decoded pixels.
        tensors = [
            torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1])).permute(2, 0, 1).float().div_(255.0)
            for image in images
        ]
        with torch.no_grad():
            found = self._detections.detect([t.to(self.device) for t in tensors])
        results: list[DetectedPeople] = []
        for image, det in zip(images, found, strict=True):
            crops = crop_person_boxes(image, det.boxes, self.crop_size)
            results.append((det.boxes, det.scores, self._encode_crops(crops)))
        return results

    def encode_sentences(self, sentences: list[str]) -> np.ndarray:
        """Tokenise with the dual encoder's tokenizer and embed in batches.

        Args:
            sentences: ``S`` sentences.

        Returns:
            ``[S, E]`` float32, L2-normalised.
        """
        import torch

        out: list[np.ndarray] = []
        with torch.no_grad():
            for chunk in _chunks(len(sentences), self.encoder_batch_size):
                tokens: Any = self.text_model.tokenizer([sentences[i] for i in chunk])
                ids = torch.as_tensor(np.asarray(tokens.input_ids), dtype=torch.int64).to(self.device)
                mask = torch.as_tensor(np.asarray(tokens.attention_mask), dtype=torch.int64).to(self.device)
                out.append(self.text_model.encode_texts(ids, mask).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.embedding_dim or 0), dtype=np.float32)
