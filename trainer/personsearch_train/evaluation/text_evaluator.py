"""Score text-to-image (and image-to-text) person retrieval from a split's embeddings.

:class:`TextRetrievalEvaluator` follows the ``reset() / process() / evaluate()``
protocol of the person-search evaluators and takes
:class:`~personsearch_train.engine.text_inference.TextRetrievalEmbeddings`. The metric
arithmetic is the pure functions of :mod:`personsearch_train.evaluation.text_retrieval`
(methods.md 5.3 and 5.5): the evaluator only gathers the rows, forms the similarity
``text @ image.T`` block by block, and averages the per-query values.

Two directions are reported:

* text-to-image (``R1, R5, R10, mAP, mINP, mSD``): every caption queries the gallery of
  images (IRRA's protocol; mSD is UFineBench's, rank-ordered definition);
* image-to-text (``i2t_R1 ... i2t_mINP``): every image queries the captions, i.e. the
  transposed similarity matrix with the pids swapped (no mSD: UFineBench defines it
  for text queries only).

UFine3C is scored per ``source``: with ``group_by_source=True`` each source's captions
query that source's images only, and the keys are prefixed ``"<source>/"``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from personsearch_train.evaluation.text_retrieval import evaluate_text_to_image, mean_similarity_distribution

if TYPE_CHECKING:
    # Only for annotations: the engine package imports torch, and this package stays
    # torch-free (the exporter and runtime score with it).
    from personsearch_train.engine.text_inference import TextRetrievalEmbeddings

__all__ = ["OVERALL", "TextRetrievalEvaluator"]

#: Key of :attr:`TextRetrievalEvaluator.curves` when the whole set is scored as one.
OVERALL = "all"

_FIELDS = (
    "text_embeddings",
    "text_pids",
    "image_embeddings",
    "image_pids",
    "caption_sources",
    "image_sources",
)


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    # The encoders promise unit rows, but half-precision inference leaves norms a little
    # off 1, and mSD maps the similarity's [-1, 1] range onto [0, 1]: normalise once here.
    rows = rows.astype(np.float64)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def _chunks(count: int, size: int) -> Iterator[slice]:
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


class TextRetrievalEvaluator:
    """Text-to-image and image-to-text retrieval metrics of processed embeddings.

    Args:
        group_by_source: Score each UFine3C ``source`` on its own (captions and images
            of that source only) and report its keys prefixed ``"<source>/"``; the
            whole set is then not scored as one. Ignored when no source is recorded.
        max_rank: Length of the CMC curves kept in :attr:`curves` (at least 10).
        chunk_size: Queries per similarity block. Memory grows with
            ``chunk_size x gallery`` instead of ``queries x gallery`` (ICFG-PEDES's
            test split has ~20k captions and ~20k images); the metrics are per-query
            averages, so the blocks give exactly the full-matrix values.

    Attributes:
        curves: After :meth:`evaluate`, the text-to-image CMC curve of each group,
            ``[max_rank]`` float64 in [0, 1], keyed by source name (or :data:`OVERALL`).
    """

    def __init__(self, *, group_by_source: bool = False, max_rank: int = 10, chunk_size: int = 1024) -> None:
        if max_rank < 10:
            raise ValueError(f"max_rank must be at least 10 to report R@10, got {max_rank}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.group_by_source = group_by_source
        self.max_rank = max_rank
        self.chunk_size = chunk_size
        self.curves: dict[str, np.ndarray] = {}
        self.reset()

    def reset(self) -> None:
        """Forget everything processed so far (the curves of the last evaluation stay)."""
        self._fields: dict[str, list] = {name: [] for name in _FIELDS}

    def process(self, outputs: TextRetrievalEmbeddings) -> None:
        """Add captions and images; several calls accumulate both sides.

        Args:
            outputs: Embeddings of some captions and/or images (any object with the
                attributes of :class:`~personsearch_train.engine.text_inference.TextRetrievalEmbeddings`).

        Raises:
            TypeError: ``outputs`` lacks one of those attributes.
        """
        missing = [name for name in _FIELDS if not hasattr(outputs, name)]
        if missing:
            raise TypeError(
                f"{type(self).__name__} takes TextRetrievalEmbeddings; {type(outputs).__name__} has no "
                f"{', '.join(missing)}"
            )
        for name in _FIELDS:
            self._fields[name].append(getattr(outputs, name))

    def _gathered(self) -> dict[str, np.ndarray]:
        if not self._fields["text_pids"]:
            raise ValueError(f"{type(self).__name__}.evaluate() before any process()")
        data = {
            "text_embeddings": _unit_rows(np.concatenate(self._fields["text_embeddings"])),
            "image_embeddings": _unit_rows(np.concatenate(self._fields["image_embeddings"])),
            "text_pids": np.concatenate(self._fields["text_pids"]).astype(np.int64),
            "image_pids": np.concatenate(self._fields["image_pids"]).astype(np.int64),
        }
        for name, rows in (("caption_sources", "text_pids"), ("image_sources", "image_pids")):
            sources = [s for part in self._fields[name] for s in part]
            if len(sources) != len(data[rows]):
                raise ValueError(f"{len(sources)} {name} for {len(data[rows])} rows")
            data[name] = np.asarray(sources, dtype=np.str_).reshape(-1)
        return data

    def evaluate(self) -> dict[str, float]:
        """Score everything processed.

        Returns:
            ``R1, R5, R10, mAP, mINP, mSD, i2t_R1, i2t_R5, i2t_R10, i2t_mAP, i2t_mINP``
            as fractions in [0, 1]; with ``group_by_source`` and recorded sources, those
            keys prefixed ``"<source>/"`` for every source, in sorted order.

        Raises:
            ValueError: Nothing processed; no captions or no images (in a group); a
                caption whose identity has no image, or an image whose identity has no
                caption (in its group; the message says how many); a query whose
                identity covers the whole gallery (mSD needs a negative); or, when
                grouping, rows without a source next to rows with one.
        """
        data = self._gathered()
        texts, images = data["text_embeddings"], data["image_embeddings"]
        text_pids, image_pids = data["text_pids"], data["image_pids"]
        caption_sources, image_sources = data["caption_sources"], data["image_sources"]
        self.curves = {}
        has_sources = bool(np.any(caption_sources != "") or np.any(image_sources != ""))
        if not (self.group_by_source and has_sources):
            scores, self.curves[OVERALL] = self._score(texts, text_pids, images, image_pids, "")
            return scores
        unlabelled = int(np.sum(caption_sources == "")), int(np.sum(image_sources == ""))
        if any(unlabelled):
            raise ValueError(
                f"grouping by source, but {unlabelled[0]} captions and {unlabelled[1]} images have no source"
            )
        results: dict[str, float] = {}
        for source in sorted(set(caption_sources.tolist()) | set(image_sources.tolist())):
            queries, gallery = caption_sources == source, image_sources == source
            scores, self.curves[source] = self._score(
                texts[queries], text_pids[queries], images[gallery], image_pids[gallery], source
            )
            results.update({f"{source}/{key}": value for key, value in scores.items()})
        return results

    def _score(
        self, texts: np.ndarray, text_pids: np.ndarray, images: np.ndarray, image_pids: np.ndarray, group: str
    ) -> tuple[dict[str, float], np.ndarray]:
        """Both directions on one set of unit rows; returns the scores and the t2i CMC."""
        where = f"source {group!r}: " if group else ""
        if not len(texts) or not len(images):
            raise ValueError(
                f"{where}{len(texts)} captions and {len(images)} images; need at least one of each"
            )
        for queries, gallery, what in (
            (text_pids, image_pids, "captions have an identity with no gallery image"),
            (image_pids, text_pids, "images have an identity with no caption (image-to-text)"),
        ):
            orphans = int(np.sum(~np.isin(queries, gallery)))
            if orphans:
                raise ValueError(
                    f"{where}{orphans} of {len(queries)} {what}; retrieval metrics are undefined"
                )
        try:
            t2i, cmc = self._direction(texts, text_pids, images, image_pids, with_msd=True)
            i2t, _ = self._direction(images, image_pids, texts, text_pids, with_msd=False)
        except ValueError as exc:
            raise ValueError(f"{where}{exc}") from None
        return {**t2i, **{f"i2t_{key}": value for key, value in i2t.items()}}, cmc

    def _direction(
        self,
        queries: np.ndarray,
        query_pids: np.ndarray,
        gallery: np.ndarray,
        gallery_pids: np.ndarray,
        *,
        with_msd: bool,
    ) -> tuple[dict[str, float], np.ndarray]:
        """R@k/mAP/mINP (and mSD) of ``queries @ gallery.T``, one block of queries at a time."""
        cmc = np.zeros(self.max_rank, dtype=np.float64)
        aps, inps = [], []
        msd_sum = 0.0
        for rows in _chunks(len(queries), self.chunk_size):
            similarity = queries[rows] @ gallery.T
            result = evaluate_text_to_image(
                similarity, query_pids[rows], gallery_pids, max_rank=self.max_rank
            )
            # Per-query means, so each block counts with its number of queries.
            cmc += result.cmc * (rows.stop - rows.start)
            aps.append(result.average_precisions)
            inps.append(result.inverse_negative_penalties)
            if with_msd:
                msd_sum += (rows.stop - rows.start) * mean_similarity_distribution(
                    similarity, query_pids[rows], gallery_pids
                )
        cmc /= len(queries)
        scores = {
            "R1": float(cmc[0]),
            "R5": float(cmc[4]),
            "R10": float(cmc[9]),
            "mAP": float(np.concatenate(aps).mean()),
            "mINP": float(np.concatenate(inps).mean()),
        }
        if with_msd:
            scores["mSD"] = msd_sum / len(queries)
        return scores, cmc
