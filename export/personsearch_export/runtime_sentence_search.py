"""Sentence search (TBPS) predictions made entirely by the torch-free runtime.

A bundle exported with ``--text-checkpoint`` carries a dual encoder's two graphs beside
the detector: ``crop_encoder`` embeds every detected person (the runtime fills
``Detections.text_embeddings``) and ``text_encoder`` embeds sentences
(``PersonSearcher.encode_sentences``). :class:`RuntimeSentencePredictor` puts a
:class:`~personsearch_runtime.searcher.PersonSearcher` behind the trainer's
:class:`~personsearch_train.evaluation.sentence_search.SentenceSearchPredictor` protocol,
so :func:`~personsearch_train.evaluation.sentence_search.predict_sentence_search` (the loop
the PyTorch checkpoints run too) makes the predictions and the trainer's protocols score
them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from personsearch_train.data.images import read_bgr
from personsearch_train.data.structures import PersonSearchSplit
from personsearch_train.data.tbps import SentenceQueries
from personsearch_train.evaluation.predictions import SearchPredictions
from personsearch_train.evaluation.sentence_search import predict_sentence_search

from personsearch_export.errors import ExportError

if TYPE_CHECKING:
    from personsearch_runtime.searcher import PersonSearcher

__all__ = ["RuntimeSentencePredictor", "predict_sentence_search_with_runtime"]


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, np.float32(1e-12))


class RuntimeSentencePredictor:
    """A ``PersonSearcher`` over a bundle with text graphs, as a ``SentenceSearchPredictor``.

    Args:
        searcher: The runtime searcher; its bundle must have the text graphs.

    Raises:
        ExportError: The bundle has no text graphs (it was exported without
            ``--text-checkpoint``).
    """

    def __init__(self, searcher: PersonSearcher) -> None:
        manifest = searcher.bundle.manifest
        if not manifest.has_text:
            raise ExportError(
                f"bundle {searcher.bundle.root} has no text encoder, so it cannot search by sentence; export "
                "it with 'personsearch export --checkpoint DET_RUN --text-checkpoint T2I_RUN --out BUNDLE'"
            )
        self.searcher = searcher
        # A bundle whose graphs do not normalise is normalised here: the protocols rank by
        # cosine similarity and the predictions file holds unit rows.
        self._normalize = not bool(manifest.text.normalized)

    @property
    def batch_size(self) -> int:
        """Gallery images per detector call (the searcher's)."""
        return int(self.searcher.batch_size)

    @property
    def embedding_dim(self) -> int:
        """E, the width of the bundle's text space."""
        return int(self.searcher.bundle.manifest.text.embedding_dim)

    def load_image(self, path: Path) -> np.ndarray:
        """Decode ``path`` as ``[H, W, 3]`` uint8 BGR."""
        return read_bgr(path)

    def detect(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Detect people and take their crop-encoder embeddings.

        Args:
            images: ``B`` ``[H, W, 3]`` uint8 BGR images.

        Returns:
            ``B`` tuples ``(boxes [N, 4], scores [N], crop_embeddings [N, E])``, float32.

        Raises:
            ExportError: The runtime returned detections without text embeddings.
        """
        results = []
        for found in self.searcher.detect(images):
            crops: Any = found.text_embeddings
            if crops is None:
                raise ExportError(
                    f"the runtime returned no text embeddings for {found.source} although bundle "
                    f"{self.searcher.bundle.root} has text graphs; check the runtime version"
                )
            crops = np.asarray(crops, dtype=np.float32).reshape(len(found), self.embedding_dim)
            results.append(
                (
                    np.asarray(found.boxes, dtype=np.float32),
                    np.asarray(found.scores, dtype=np.float32),
                    _unit_rows(crops) if self._normalize else crops,
                )
            )
        return results

    def encode_sentences(self, sentences: list[str]) -> np.ndarray:
        """``[S, E]`` float32 unit-length embeddings of ``sentences`` by the bundle's text encoder."""
        rows = np.asarray(self.searcher.encode_sentences(list(sentences)), dtype=np.float32)
        return _unit_rows(rows) if self._normalize else rows


def predict_sentence_search_with_runtime(
    searcher: PersonSearcher,
    split: PersonSearchSplit,
    queries: SentenceQueries,
    *,
    progress: bool = True,
) -> SearchPredictions:
    """Detect and crop-embed every gallery image and embed every sentence with the runtime.

    Args:
        searcher: A ``PersonSearcher`` over a bundle with text graphs; its ``batch_size``
            is the number of gallery images per detector call.
        split: The person-search test split.
        queries: Its sentence queries.
        progress: Show tqdm progress bars.

    Returns:
        Predictions for the split with one query per sentence, ready to score or save.

    Raises:
        ExportError: The bundle has no text graphs.
    """
    return predict_sentence_search(
        RuntimeSentencePredictor(searcher),
        split,
        queries,
        progress=progress,
        source=f"runtime sentence-search predictions on {split.dataset} {split.split}",
    )
