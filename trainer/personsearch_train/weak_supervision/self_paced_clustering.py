"""CGPS's pseudo identities: self-paced DBSCAN on k-reciprocal Jaccard distances.

CGPS (Yan et al., "Exploring Visual Context for Weakly Supervised Person Search",
AAAI 2022; label generator ``mmdet/core/label_generators/dbscan_context.py`` of the
CGPS code) takes its clustering from SpCL (Ge et al., "Self-paced Contrastive Learning
with Hybrid Memory for Domain Adaptive Object Re-ID", NeurIPS 2020) and adds one scene
prior:

1. :func:`jaccard_distance`: the k-reciprocal Jaccard distance of Zhong et al.
   ("Re-ranking Person Re-identification with k-reciprocal Encoding", CVPR 2017), in
   SpCL's form (``spcl/utils/faiss_rerank.py``, ``compute_jaccard_distance``): only the
   Jaccard part, without re-ranking's mixing with the original distance.
2. DBSCAN (scikit-learn, precomputed distances) at a tight, a normal and a loose ``eps``;
   DBSCAN's outliers become singleton clusters, as in :func:`cluster_features`.
3. :func:`split_same_image`: two people of one scene image are different people, so a
   cluster keeps one person per image, the one most similar to its centroid.
4. :func:`reliability_filter`: SpCL's criterion (paper section 3.3) keeps only clusters
   that are independent (barely grow at the loose ``eps``) and compact (barely split at
   the tight ``eps``); the other samples become singletons.

:func:`self_paced_clusters` runs the four steps. Order, as in CGPS's code: the same-image
split is applied to each of the three clusterings, then the reliability criterion
compares the split ones, so a split that is the same at every ``eps`` does not count as
unreliability. CGPS computes the independence threshold at the first clustering and
passes it back in at every later one; so does the caller here (through
``independence_threshold``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse

__all__ = [
    "SelfPacedClusters",
    "jaccard_distance",
    "reliability_filter",
    "self_paced_clusters",
    "split_same_image",
]

# Upper bound on the (row, shared neighbour, column) triples one block of the Jaccard
# overlap sums gathers at once: keeps the temporary arrays near 100 MB whatever N is.
_TRIPLES_PER_BLOCK = 4_000_000
# Rows per block of the dense outputs (similarities, overlap sums): rows * N floats.
_ROWS_PER_BLOCK = 1024


def _normalised_features(features: torch.Tensor) -> torch.Tensor:
    """Check ``features`` ([N, D] float) and return them L2-normalised as float64 on CPU."""
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"features must be a torch.Tensor, got {type(features).__name__}")
    if features.dim() != 2 or not features.is_floating_point():
        raise ValueError(
            f"features must be a float [N, D] tensor; got {features.dtype} of shape {tuple(features.shape)}"
        )
    x = features.detach().cpu().double()
    if not bool(torch.isfinite(x).all()):
        raise ValueError("features contain NaN or infinite values")
    norms = x.norm(dim=1, keepdim=True)
    if len(x) and bool((norms == 0).any()):
        raise ValueError("features contain an all-zero row, which has no direction to normalise")
    return x / norms


def _nearest_neighbours(x: torch.Tensor, count: int) -> np.ndarray:
    """Indices of each row's ``count`` most similar rows, the row itself first.

    Args:
        x: ``[N, D]`` float64, L2-normalised, so cosine order is Euclidean order.
        count: Neighbours per row, ``<= N``.

    Returns:
        ``[N, count]`` int64, nearest first.
    """
    n = x.shape[0]
    x32 = x.float()
    ranks = np.empty((n, count), dtype=np.int64)
    for start in range(0, n, _ROWS_PER_BLOCK):
        stop = min(start + _ROWS_PER_BLOCK, n)
        sims = x32[start:stop] @ x32.t()
        # The row itself leads its list even where a duplicate feature ties with it, so it
        # is always in its own k-reciprocal set (and no row's set is empty).
        local = torch.arange(stop - start)
        sims[local, local + start] = float("inf")
        ranks[start:stop] = sims.topk(count, dim=1).indices.numpy()
    return ranks


def _reciprocal_sets(ranks: np.ndarray, k: int) -> sparse.csr_matrix:
    """k-reciprocal neighbour sets ``R(i, k)`` as a 0/1 ``[N, N]`` sparse matrix.

    ``j`` is in ``R(i, k)`` when ``j`` is among the first ``k + 1`` entries of ``i``'s
    list and ``i`` among the first ``k + 1`` of ``j``'s (Zhong et al., eq. 3; the ``+ 1``
    is the row itself, rank 0). Lists are cut at their stored length, as SpCL's are.
    """
    n = ranks.shape[0]
    width = min(k + 1, ranks.shape[1])
    forward = ranks[:, :width]
    backward = ranks[forward, :width]  # [N, width, width]: the lists of i's neighbours
    reciprocal = (backward == np.arange(n)[:, None, None]).any(axis=2)
    rows = np.broadcast_to(np.arange(n)[:, None], forward.shape)[reciprocal]
    return sparse.csr_matrix((np.ones(len(rows)), (rows, forward[reciprocal])), shape=(n, n))


def _expanded_sets(recip: sparse.csr_matrix, half: sparse.csr_matrix) -> sparse.csr_matrix:
    """Zhong et al.'s robust set (eq. 6): ``R(i, k)`` plus each ``R(c, k/2)`` that mostly lies in it.

    ``R(c, k/2)`` of a member ``c`` of ``R(i, k)`` is added when more than two thirds of it
    is in ``R(i, k)``. Returns the 0/1 pattern of the union, ``[N, N]`` sparse.
    """
    # overlap[i, c] = |R(i, k) ∩ R(c, k/2)|, only needed where c is in R(i, k).
    overlap = recip.multiply(recip @ half.T).tocoo()
    half_size = np.diff(half.indptr)
    # "> 2/3 |R(c, k/2)|" in integers, so no rounding can flip a tie.
    accepted = 3 * np.rint(overlap.data).astype(np.int64) > 2 * half_size[overlap.col]
    n = recip.shape[0]
    chosen = sparse.csr_matrix(
        (np.ones(int(accepted.sum())), (overlap.row[accepted], overlap.col[accepted])), shape=(n, n)
    )
    expanded = (recip + chosen @ half).tocsr()
    expanded.data[:] = 1.0
    expanded.sort_indices()
    return expanded


def _encoding_vectors(x: torch.Tensor, expanded: sparse.csr_matrix) -> sparse.csr_matrix:
    """Zhong et al.'s k-reciprocal feature ``V`` (eq. 7): softmax weights over each robust set.

    Row ``i`` holds ``softmax_j(-||x_i - x_j||^2)`` over ``j`` in its set (SpCL's Gaussian
    kernel weighting) and sums to 1. For unit vectors ``-||x_i - x_j||^2 = 2 x_i.x_j - 2``,
    and the constant cancels in the softmax.
    """
    n = expanded.shape[0]
    starts = expanded.indptr[:-1]
    rows = np.repeat(np.arange(n), np.diff(expanded.indptr))
    cols = expanded.indices
    logits = np.empty(len(cols), dtype=np.float64)
    xs = x.numpy()
    # Gathered pair features stay near the triple budget: pairs * D floats per block.
    step = max(1, _TRIPLES_PER_BLOCK // max(1, x.shape[1]))
    for begin in range(0, len(cols), step):
        part = slice(begin, begin + step)
        logits[part] = 2.0 * np.einsum("ij,ij->i", xs[rows[part]], xs[cols[part]])
    # Every row holds at least the row itself, so reduceat never meets an empty segment.
    logits -= np.maximum.reduceat(logits, starts)[rows]
    weights = np.exp(logits)
    weights /= np.add.reduceat(weights, starts)[rows]
    return sparse.csr_matrix((weights, cols, expanded.indptr), shape=(n, n))


def _jaccard_rows(v: sparse.csr_matrix, out: np.ndarray) -> None:
    """Write ``1 - m_ij / (2 - m_ij)``, ``m_ij = sum_k min(v_ik, v_jk)``, into ``out`` ([N, N] float32).

    ``2 - m_ij`` is ``sum_k max(v_ik, v_jk)`` because rows of ``v`` sum to 1. Only shared
    non-zero ``k`` contribute to ``m``: for each row block, every non-zero ``(i, k)`` is
    paired with the rows ``j`` that are non-zero in column ``k`` (SpCL's inverted index),
    and the minima are summed with one ``bincount`` per block (float64).
    """
    n = v.shape[0]
    by_column = v.tocsc()
    column_count = np.diff(by_column.indptr)
    cost = column_count[v.indices]  # triples each non-zero (i, k) generates
    row_cost = np.add.reduceat(cost, v.indptr[:-1]) if len(cost) else np.zeros(n, dtype=np.int64)
    row_of_entry = np.repeat(np.arange(n), np.diff(v.indptr))
    start = 0
    while start < n:
        # Grow the block while it stays under both budgets (at least one row).
        cumulative = np.cumsum(row_cost[start : start + _ROWS_PER_BLOCK])
        stop = start + max(1, int(np.searchsorted(cumulative, _TRIPLES_PER_BLOCK, side="right")))
        entries = slice(v.indptr[start], v.indptr[stop])
        columns = v.indices[entries]
        repeats = column_count[columns]
        total = int(repeats.sum())
        # Position of each triple in the CSC arrays: column start + offset within column.
        offset = np.arange(total) - np.repeat(np.cumsum(repeats) - repeats, repeats)
        position = np.repeat(by_column.indptr[columns], repeats) + offset
        minima = np.minimum(np.repeat(v.data[entries], repeats), by_column.data[position])
        flat = np.repeat(row_of_entry[entries] - start, repeats) * n + by_column.indices[position]
        shared = np.bincount(flat, weights=minima, minlength=(stop - start) * n)
        out[start:stop] = (1.0 - shared / (2.0 - shared)).reshape(stop - start, n)
        start = stop


def _symmetrise_in_place(matrix: np.ndarray) -> None:
    """Average ``matrix`` with its transpose, block by block (no second [N, N] copy)."""
    n = matrix.shape[0]
    for a in range(0, n, _ROWS_PER_BLOCK):
        for b in range(a, n, _ROWS_PER_BLOCK):
            rows, cols = slice(a, a + _ROWS_PER_BLOCK), slice(b, b + _ROWS_PER_BLOCK)
            # float addition commutes, so both halves get bit-identical values.
            mean = (matrix[rows, cols] + matrix[cols, rows].T) * np.float32(0.5)
            matrix[rows, cols] = mean
            matrix[cols, rows] = mean.T


def jaccard_distance(features: torch.Tensor, *, k1: int = 30, k2: int = 6) -> np.ndarray:
    """k-reciprocal Jaccard distance between all pairs of samples (SpCL's form).

    Steps (Zhong et al., CVPR 2017, section 3; as SpCL's ``compute_jaccard_distance``):

    1. Rank neighbours by Euclidean distance of the L2-normalised features; each list
       holds ``k1`` entries, the sample itself first (SpCL searches ``k1`` neighbours, so
       ``R(i, k1)`` is drawn from ``k1 - 1`` others, one fewer than Zhong's code).
    2. ``R(i, k1)``: mutual neighbours; expand it with each member ``c``'s
       ``R(c, round(k1 / 2))`` that has more than 2/3 of its members in ``R(i, k1)``.
    3. ``V[i, j] = softmax(-||x_i - x_j||^2)`` over the expanded set, 0 elsewhere.
    4. Local query expansion: ``V[i]`` becomes the mean of ``V`` over ``i``'s ``k2``
       nearest (itself included).
    5. ``d(i, j) = 1 - sum_k min(V_ik, V_jk) / sum_k max(V_ik, V_jk)``; rows of ``V`` sum
       to 1, so the denominator is ``2 - sum_k min``.

    Only the Jaccard part is returned; re-ranking's ``lambda``-mix with the original
    distance is not applied (SpCL and CGPS cluster on this alone). ``V`` is kept sparse
    (a few hundred non-zeros per row), so the cost is ``O(N^2 D)`` for the neighbour
    search plus ``O(N * nnz^2)`` for the overlaps, and memory is the ``[N, N]`` output.

    Args:
        features: ``[N, D]`` float embeddings (normalised here; rows must be non-zero).
        k1: Neighbours for the k-reciprocal sets; clamped to ``N``.
        k2: Neighbours for query expansion; clamped to the (clamped) ``k1``.

    Returns:
        ``[N, N]`` float32 distances in ``[0, 1]``: symmetric, zero on the diagonal,
        1 between samples whose expanded sets share nobody.

    Raises:
        TypeError: ``features`` is not a tensor.
        ValueError: ``features`` is not ``[N, D]`` float, holds NaN/inf or a zero row, or
            ``k1`` / ``k2`` is below 1.
    """
    if k1 < 1 or k2 < 1:
        raise ValueError(f"k1 and k2 must be >= 1, got k1={k1}, k2={k2}")
    x = _normalised_features(features)
    n = x.shape[0]
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    k1 = min(k1, n)
    k2 = min(k2, k1)
    ranks = _nearest_neighbours(x, k1)
    # np.round halves to even, as SpCL's np.around(k1 / 2) does.
    half_k = int(np.round(k1 / 2))
    expanded = _expanded_sets(_reciprocal_sets(ranks, k1), _reciprocal_sets(ranks, half_k))
    v = _encoding_vectors(x, expanded)
    expansion = sparse.csr_matrix(
        (np.full(n * k2, 1.0 / k2), (np.repeat(np.arange(n), k2), ranks[:, :k2].ravel())), shape=(n, n)
    )
    v = (expansion @ v).tocsr()
    v.sort_indices()

    distance = np.empty((n, n), dtype=np.float32)
    _jaccard_rows(v, distance)
    _symmetrise_in_place(distance)
    np.clip(distance, 0.0, 1.0, out=distance)
    np.fill_diagonal(distance, 0.0)
    return distance


@dataclass(frozen=True)
class SelfPacedClusters:
    """Result of :func:`self_paced_clusters`.

    Attributes:
        labels: ``[N]`` int64 pseudo identities ``0..C-1``, numbered by first member.
        independence_threshold: The ``R_indep`` threshold used; pass it back in at later
            clusterings (CGPS fixes it at the first one).
        outliers: Samples DBSCAN left as noise in the normal clustering (now singletons).
        split_same_image: Samples of the normal clustering moved to singletons because
            another person of their image was closer to the cluster centroid.
        unreliable: Samples moved to singletons by the reliability criterion.
    """

    labels: np.ndarray
    independence_threshold: float
    outliers: int
    split_same_image: int
    unreliable: int


def _renumber_by_first_member(labels: np.ndarray) -> np.ndarray:
    """Relabel ``0..C-1`` in order of each cluster's first sample ([N] int64)."""
    if len(labels) == 0:
        return np.zeros(0, dtype=np.int64)
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.empty(len(first), dtype=np.int64)
    order[np.argsort(first, kind="stable")] = np.arange(len(first))
    return order[inverse.ravel()]


def _as_labels(labels: np.ndarray | torch.Tensor, name: str, count: int | None = None) -> np.ndarray:
    """Check a ``[N]`` integer label array and return it as int64 numpy."""
    array = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if array.ndim != 1 or (len(array) and not np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name} must be a 1-D integer array, got {array.dtype} of shape {array.shape}")
    if count is not None and len(array) != count:
        raise ValueError(f"{name} must have one entry per sample ({count}), got {len(array)}")
    return array.astype(np.int64)


def _dbscan_with_singletons(distance: np.ndarray, eps: float, min_samples: int) -> tuple[np.ndarray, int]:
    """DBSCAN on a precomputed distance matrix; outliers become singleton clusters.

    Same convention as :func:`cluster_features` (which computes its own cosine distance,
    so it cannot take the Jaccard matrix): noise samples get the labels after the last
    cluster, in sample order.

    Returns:
        ``[N]`` int64 labels and the number of outliers.
    """
    from sklearn.cluster import DBSCAN

    labels = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(distance)
    noise = np.flatnonzero(labels < 0)
    first_free = int(labels.max()) + 1 if len(labels) else 0
    labels[noise] = first_free + np.arange(len(noise))
    return labels.astype(np.int64), len(noise)


def split_same_image(
    labels: np.ndarray,
    features: torch.Tensor | np.ndarray,
    image_ids: torch.Tensor | np.ndarray,
) -> np.ndarray:
    """CGPS's scene prior: at most one person of each image per cluster.

    Where several samples of one image share a cluster, the one with the largest dot
    product with the cluster centroid (mean feature of all the cluster's members before
    any split) stays and each other one becomes a new singleton cluster (CGPS,
    ``process_label_with_context``). Ties keep the first sample.

    Args:
        labels: ``[N]`` integer cluster labels.
        features: ``[N, D]`` float features the clustering used (normalised by the caller).
        image_ids: ``[N]`` integer scene image of each sample.

    Returns:
        ``[N]`` int64 labels ``0..C-1``, numbered by first member.

    Raises:
        ValueError: Shapes disagree or inputs are not integer labels / float features.
    """
    x = np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"features must be a float [N, D] array, got {x.dtype} of shape {x.shape}")
    labels = _as_labels(labels, "labels", len(x))
    images = _as_labels(image_ids, "image_ids", len(x))
    if len(labels) == 0:
        return np.zeros(0, dtype=np.int64)
    x = x.astype(np.float64)
    _, cluster = np.unique(labels, return_inverse=True)
    cluster = cluster.ravel()
    sizes = np.bincount(cluster)
    centroids = np.zeros((len(sizes), x.shape[1]))
    np.add.at(centroids, cluster, x)
    centroids /= sizes[:, None]
    similarity = np.einsum("ij,ij->i", x, centroids[cluster])
    # Group by (image, cluster), most similar first, then sample order for ties.
    order = np.lexsort((np.arange(len(x)), -similarity, cluster, images))
    group_start = np.ones(len(x), dtype=bool)
    group_start[1:] = (images[order][1:] != images[order][:-1]) | (cluster[order][1:] != cluster[order][:-1])
    moved = np.sort(order[~group_start])
    result = cluster.copy()
    result[moved] = len(sizes) + np.arange(len(moved))
    return _renumber_by_first_member(result)


def _same_cluster_iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Per sample, IoU of its same-cluster sets (itself included) under two clusterings.

    ``|A ∩ B|`` is the size of the (first, second) label cell holding the sample, so this
    is ``O(N log N)`` instead of SpCL's two ``[N, N]`` label-equality matrices.
    """
    _, first_index = np.unique(first, return_inverse=True)
    _, second_index = np.unique(second, return_inverse=True)
    first_size = np.bincount(first_index.ravel())[first_index.ravel()]
    second_size = np.bincount(second_index.ravel())[second_index.ravel()]
    _, joint_index = np.unique(np.stack([first, second], axis=1), axis=0, return_inverse=True)
    both = np.bincount(joint_index.ravel())[joint_index.ravel()]
    return both / (first_size + second_size - both)


def reliability_filter(
    normal: np.ndarray,
    tight: np.ndarray,
    loose: np.ndarray,
    independence_threshold: float | None = None,
    quantile: float = 0.9,
) -> tuple[np.ndarray, float]:
    """SpCL's cluster reliability criterion (Ge et al., NeurIPS 2020, section 3.3).

    Per sample ``i`` with same-cluster sets ``I`` (normal), ``I_tight``, ``I_loose``:
    ``R_comp(i) = 1 - IoU(I, I_tight)`` and ``R_indep(i) = 1 - IoU(I, I_loose)``. Each
    normal cluster takes the minimum of each over its members. The independence threshold,
    unless given, is the per-cluster ``R_indep`` minimum at position
    ``min(M - 1, round(quantile * M))`` of their ascending sort over the ``M`` clusters with
    more than one member (SpCL/CGPS code; ``round`` halves to even). Then, in sample order,
    a sample becomes a new singleton when its cluster's ``R_indep`` exceeds the threshold
    or its own ``R_comp`` exceeds its cluster's minimum, as long as the cluster still has
    more than one member (so the last one stays).

    Args:
        normal: ``[N]`` integer labels of the normal clustering.
        tight: ``[N]`` integer labels at the smaller ``eps``.
        loose: ``[N]`` integer labels at the larger ``eps``.
        independence_threshold: Threshold from an earlier call, in ``[0, 1]``; ``None``
            computes it from this clustering. With no multi-member cluster to compute it
            from it is 1.0, which rejects nothing.
        quantile: Position of the threshold among the sorted minima, in ``[0, 1]``.

    Returns:
        ``[N]`` int64 labels ``0..C-1`` numbered by first member, and the threshold used.

    Raises:
        ValueError: Label arrays are not 1-D integers of one length, or the threshold or
            quantile is outside ``[0, 1]``.
    """
    normal = _as_labels(normal, "normal")
    tight = _as_labels(tight, "tight", len(normal))
    loose = _as_labels(loose, "loose", len(normal))
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {quantile}")
    if independence_threshold is not None and not 0.0 <= independence_threshold <= 1.0:
        raise ValueError(f"independence_threshold must be in [0, 1], got {independence_threshold}")
    if len(normal) == 0:
        threshold = 1.0 if independence_threshold is None else float(independence_threshold)
        return np.zeros(0, dtype=np.int64), threshold

    compactness = 1.0 - _same_cluster_iou(normal, tight)
    independence = 1.0 - _same_cluster_iou(normal, loose)
    _, cluster = np.unique(normal, return_inverse=True)
    cluster = cluster.ravel()
    sizes = np.bincount(cluster)
    cluster_comp = np.full(len(sizes), np.inf)
    np.minimum.at(cluster_comp, cluster, compactness)
    cluster_indep = np.full(len(sizes), np.inf)
    np.minimum.at(cluster_indep, cluster, independence)

    if independence_threshold is None:
        candidates = np.sort(cluster_indep[sizes > 1])
        if len(candidates) == 0:
            threshold = 1.0
        else:
            position = min(len(candidates) - 1, int(np.round(len(candidates) * quantile)))
            threshold = float(candidates[position])
    else:
        threshold = float(independence_threshold)

    flagged = (cluster_indep[cluster] > threshold) | (compactness > cluster_comp[cluster])
    # Moving samples in order while the cluster keeps > 1 member moves every flagged one
    # unless all members are flagged; then the last member (in sample order) stays.
    flagged_count = np.bincount(cluster, weights=flagged, minlength=len(sizes)).astype(np.int64)
    last_member = np.zeros(len(sizes), dtype=np.int64)
    np.maximum.at(last_member, cluster, np.arange(len(normal)))
    keep_last = flagged_count == sizes
    flagged[last_member[keep_last]] = False
    result = cluster.copy()
    moved = np.flatnonzero(flagged)
    result[moved] = len(sizes) + np.arange(len(moved))
    return _renumber_by_first_member(result), threshold


def self_paced_clusters(
    features: torch.Tensor,
    image_ids: torch.Tensor | np.ndarray,
    *,
    eps: tuple[float, float, float] = (0.68, 0.70, 0.72),
    min_samples: int = 4,
    k1: int = 30,
    k2: int = 6,
    independence_threshold: float | None = None,
    independence_quantile: float = 0.9,
) -> SelfPacedClusters:
    """CGPS's pseudo labels: Jaccard DBSCAN at three ``eps``, same-image split, reliability filter.

    See the module docstring for the steps and their sources. CGPS's settings are the
    defaults (``eps`` 0.68/0.70/0.72, ``min_samples`` 4, ``k1`` 30, ``k2`` 6).

    Args:
        features: ``[N, D]`` float embeddings (L2-normalised here).
        image_ids: ``[N]`` integer scene image of each sample.
        eps: DBSCAN radii (tight, normal, loose) in Jaccard distance, ascending, in (0, 1].
        min_samples: DBSCAN core-point size (the point itself included), >= 1.
        k1: k-reciprocal neighbours of :func:`jaccard_distance`.
        k2: Query-expansion neighbours of :func:`jaccard_distance`.
        independence_threshold: ``R_indep`` threshold of an earlier call, or ``None`` to
            compute it here (first clustering).
        independence_quantile: Where the threshold is taken among the sorted per-cluster
            ``R_indep`` minima.

    Returns:
        :class:`SelfPacedClusters`; its ``labels`` are deterministic for given inputs.

    Raises:
        TypeError: ``features`` is not a tensor.
        ValueError: Bad shapes, values or parameters (see the message).
    """
    if len(eps) != 3 or not all(0.0 < e <= 1.0 for e in eps) or not eps[0] <= eps[1] <= eps[2]:
        raise ValueError(f"eps must be three ascending radii (tight, normal, loose) in (0, 1], got {eps}")
    if min_samples < 1:
        raise ValueError(f"min_samples must be >= 1, got {min_samples}")
    if not 0.0 <= independence_quantile <= 1.0:
        raise ValueError(f"independence_quantile must be in [0, 1], got {independence_quantile}")
    if independence_threshold is not None and not 0.0 <= independence_threshold <= 1.0:
        raise ValueError(f"independence_threshold must be in [0, 1], got {independence_threshold}")
    x = _normalised_features(features)
    images = _as_labels(image_ids, "image_ids", x.shape[0])
    if x.shape[0] == 0:
        threshold = 1.0 if independence_threshold is None else float(independence_threshold)
        return SelfPacedClusters(np.zeros(0, dtype=np.int64), threshold, 0, 0, 0)

    distance = jaccard_distance(x, k1=k1, k2=k2)
    clusterings = []
    outliers = split = 0
    for name, radius in zip(("tight", "normal", "loose"), eps, strict=True):
        labels, noise = _dbscan_with_singletons(distance, radius, min_samples)
        separated = split_same_image(labels, x, images)
        if name == "normal":
            outliers = noise
            split = int(separated.max()) - int(labels.max())  # each split adds one cluster
        clusterings.append(separated)
    tight, normal, loose = clusterings
    labels, threshold = reliability_filter(
        normal, tight, loose, independence_threshold, independence_quantile
    )
    # Every unreliable sample adds one cluster and no cluster empties.
    unreliable = int(labels.max()) - int(normal.max())
    return SelfPacedClusters(labels, threshold, outliers, split, unreliable)
