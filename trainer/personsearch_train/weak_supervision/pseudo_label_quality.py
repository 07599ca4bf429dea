"""How good a method's pseudo identities are, measured against identities training never sees.

Weakly supervised methods retrain each epoch on clusters of their own embeddings. Where
the data does have identities (the synthetic sets, or a real dataset whose labels a user
withholds from training), the clusters can be scored as a pair classifier: over every
pair of labelled people, *precision* is the share of pairs put in one cluster that are
one identity, *recall* the share of same-identity pairs put in one cluster. The labels
are read for this report only and never reach training (the label-permutation tests of
each method prove it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from personsearch_train.atomic_files import atomic_replace, atomic_write_bytes

__all__ = [
    "PairScores",
    "PseudoLabelReport",
    "cluster_sizes_summary",
    "multilabel_pair_precision_recall",
    "pair_precision_recall",
]


@dataclass(frozen=True)
class PairScores:
    """Same-identity pair scores of a clustering.

    Attributes:
        precision: True same-identity pairs / pairs in one cluster (1.0 when no pair is).
        recall: True same-identity pairs in one cluster / same-identity pairs (1.0 when
            there are none).
        predicted_pairs: Pairs of labelled people the clustering puts together.
        true_pairs: Pairs of labelled people that share an identity.
    """

    precision: float
    recall: float
    predicted_pairs: int
    true_pairs: int


def _pairs(counts: np.ndarray) -> int:
    counts = counts.astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def pair_precision_recall(pseudo_labels: np.ndarray, identities: np.ndarray) -> PairScores:
    """Pair precision and recall of ``pseudo_labels`` against ``identities``.

    Args:
        pseudo_labels: ``[N]`` int64 cluster of each person.
        identities: ``[N]`` int64 true identity, ``-1`` for an unlabelled person (left
            out of every pair).

    Returns:
        The scores.

    Raises:
        ValueError: The arrays differ in shape.
    """
    pseudo = np.asarray(pseudo_labels, dtype=np.int64).reshape(-1)
    truth = np.asarray(identities, dtype=np.int64).reshape(-1)
    if pseudo.shape != truth.shape:
        raise ValueError(f"{pseudo.shape[0]} pseudo labels but {truth.shape[0]} identities")
    labelled = truth >= 0
    pseudo, truth = pseudo[labelled], truth[labelled]
    if pseudo.size == 0:
        return PairScores(1.0, 1.0, 0, 0)
    _, joint = np.unique(np.stack([pseudo, truth], axis=1), axis=0, return_counts=True)
    agreeing = _pairs(joint)
    predicted = _pairs(np.unique(pseudo, return_counts=True)[1])
    true = _pairs(np.unique(truth, return_counts=True)[1])
    return PairScores(
        precision=agreeing / predicted if predicted else 1.0,
        recall=agreeing / true if true else 1.0,
        predicted_pairs=predicted,
        true_pairs=true,
    )


def multilabel_pair_precision_recall(positives: np.ndarray, identities: np.ndarray) -> PairScores:
    """Pair precision and recall of per-person positive sets (multi-labels) against identities.

    Multi-labels need not be symmetric (``j`` may be a positive of ``i`` but not the
    reverse), so pairs are ordered: ``(i, j)`` with ``i != j``, both labelled, counts as
    predicted when ``positives[i, j]`` and as true when they share an identity.

    Args:
        positives: ``[N, N]`` bool, row ``i`` the positive set of person ``i``.
        identities: ``[N]`` int64 true identity, ``-1`` for an unlabelled person.

    Returns:
        The scores (``predicted_pairs`` and ``true_pairs`` count ordered pairs).

    Raises:
        ValueError: Shapes disagree.
    """
    positives = np.asarray(positives, dtype=bool)
    truth = np.asarray(identities, dtype=np.int64).reshape(-1)
    if positives.shape != (truth.size, truth.size):
        raise ValueError(f"positives must be [{truth.size}, {truth.size}], got {positives.shape}")
    labelled = np.flatnonzero(truth >= 0)
    chosen = positives[np.ix_(labelled, labelled)].copy()
    np.fill_diagonal(chosen, False)
    same = truth[labelled, None] == truth[None, labelled]
    np.fill_diagonal(same, False)
    predicted, true = int(chosen.sum()), int(same.sum())
    agreeing = int((chosen & same).sum())
    return PairScores(
        precision=agreeing / predicted if predicted else 1.0,
        recall=agreeing / true if true else 1.0,
        predicted_pairs=predicted,
        true_pairs=true,
    )


def cluster_sizes_summary(pseudo_labels: np.ndarray) -> dict[str, int]:
    """``clusters``, ``singletons`` and ``largest`` cluster size of a labelling ``[N]``."""
    sizes = np.unique(np.asarray(pseudo_labels, dtype=np.int64), return_counts=True)[1]
    return {
        "people": int(sizes.sum()),
        "clusters": int(len(sizes)),
        "singletons": int((sizes == 1).sum()),
        "largest": int(sizes.max()) if len(sizes) else 0,
    }


class PseudoLabelReport:
    """Per-epoch pseudo-label statistics, kept in the run folder.

    Every :meth:`add` rewrites ``pseudo_labels.jsonl`` (one JSON object per epoch) and
    ``plots/pseudo_labels.png`` atomically, so an interrupted run leaves both whole.
    The rows also travel in the method's resume state (:meth:`rows`), so a resumed run
    continues the same files.

    Args:
        run_dir: The run folder (None: keep the rows, write nothing; tests, dry runs).
        title: Plot title (the method's name).
    """

    def __init__(self, run_dir: Path | None, *, title: str) -> None:
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.title = title
        self._rows: list[dict[str, object]] = []

    def rows(self) -> list[dict[str, object]]:
        """The rows so far (JSON types), oldest first."""
        return [dict(row) for row in self._rows]

    def restore(self, rows: list[dict[str, object]]) -> None:
        """Continue from rows a resumed run saved."""
        self._rows = [dict(row) for row in rows]

    def add(
        self,
        epoch: int,
        pseudo_labels: np.ndarray,
        identities: np.ndarray | None,
        extra: dict[str, float] | None = None,
    ) -> dict[str, object]:
        """Score one epoch's labels, store the row and rewrite the files.

        Args:
            epoch: The epoch the labels are for (0-based).
            pseudo_labels: ``[N]`` int64 cluster per training person.
            identities: ``[N]`` int64 hidden identities (``-1`` unlabelled), or None
                when the data has none: the row then holds cluster sizes only.
            extra: More scores of the epoch (JSON numbers), stored in the row; a pair
                ``<name>_precision`` / ``<name>_recall`` is also plotted (a method's
                second labelling, such as SSL's multi-labels).

        Returns:
            The row written.
        """
        row: dict[str, object] = {"epoch": int(epoch), **cluster_sizes_summary(pseudo_labels)}
        if identities is not None and bool((np.asarray(identities) >= 0).any()):
            row.update({k: v for k, v in asdict(pair_precision_recall(pseudo_labels, identities)).items()})
        row.update(extra or {})
        self._rows = [r for r in self._rows if r["epoch"] != row["epoch"]] + [row]
        self._write()
        return row

    def _write(self) -> None:
        if self.run_dir is None:
            return
        text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in self._rows)
        atomic_write_bytes(self.run_dir / "pseudo_labels.jsonl", text.encode())
        self._plot(self.run_dir / "plots" / "pseudo_labels.png")

    def _plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        epochs = [int(r["epoch"]) + 1 for r in self._rows]
        figure, (scores, counts) = plt.subplots(1, 2, figsize=(10, 3.6))
        if all("precision" in r for r in self._rows):
            names = [""] + sorted(
                k[: -len("_precision")]
                for k in self._rows[-1]
                if k.endswith("_precision") and f"{k[: -len('_precision')]}_recall" in self._rows[-1]
            )
            for name in names:
                prefix = f"{name}_" if name else ""
                for metric, marker in (("precision", "o"), ("recall", "s")):
                    # Precision of a labelling with no pair (every person alone, as in
                    # instance epochs) is a convention, not a measurement: not drawn.
                    points = [
                        (e, r[f"{prefix}{metric}"])
                        for e, r in zip(epochs, self._rows, strict=True)
                        if f"{prefix}{metric}" in r
                        and (metric == "recall" or r.get(f"{prefix}predicted_pairs", 1) > 0)
                    ]
                    if points:
                        scores.plot(
                            *zip(*points, strict=True),
                            marker=marker,
                            linestyle="--" if name else "-",
                            label=f"{name or 'pair'} {metric}",
                        )
            scores.set_ylim(0.0, 1.02)
            scores.legend(loc="upper right", fontsize="small")
        else:
            scores.text(0.5, 0.5, "no identities to score against", ha="center", va="center")
        scores.set_xlabel("epoch")
        scores.set_title("pseudo labels vs hidden identities")
        counts.plot(epochs, [r["clusters"] for r in self._rows], marker="o", label="clusters")
        counts.plot(epochs, [r["singletons"] for r in self._rows], marker="s", label="singletons")
        counts.set_xlabel("epoch")
        counts.set_title(f"{self.title}: clusters of {self._rows[-1]['people']} people")
        counts.legend(loc="upper right")
        figure.tight_layout()
        with atomic_replace(path) as tmp:
            figure.savefig(tmp, format="png", dpi=110)
        plt.close(figure)
