"""Pseudo identities from embeddings: the clusterings weakly supervised methods retrain on.

* :func:`cluster_features`: DBSCAN on cosine distance (scikit-learn), outliers as singletons.
* :func:`first_neighbour_clusters`: R-SiamNet's parameter-free clustering (Han et al.,
  ICCV 2021, section 3.3, after FINCH, Sarfraz et al., CVPR 2019): each person is linked
  to its first neighbour, people sharing a first neighbour are linked, and two people of
  one scene image never end up in one cluster.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["cluster_features", "first_neighbour_clusters"]


def cluster_features(features: torch.Tensor, *, eps: float = 0.5, min_samples: int = 2) -> np.ndarray:
    """DBSCAN on cosine distances; outliers become singleton clusters.

    Args:
        features: ``[N, D]`` float, L2-normalised.
        eps: DBSCAN neighbourhood radius in cosine distance.
        min_samples: DBSCAN core-point size.

    Returns:
        ``[N]`` int64 cluster labels ``0..C-1`` (every sample has one).
    """
    from sklearn.cluster import DBSCAN

    x = features.detach().cpu().double().numpy()
    distance = np.clip(1.0 - x @ x.T, 0.0, 2.0)
    labels = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(distance)
    next_label = int(labels.max()) + 1 if len(labels) else 0
    for i in np.flatnonzero(labels < 0):
        labels[i] = next_label
        next_label += 1
    return labels.astype(np.int64)


def _first_neighbours(
    x: torch.Tensor, image_ids: torch.Tensor, chunk_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest other-image neighbour of each row of ``x`` ([N, D] float32, CPU), and its cosine.

    A row with no other-image candidate gets neighbour ``-1`` and similarity ``-inf``.
    """
    images = image_ids.detach().cpu()
    count = x.shape[0]
    neighbour = np.full(count, -1, dtype=np.int64)
    similarity = np.full(count, -np.inf, dtype=np.float64)
    for start in range(0, count, chunk_size):
        rows = slice(start, min(start + chunk_size, count))
        sims = x[rows] @ x.t()
        # Same-image people (the row itself included) can never be linked, so they are
        # not candidates: otherwise a person whose closest match stands beside them in
        # the scene would be left unlinked although another image holds a good match.
        sims.masked_fill_(images[rows, None] == images[None, :], float("-inf"))
        best, index = sims.max(dim=1)
        found = torch.isfinite(best).numpy()
        neighbour[rows] = np.where(found, index.numpy(), -1)
        similarity[rows] = best.double().numpy()
    return neighbour, similarity


def first_neighbour_clusters(
    features: torch.Tensor, image_ids: torch.Tensor, *, chunk_size: int = 2048
) -> np.ndarray:
    """R-SiamNet's clustering: first-neighbour links, never two people of one image together.

    ``i`` and ``j`` are linked when ``j`` is ``i``'s first neighbour, ``i`` is ``j``'s, or
    both have the same first neighbour (paper condition 1), and they come from different
    images (condition 2); clusters are the connected components. The paper states the
    image condition per link, but a chain ``i - k - j`` can still join two people of one
    image; since the same prior says they are different people, links are applied in
    order of decreasing cosine similarity and a link that would put two people of one
    image into one component is dropped (a cannot-link union-find). First neighbours are
    looked for among the other images' people only (see :func:`_first_neighbours`).
    People who share a first neighbour are linked through it, and, where a dropped link
    broke that path, directly to the next one in order of similarity to it.

    Args:
        features: ``[N, D]`` float, L2-normalised embeddings.
        image_ids: ``[N]`` int64 scene image of each person.
        chunk_size: Rows per similarity block (memory is ``chunk_size * N`` floats).

    Returns:
        ``[N]`` int64 labels ``0..C-1``, numbered in order of each cluster's first member;
        deterministic for given inputs.

    Raises:
        ValueError: Shapes disagree.
    """
    if features.dim() != 2 or image_ids.shape != (features.shape[0],):
        raise ValueError(
            "features must be [N, D] and image_ids [N]; "
            f"got {tuple(features.shape)} and {tuple(image_ids.shape)}"
        )
    count = features.shape[0]
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    x = features.detach().float().cpu()
    neighbour, similarity = _first_neighbours(x, image_ids, chunk_size)
    edges: list[tuple[float, int, int]] = [
        (float(similarity[i]), i, int(neighbour[i])) for i in range(count) if neighbour[i] >= 0
    ]
    # Condition "same first neighbour": chain the members of each group in order of
    # similarity to their shared neighbour (the group is one component when all links hold).
    order = np.lexsort((np.arange(count), -similarity, neighbour))
    for a, b in zip(order[:-1], order[1:], strict=True):
        if neighbour[a] >= 0 and neighbour[a] == neighbour[b]:
            edges.append((float(x[a] @ x[b]), int(a), int(b)))
    edges.sort(key=lambda edge: (-edge[0], edge[1], edge[2]))

    image_of = image_ids.detach().cpu().numpy()
    parent = np.arange(count)
    members_images: list[set[int]] = [{int(image_of[i])} for i in range(count)]

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    for _, a, b in edges:
        root_a, root_b = find(a), find(b)
        if root_a == root_b or not members_images[root_a].isdisjoint(members_images[root_b]):
            continue
        if len(members_images[root_a]) < len(members_images[root_b]):
            root_a, root_b = root_b, root_a
        parent[root_b] = root_a
        members_images[root_a] |= members_images[root_b]
        members_images[root_b] = set()
    roots = np.array([find(i) for i in range(count)])
    _, labels = np.unique(roots, return_inverse=True)
    # Renumber by first member so the labels do not depend on union order.
    first_seen: dict[int, int] = {}
    renumbered = np.empty(count, dtype=np.int64)
    for i, label in enumerate(labels):
        renumbered[i] = first_seen.setdefault(int(label), len(first_seen))
    return renumbered
