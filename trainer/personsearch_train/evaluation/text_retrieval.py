"""Text-to-image retrieval metrics: R@k, mAP, mINP (IRRA) and mSD (UFineBench).

Definitions (methods.md 5.3 and 5.5), for a text query whose identity has ``|P|``
gallery images and ``m_k = 1`` when the rank-``k`` image has that identity:

* ``R@k = min(1, Σ_{i≤k} m_i)`` averaged over queries;
* ``AP = (1/|P|) Σ_k m_k · (Σ_{i≤k} m_i) / k``;
* ``INP = |P| / rank of the last positive``;
* mSD: similarities mapped to ``s' = s/2 + 0.5``; ``pn = 1 − exp(−mean_P s' / mean_N s')``;
  ``SD_k = Σ_{i≤k} m_i s'_(i) / Σ_{i≤k} s'_(i)``; ``SD = pn · (1/|P|) Σ_k m_k SD_k``.

All values are returned as fractions in [0, 1] (the papers print them ×100).
Ranking is a stable sort by descending similarity (ties keep gallery order; the
reference's ``torch.argsort`` leaves tie order unspecified).

UFineBench's published ``mSD_rank`` multiplies the *unsorted* similarity matrix by
the *rank-ordered* match mask, so its positive mass, ``pn`` and cumulative sums are
taken in gallery order, not rank order. :func:`mean_similarity_distribution` computes
the rank-ordered definition above; ``literal_ufinebench=True`` reproduces the script.
Every query must have at least one gallery image of its identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TextRetrievalResult", "evaluate_text_to_image", "mean_similarity_distribution", "rank_matches"]


@dataclass(frozen=True)
class TextRetrievalResult:
    """Text-to-image retrieval metrics, fractions in [0, 1].

    Attributes:
        r1: Recall at rank 1.
        r5: Recall at rank 5.
        r10: Recall at rank 10.
        mean_ap: mAP.
        mean_inp: mINP.
        cmc: ``[max_rank]`` float64 recall at every rank.
        average_precisions: ``[Q]`` float64 per-query AP.
        inverse_negative_penalties: ``[Q]`` float64 per-query INP.
    """

    r1: float
    r5: float
    r10: float
    mean_ap: float
    mean_inp: float
    cmc: np.ndarray
    average_precisions: np.ndarray
    inverse_negative_penalties: np.ndarray

    def as_dict(self) -> dict[str, float]:
        """The headline numbers keyed ``R1, R5, R10, mAP, mINP``."""
        return {"R1": self.r1, "R5": self.r5, "R10": self.r10, "mAP": self.mean_ap, "mINP": self.mean_inp}


def _check_inputs(similarity: np.ndarray, query_pids: np.ndarray, gallery_pids: np.ndarray) -> tuple:
    similarity = np.asarray(similarity, dtype=np.float64)
    query_pids = np.asarray(query_pids).reshape(-1)
    gallery_pids = np.asarray(gallery_pids).reshape(-1)
    if similarity.shape != (len(query_pids), len(gallery_pids)):
        raise ValueError(
            f"similarity has shape {similarity.shape} but there are {len(query_pids)} queries and "
            f"{len(gallery_pids)} gallery images"
        )
    if not np.all(np.isfinite(similarity)):
        raise ValueError("similarity holds NaN or infinite values")
    return similarity, query_pids, gallery_pids


def rank_matches(
    similarity: np.ndarray, query_pids: np.ndarray, gallery_pids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rank the gallery for every query and mark the correct images.

    Args:
        similarity: ``[Q, G]`` similarities (higher is better).
        query_pids: ``[Q]`` identities of the queries.
        gallery_pids: ``[G]`` identities of the gallery images.

    Returns:
        ``(order [Q, G] int64, matches [Q, G] bool)``: ``order[q, k]`` is the gallery
        index at rank ``k+1``; ``matches[q, k]`` whether it has the query's identity.

    Raises:
        ValueError: On shape mismatch, non-finite values, or a query with no positive.
    """
    similarity, query_pids, gallery_pids = _check_inputs(similarity, query_pids, gallery_pids)
    order = np.argsort(-similarity, axis=1, kind="stable")
    matches = gallery_pids[order] == query_pids[:, None]
    without = np.flatnonzero(~matches.any(axis=1))
    if len(without):
        raise ValueError(
            f"{len(without)} queries have no gallery image of their identity "
            f"(first: query {int(without[0])}, pid {query_pids[without[0]]}); "
            "retrieval metrics are undefined for them"
        )
    return order, matches


