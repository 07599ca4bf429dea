"""CGPS/SpCL self-paced clustering: Jaccard distance, same-image split, reliability criterion."""

from __future__ import annotations

import collections
import math

import numpy as np
import pytest
import torch
from personsearch_train.weak_supervision import (
    SelfPacedClusters,
    jaccard_distance,
    reliability_filter,
    self_paced_clusters,
    split_same_image,
)
from personsearch_train.weak_supervision.self_paced_clustering import _dbscan_with_singletons


def _groups(count: int, size: int, dim: int, noise: float, seed: int) -> torch.Tensor:
    """``count`` noisy groups of ``size`` points around random centres, group by group."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(count, dim, generator=g).repeat_interleave(size, 0)
    return centres + noise * torch.randn(count * size, dim, generator=g)


def _reference_jaccard(features: torch.Tensor, k1: int, k2: int) -> tuple[np.ndarray, int]:
    """Slow, direct transcription of the k-reciprocal Jaccard distance, pair by pair.

    Python sets for R(i, k), a dense V, and the Jaccard of Zhong et al. eq. 10 written as
    sum-of-minima over sum-of-maxima. Also returns how many samples the 2/3 expansion
    added, so a test can check that path was exercised.
    """
    x = torch.nn.functional.normalize(features.double(), dim=1).numpy()
    n = len(x)
    k1, k2 = min(k1, n), min(k2, min(k1, n))
    squared = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    ranks = np.argsort(squared, axis=1, kind="stable")[:, :k1]

    def neighbours(i: int, k: int) -> list[int]:
        return ranks[i, : min(k + 1, k1)].tolist()

    def reciprocal(i: int, k: int) -> set[int]:
        return {j for j in neighbours(i, k) if i in neighbours(j, k)}

    half = int(round(k1 / 2))
    v = np.zeros((n, n))
    added = 0
    for i in range(n):
        core = reciprocal(i, k1)
        robust = set(core)
        for c in core:
            candidate = reciprocal(c, half)
            if len(candidate & core) > 2 / 3 * len(candidate):
                added += len(candidate - robust)
                robust |= candidate
        members = sorted(robust)
        weights = np.exp(-squared[i, members])
        v[i, members] = weights / weights.sum()
    v = np.stack([v[ranks[i, :k2]].mean(axis=0) for i in range(n)])
    distance = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            distance[i, j] = 1 - np.minimum(v[i], v[j]).sum() / np.maximum(v[i], v[j]).sum()
    return distance, added


@pytest.mark.parametrize(
    ("features", "k1", "k2"),
    [
        (_groups(8, 5, 8, 0.8, seed=0), 6, 3),  # loose groups: expansion is exercised
        (_groups(8, 5, 8, 0.4, seed=1), 6, 3),
        (_groups(3, 7, 8, 0.5, seed=2), 10, 1),  # no query expansion
        (_groups(1, 5, 4, 1.0, seed=3), 30, 6),  # N < k1: k1 clamped to N
    ],
)
def test_jaccard_distance_matches_direct_reference(features: torch.Tensor, k1: int, k2: int) -> None:
    expected, _ = _reference_jaccard(features, k1, k2)
    actual = jaccard_distance(features, k1=k1, k2=k2)
    assert actual.dtype == np.float32 and actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=0)


def test_reference_case_exercises_the_two_thirds_expansion() -> None:
    _, added = _reference_jaccard(_groups(8, 5, 8, 0.8, seed=0), 6, 3)
    assert added > 0


def test_jaccard_distance_is_symmetric_bounded_and_zero_on_diagonal() -> None:
    distance = jaccard_distance(_groups(10, 12, 32, 0.6, seed=4), k1=20, k2=6)
    assert np.array_equal(distance, distance.T)
    assert np.all(np.diag(distance) == 0)
    assert distance.min() >= 0 and distance.max() <= 1
    assert (distance < 1).any() and (distance == 1).any()  # neighbours share, far pairs do not


def test_jaccard_distance_ignores_feature_scale_and_handles_tiny_inputs() -> None:
    features = _groups(4, 6, 8, 0.3, seed=5)
    scaled = features * torch.linspace(0.5, 3.0, len(features))[:, None]
    np.testing.assert_allclose(jaccard_distance(scaled, k1=8), jaccard_distance(features, k1=8), atol=1e-6)
    assert jaccard_distance(torch.ones(1, 3)).tolist() == [[0.0]]
    assert jaccard_distance(torch.zeros(0, 3)).shape == (0, 0)


def test_dbscan_outliers_become_singletons_after_the_clusters() -> None:
    # 0-3 within 0.1 of each other (a cluster at min_samples 4); 4 and 5 far from all.
    distance = np.ones((6, 6), dtype=np.float32)
    distance[:4, :4] = 0.1
    np.fill_diagonal(distance, 0.0)
    labels, outliers = _dbscan_with_singletons(distance, eps=0.5, min_samples=4)
    assert labels.tolist() == [0, 0, 0, 0, 1, 2] and outliers == 2
    assert labels.dtype == np.int64


def _circle(*degrees: float) -> np.ndarray:
    radians = np.radians(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1)


def test_split_same_image_keeps_the_member_closest_to_the_centroid() -> None:
    # Cluster 0 = {0, 1, 2, 3}, centroid near 16 degrees; 0, 1, 2 share image 7 and 1
    # (10 degrees) is closest, so 0 and 2 leave. Cluster 1 = {4, 5, 6}, centroid near
    # 103 degrees; 4 and 5 share image 9 and 5 (100 degrees) stays.
    features = _circle(0, 10, 50, 5, 90, 100, 120)
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    images = np.array([7, 7, 7, 8, 9, 9, 10])
    result = split_same_image(labels, features, images)
    assert result.tolist() == [0, 1, 2, 1, 3, 4, 4]
    assert result.dtype == np.int64
    # Torch inputs give the same answer; a clustering without conflicts is unchanged.
    torch_result = split_same_image(torch.tensor(labels), torch.tensor(features), torch.tensor(images))
    assert torch_result.tolist() == result.tolist()
    assert split_same_image(labels, features, np.arange(7)).tolist() == [0, 0, 0, 0, 1, 1, 1]


def test_split_same_image_uses_the_centroid_of_the_whole_cluster() -> None:
    # Image 3 holds 0 (0 degrees) and 1 (40 degrees); the other members (35, 45 degrees)
    # pull the centroid to 30 degrees, so 1 stays although 0 is the cluster's first member.
    features = _circle(0, 40, 35, 45)
    result = split_same_image(np.zeros(4, dtype=np.int64), features, np.array([3, 3, 4, 5]))
    assert result.tolist() == [0, 1, 1, 1]


# A toy clustering with hand-computed criteria:
#   normal: A = {0, 1, 2, 3}, B = {4, 5}, C = {6}, D = {7}
#   tight:  A splits into {0, 1, 2} and {3}       -> R_comp: 0-2: 1 - 3/4 = 0.25, 3: 0.75
#   loose:  B absorbs 6 into {4, 5, 6}            -> R_indep: 4, 5: 1 - 2/3, 6: 1 - 1/3
# Per-cluster minima: A comp 0.25 / indep 0; B comp 0 / indep 1/3; C 0 / 2/3; D 0 / 0.
# Multi-member clusters A, B: sorted indep minima [0, 1/3]; position min(1, round(1.8)) = 1.
_NORMAL = np.array([0, 0, 0, 0, 1, 1, 2, 3])
_TIGHT = np.array([0, 0, 0, 1, 2, 2, 3, 4])
_LOOSE = np.array([0, 0, 0, 0, 1, 1, 1, 2])


def test_reliability_filter_computes_the_threshold_and_moves_incompact_samples() -> None:
    labels, threshold = reliability_filter(_NORMAL, _TIGHT, _LOOSE, None, 0.9)
    assert threshold == pytest.approx(1 / 3)
    # B's R_indep equals the threshold (not above); C is above but a singleton. Only 3
    # (R_comp 0.75 > A's 0.25) leaves.
    assert labels.tolist() == [0, 0, 0, 1, 2, 2, 3, 4]
    assert labels.dtype == np.int64


def test_reliability_filter_reuses_a_passed_threshold() -> None:
    labels, threshold = reliability_filter(_NORMAL, _TIGHT, _LOOSE, 0.2, 0.9)
    assert threshold == 0.2
    # B (1/3 > 0.2) dissolves: 4 leaves, 5 stays as B's last member.
    assert labels.tolist() == [0, 0, 0, 1, 2, 3, 4, 5]


def test_reliability_filter_quantile_picks_the_position() -> None:
    _, threshold = reliability_filter(_NORMAL, _TIGHT, _LOOSE, None, 0.0)
    assert threshold == 0.0
    # One cluster that falls apart at the tight eps: every member has R_comp 1 - 1/3, none
    # exceeds the cluster minimum, so the cluster stays (compactness is relative).
    one = np.zeros(3, dtype=np.int64)
    labels, threshold = reliability_filter(one, np.arange(3), one, None, 0.9)
    assert threshold == 0.0 and labels.tolist() == [0, 0, 0]


def test_reliability_filter_without_multi_member_clusters_rejects_nothing() -> None:
    labels, threshold = reliability_filter(np.arange(4), np.arange(4), np.zeros(4, dtype=np.int64), None)
    assert threshold == 1.0 and labels.tolist() == [0, 1, 2, 3]


def _reference_reliability(
    normal: np.ndarray, tight: np.ndarray, loose: np.ndarray, threshold: float | None, quantile: float
) -> tuple[list[int], float]:
    """Dense, sample-by-sample transcription of the criterion (N x N same-cluster masks)."""

    def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        same_a, same_b = a[:, None] == a[None, :], b[:, None] == b[None, :]
        return (same_a & same_b).sum(1) / (same_a | same_b).sum(1)

    comp, indep = 1 - iou(normal, tight), 1 - iou(normal, loose)
    comp_min = {c: comp[normal == c].min() for c in set(normal.tolist())}
    indep_min = {c: indep[normal == c].min() for c in set(normal.tolist())}
    size = collections.Counter(normal.tolist())
    if threshold is None:
        values = sorted(indep_min[c] for c in indep_min if size[c] > 1)
        threshold = values[min(len(values) - 1, round(len(values) * quantile))] if values else 1.0
    result, remaining, next_label = normal.tolist(), dict(size), max(size) + 1
    for i, c in enumerate(normal.tolist()):
        if (indep_min[c] > threshold or comp[i] > comp_min[c]) and remaining[c] > 1:
            result[i], next_label = next_label, next_label + 1
            remaining[c] -= 1
    first: dict[int, int] = {}
    return [first.setdefault(label, len(first)) for label in result], float(threshold)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("threshold", [None, 0.25])
def test_reliability_filter_matches_dense_reference(seed: int, threshold: float | None) -> None:
    rng = np.random.default_rng(seed)
    normal = rng.integers(0, 8, 40)
    tight = normal * 2 + (rng.random(40) < 0.3)  # a refinement, as a smaller eps gives
    loose = np.where(rng.random(40) < 0.2, normal // 2, normal + 100)  # partly merged
    quantile = [0.9, 0.5, 0.0][seed % 3]
    expected, expected_threshold = _reference_reliability(normal, tight, loose, threshold, quantile)
    labels, used = reliability_filter(normal, tight, loose, threshold, quantile)
    assert labels.tolist() == expected
    assert used == pytest.approx(expected_threshold)


def _scene() -> tuple[torch.Tensor, torch.Tensor]:
    """Three groups of 12 (each person in its own image but 0 and 1 share one) and 3 strays."""
    features = torch.cat(
        [_groups(3, 12, 16, 0.05, seed=6), torch.randn(3, 16, generator=torch.Generator().manual_seed(7))]
    )
    images = torch.arange(len(features))
    images[1] = images[0]
    return features, images


def test_self_paced_clusters_end_to_end() -> None:
    features, images = _scene()
    result = self_paced_clusters(features, images, k1=10, k2=1)
    assert isinstance(result, SelfPacedClusters)
    labels = result.labels
    assert labels.dtype == np.int64 and labels.shape == (39,)
    _, first = np.unique(labels, return_index=True)
    assert np.all(np.diff(first) > 0) and labels.max() + 1 == len(first)  # numbered by first member
    assert len({labels[36], labels[37], labels[38]}) == 3
    assert all((labels == labels[i]).sum() == 1 for i in (36, 37, 38))  # strays are singletons
    assert result.outliers >= 3
    assert labels[0] != labels[1] and result.split_same_image == 1  # same image: separated
    group = np.repeat(np.arange(3), 12)
    for cluster in np.unique(labels[:36]):
        assert len(set(group[labels[:36] == cluster].tolist())) == 1  # no mixed groups
    for g in range(3):  # each group keeps a big cluster
        assert np.bincount(labels[:36][group == g]).max() >= 8
    assert 0.0 <= result.independence_threshold <= 1.0


def test_self_paced_clusters_is_deterministic_and_passes_the_threshold_through() -> None:
    features, images = _scene()
    first = self_paced_clusters(features, images, k1=10, k2=3)
    second = self_paced_clusters(features.clone(), images.numpy(), k1=10, k2=3)
    assert np.array_equal(first.labels, second.labels)
    counts = ("independence_threshold", "outliers", "split_same_image", "unreliable")
    assert [getattr(first, name) for name in counts] == [getattr(second, name) for name in counts]
    reused = self_paced_clusters(features, images, k1=10, k2=3, independence_threshold=0.5)
    assert reused.independence_threshold == 0.5
    empty = self_paced_clusters(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    assert empty.labels.shape == (0,) and math.isclose(empty.independence_threshold, 1.0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: jaccard_distance(torch.ones(4)), r"\[N, D\]"),
        (lambda: jaccard_distance(torch.ones(4, 2, dtype=torch.int64)), "float"),
        (lambda: jaccard_distance(torch.tensor([[1.0, 0.0], [float("nan"), 1.0]])), "NaN"),
        (lambda: jaccard_distance(torch.tensor([[1.0, 0.0], [0.0, 0.0]])), "all-zero row"),
        (lambda: jaccard_distance(torch.ones(4, 2), k1=0), "k1 and k2"),
        (lambda: self_paced_clusters(torch.ones(4, 2), torch.arange(3)), "one entry per sample"),
        (lambda: self_paced_clusters(torch.ones(4, 2), torch.ones(4)), "integer"),
        (lambda: self_paced_clusters(torch.ones(4, 2), torch.arange(4), eps=(0.7, 0.68, 0.72)), "ascending"),
        (lambda: self_paced_clusters(torch.ones(4, 2), torch.arange(4), eps=(0.7, 0.72)), "three"),
        (lambda: self_paced_clusters(torch.ones(4, 2), torch.arange(4), min_samples=0), "min_samples"),
        (
            lambda: self_paced_clusters(torch.ones(4, 2), torch.arange(4), independence_threshold=1.5),
            "independence_threshold",
        ),
        (lambda: reliability_filter(np.zeros(3), np.zeros(3), np.zeros(3)), "integer"),
        (lambda: reliability_filter(np.zeros(3, int), np.zeros(2, int), np.zeros(3, int)), "tight"),
        (
            lambda: reliability_filter(np.zeros(3, int), np.zeros(3, int), np.zeros(3, int), None, 1.5),
            "quantile",
        ),
        (lambda: split_same_image(np.zeros(3, int), np.ones((2, 2)), np.zeros(3, int)), "labels"),
    ],
)
def test_bad_input_raises_value_error(call, message: str) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=message):
        call()


def test_non_tensor_features_raise_type_error() -> None:
    with pytest.raises(TypeError, match="torch.Tensor"):
        jaccard_distance(np.ones((4, 2)))  # type: ignore[arg-type]
