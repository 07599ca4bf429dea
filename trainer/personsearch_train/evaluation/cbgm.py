"""Context Bipartite Graph Matching (CBGM, methods.md section 1.6).

At test time, SeqNet re-scores the best few gallery images of a query by matching
the people around the query (its *context*: the query image processed as a
gallery image, query box first) to the people of each gallery image:

1. take the ``k1`` highest similarities among the query's gallery detections and
   the distinct images they come from;
2. for each such image, weight every (context person, gallery detection) pair by the
   dot product of their embeddings (gallery side score-weighted, context side not);
3. solve the maximum-weight bipartite matching in which the smaller side is fully
   matched (the reference's Kuhn-Munkres; here :func:`scipy.optimize.linear_sum_assignment`,
   which solves the same rectangular assignment problem);
4. if context node 0 (the query) is matched, its gallery partner's similarity becomes
   the *largest single matched edge weight* (not the sum).

When two assignments have exactly equal total weight the two solvers may pick
different ones; with real-valued embeddings this does not happen in practice.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["CBGM_PARAMS", "CbgmMatch", "apply_cbgm", "match_context"]

#: ``(k1, k2)`` per dataset, as in SeqNet's ``eval_search_cuhk`` / ``eval_search_prw``.
CBGM_PARAMS: dict[str, tuple[int, int]] = {"cuhk_sysu": (10, 3), "prw": (30, 4)}


class CbgmMatch(NamedTuple):
    """Result of matching one gallery image against the query context.

    Attributes:
        query_partner: Index of the gallery detection matched to context node 0 (the
            query), or None when the query node is left unmatched (the image has fewer
            detections than there are context people and the matching preferred others).
        max_value: Largest weight among the matched edges.
    """

    query_partner: int | None
    max_value: float


def match_context(context_embeddings: np.ndarray, gallery_embeddings: np.ndarray) -> CbgmMatch:
    """Match a query's context people to one gallery image's detections.

    Args:
        context_embeddings: ``[K, D]`` float32; row 0 is the query person (at most
            ``k2`` rows, in the order the model produced them).
        gallery_embeddings: ``[N, D]`` float32 score-weighted gallery embeddings of
            one image.

    Returns:
        The :class:`CbgmMatch` of the maximum-weight matching.

    Raises:
        ValueError: If either side is empty.
    """
    if len(context_embeddings) == 0 or len(gallery_embeddings) == 0:
        raise ValueError("CBGM needs at least one context person and one gallery detection")
    # float32 products, as the reference computes each edge, then float64 for the solver.
    weights = (
        np.asarray(context_embeddings, np.float32) @ np.asarray(gallery_embeddings, np.float32).T
    ).astype(np.float64)
    rows, cols = linear_sum_assignment(weights, maximize=True)
    max_value = float(weights[rows, cols].max())
    partner = cols[rows == 0]
    return CbgmMatch(int(partner[0]) if len(partner) else None, max_value)


def apply_cbgm(
    sims: np.ndarray,
    segment_starts: np.ndarray,
    segment_lengths: np.ndarray,
    gallery_embeddings: np.ndarray,
    context_embeddings: np.ndarray,
    *,
    k1: int,
    k2: int,
    embedding_rows: np.ndarray | None = None,
) -> np.ndarray:
    """Re-score a query's gallery similarities with CBGM.

    Args:
        sims: ``[T]`` float32 similarities of the query to the detections of its visited
            gallery images, concatenated image by image.
        segment_starts: ``[I]`` int64, where each visited image's detections start in ``sims``.
        segment_lengths: ``[I]`` int64, how many detections each has (all > 0).
        gallery_embeddings: ``[T, D]`` float32 score-weighted embeddings aligned with ``sims``
            (or, with ``embedding_rows``, a larger table indexed by it).
        context_embeddings: ``[K, D]`` float32 query context, row 0 the query itself.
        k1: Number of top similarities whose images are re-scored.
        k2: Number of context rows used.
        embedding_rows: Optional ``[T]`` int64: ``sims[i]`` belongs to
            ``gallery_embeddings[embedding_rows[i]]``; saves gathering the whole table.

    Returns:
        ``[T]`` float32: a modified copy of ``sims``.
    """
    out = np.array(sims, dtype=np.float32, copy=True)
    if len(out) == 0:
        return out
    # Same selection as the reference: the last k1 of an ascending argsort.
    top = np.argsort(out)[-k1:]
    image_of = np.repeat(np.arange(len(segment_starts)), segment_lengths)
    context = np.asarray(context_embeddings, np.float32)[:k2]
    for image in np.unique(image_of[top]):
        start, length = int(segment_starts[image]), int(segment_lengths[image])
        rows = (
            np.arange(start, start + length)
            if embedding_rows is None
            else embedding_rows[start : start + length]
        )
        match = match_context(context, gallery_embeddings[rows])
        if match.query_partner is not None:
            out[start + match.query_partner] = match.max_value
    return out
