"""R-SiamNet's first-neighbour clustering and the pseudo-label quality report, on cases with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from personsearch_train.weak_supervision import (
    PseudoLabelReport,
    first_neighbour_clusters,
    pair_precision_recall,
)


def _points(*angles_degrees: float) -> torch.Tensor:
    """Unit vectors on a circle: cosine similarity falls with the angle between them."""
    radians = torch.tensor(angles_degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([radians.cos(), radians.sin()], dim=1).float()


def _same_partition(labels: np.ndarray, groups: list[list[int]]) -> bool:
    expected = np.empty(len(labels), dtype=np.int64)
    for g, members in enumerate(groups):
        expected[members] = g
    return all(
        (labels[i] == labels[j]) == (expected[i] == expected[j])
        for i in range(len(labels))
        for j in range(len(labels))
    )


def test_first_neighbour_chain_merges_and_far_groups_stay_apart() -> None:
    # 0 -> 1 (1's first neighbour is 2), 2 -> 1: a chain 0-1-2 through first-neighbour links;
    # 3 and 4 are each other's first neighbour, far from the chain.
    features = _points(0, 9, 17, 120, 124)
    labels = first_neighbour_clusters(features, torch.arange(5))
    assert _same_partition(labels, [[0, 1, 2], [3, 4]])
    assert labels.tolist() == [0, 0, 0, 1, 1]  # numbered by first member
    assert labels.dtype == np.int64


def test_people_sharing_a_first_neighbour_are_linked() -> None:
    # 0 and 2 both have 1 as first neighbour (condition kappa_i = kappa_j).
    labels = first_neighbour_clusters(_points(-10, 0, 12), torch.arange(3))
    assert len(set(labels.tolist())) == 1


def test_two_people_of_one_image_never_share_a_cluster() -> None:
    # 0 and 1 are nearly identical but stand in one image: each must link across images
    # instead (0 to 2, 1 to 3), and no chain may put them together.
    features = _points(0, 1, 3, -2)
    image_ids = torch.tensor([7, 7, 8, 9])
    labels = first_neighbour_clusters(features, image_ids)
    assert labels[0] != labels[1]
    for image in image_ids.unique():
        members = labels[(image_ids == image).numpy()]
        assert len(set(members.tolist())) == len(members)


def test_cannot_link_holds_for_long_chains() -> None:
    # A chain 0 - 1 - 2 - 3 - 4 of first neighbours whose two ends share an image.
    features = _points(0, 10, 19, 27, 34)
    image_ids = torch.tensor([0, 1, 2, 3, 0])
    labels = first_neighbour_clusters(features, image_ids)
    assert labels[0] != labels[4]
    assert len(set(labels.tolist())) == 2


def test_person_alone_in_the_data_stays_a_singleton() -> None:
    # Three people of one image and nobody else: there is no one to link to.
    labels = first_neighbour_clusters(_points(0, 1, 2), torch.zeros(3, dtype=torch.int64))
    assert labels.tolist() == [0, 1, 2]


def test_isolated_point_stays_a_singleton_when_its_only_link_is_forbidden() -> None:
    # The rule has no distance threshold: a far point still links to its first neighbour
    # (here 4 -> 0). It stays alone only when that link would join two people of one
    # image: 4 shares an image with 1, which is already in 0's cluster.
    features = _points(0, 6, 12, 180)
    image_ids = torch.tensor([0, 1, 2, 1])
    labels = first_neighbour_clusters(features, image_ids)
    assert _same_partition(labels, [[0, 1, 2], [3]])
    # In another image it would join: the distance alone never isolates a point.
    joined = first_neighbour_clusters(features, torch.tensor([0, 1, 2, 3]))
    assert len(set(joined.tolist())) == 1


def test_result_does_not_depend_on_chunk_size_and_shapes_are_checked() -> None:
    generator = torch.Generator().manual_seed(0)
    features = torch.nn.functional.normalize(torch.randn(60, 8, generator=generator), dim=1)
    image_ids = torch.randint(0, 20, (60,), generator=generator)
    full = first_neighbour_clusters(features, image_ids)
    np.testing.assert_array_equal(full, first_neighbour_clusters(features, image_ids, chunk_size=7))
    for image in image_ids.unique():
        members = full[(image_ids == image).numpy()]
        assert len(set(members.tolist())) == len(members)
    with pytest.raises(ValueError, match="image_ids"):
        first_neighbour_clusters(features, image_ids[:5])
    assert first_neighbour_clusters(features[:0], image_ids[:0]).shape == (0,)


def test_pair_precision_recall_by_hand() -> None:
    # Clusters {0,1,2}, {3,4}; identities {0,1}, {2,3}, {4}: predicted pairs 01 02 12 34,
    # true pairs 01 23; correct 01 -> precision 1/4, recall 1/2.
    scores = pair_precision_recall(np.array([5, 5, 5, 6, 6]), np.array([0, 0, 1, 1, 2]))
    assert (scores.precision, scores.recall) == (0.25, 0.5)
    assert (scores.predicted_pairs, scores.true_pairs) == (4, 2)
    # Unlabelled people (-1) are left out of every pair.
    scores = pair_precision_recall(np.array([0, 0, 0]), np.array([3, 3, -1]))
    assert (scores.precision, scores.recall, scores.predicted_pairs) == (1.0, 1.0, 1)
    with pytest.raises(ValueError):
        pair_precision_recall(np.zeros(3, np.int64), np.zeros(2, np.int64))


def test_report_writes_rows_and_plot(tmp_path) -> None:
    report = PseudoLabelReport(tmp_path, title="test")
    report.add(0, np.array([0, 0, 1, 2]), np.array([4, 4, 5, 5]))
    row = report.add(1, np.array([0, 0, 1, 1]), np.array([4, 4, 5, 5]))
    assert (row["clusters"], row["singletons"], row["precision"], row["recall"]) == (2, 0, 1.0, 1.0)
    lines = [json.loads(x) for x in (tmp_path / "pseudo_labels.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1] and lines[0]["recall"] == 0.5
    assert (tmp_path / "plots" / "pseudo_labels.png").read_bytes().startswith(b"\x89PNG")
    # No identities: sizes only.
    assert "precision" not in report.add(2, np.array([0, 1]), None)