def evaluate_text_to_image(
    similarity: np.ndarray, query_pids: np.ndarray, gallery_pids: np.ndarray, *, max_rank: int = 10
) -> TextRetrievalResult:
    """R@1/5/10, mAP and mINP of a text-to-image similarity matrix (IRRA definitions).

    Args:
        similarity: ``[Q, G]`` text-image similarities (L2-normalised dot products).
        query_pids: ``[Q]`` identities of the texts.
        gallery_pids: ``[G]`` identities of the images.
        max_rank: Length of the CMC curve (at least 10).

    Returns:
        The :class:`TextRetrievalResult`.
    """
    if max_rank < 10:
        raise ValueError("max_rank must be at least 10 to report R@10")
    _, matches = rank_matches(similarity, query_pids, gallery_pids)
    found = np.cumsum(matches, axis=1)
    cmc = np.minimum(found[:, :max_rank], 1).mean(axis=0)
    if cmc.shape[0] < max_rank:
        cmc = np.concatenate([cmc, np.full(max_rank - len(cmc), cmc[-1])])
    ranks = np.arange(1, matches.shape[1] + 1)
    num_positive = matches.sum(axis=1)
    aps = (found / ranks * matches).sum(axis=1) / num_positive
    last_positive = matches.shape[1] - np.argmax(matches[:, ::-1], axis=1)
    inps = num_positive / last_positive
    return TextRetrievalResult(
        r1=float(cmc[0]),
        r5=float(cmc[4]),
        r10=float(cmc[9]),
        mean_ap=float(aps.mean()),
        mean_inp=float(inps.mean()),
        cmc=cmc,
        average_precisions=aps,
        inverse_negative_penalties=inps,
    )


def mean_similarity_distribution(
    similarity: np.ndarray,
    query_pids: np.ndarray,
    gallery_pids: np.ndarray,
    *,
    literal_ufinebench: bool = False,
) -> float:
    """UFineBench's mSD, as a fraction.

    Args:
        similarity: ``[Q, G]`` cosine similarities in [-1, 1].
        query_pids: ``[Q]`` identities of the texts.
        gallery_pids: ``[G]`` identities of the images.
        literal_ufinebench: Reproduce the published script, which mixes the gallery
            order of the similarities with the rank order of the match mask.

    Returns:
        mSD in [0, 1] (the rank-ordered definition; the literal one can differ).

    Raises:
        ValueError: On bad shapes, a query with no positive, or a query whose identity
            covers the whole gallery (no negatives: ``pn`` is undefined).
    """
    order, matches = rank_matches(similarity, query_pids, gallery_pids)
    mapped = np.asarray(similarity, dtype=np.float64) / 2.0 + 0.5
    num_positive = matches.sum(axis=1)
    num_negative = matches.shape[1] - num_positive
    if np.any(num_negative == 0):
        raise ValueError("a query's identity covers the whole gallery; mSD needs at least one negative image")
    # In rank order (the definition) or the script's gallery order (literal).
    values = mapped if literal_ufinebench else np.take_along_axis(mapped, order, axis=1)
    positive_mass = values * matches
    positive_mean = positive_mass.sum(axis=1) / num_positive
    negative_mean = (values.sum(axis=1) - positive_mass.sum(axis=1)) / num_negative
    pn = 1.0 - np.exp(-(positive_mean / negative_mean))
    sd_k = np.cumsum(positive_mass, axis=1) / np.cumsum(values, axis=1)
    sd = (sd_k * matches).sum(axis=1) / num_positive * pn
    return float(sd.mean())
