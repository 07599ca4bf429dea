"""Pseudo identities from embeddings: DBSCAN on cosine distance (scikit-learn)."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["cluster_features"]


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
