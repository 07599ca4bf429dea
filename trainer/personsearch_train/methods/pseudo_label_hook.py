"""The base of every weakly supervised method's relabelling hook: one record per epoch.

Not a method; it lives here because it is a :class:`TrainingHook` and methods import it.

A method's hook decides *how* it labels (first-neighbour clusters, self-paced DBSCAN,
instance labels); this base keeps *what every such hook does alike*: which epoch the
current labels are for (so a run resumed inside an epoch keeps its checkpoint's labels),
the :class:`~personsearch_train.weak_supervision.PseudoLabelReport` moved into the run
folder once the run starts, the one-line log of each labelling, and the resume state.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from personsearch_train.engine.hooks import TrainingHook
from personsearch_train.weak_supervision.pseudo_label_quality import PseudoLabelReport

if TYPE_CHECKING:
    from personsearch_train.engine.loop import Trainer

__all__ = ["PseudoLabelHook"]


class PseudoLabelHook(TrainingHook):
    """Base of the per-epoch pseudo-label hooks: the epoch labelled, the report, the log.

    Args:
        title: The method's name on the report's plot.
        hidden_identities: ``[N]`` int64 identity of each person for the report only
            (``-1`` unlabelled), or None.

    Attributes:
        clustered_epoch: The epoch the current labels are for (-1: none yet).
        report: The per-epoch report (in the run folder once training started).
    """

    def __init__(self, *, title: str, hidden_identities: np.ndarray | None) -> None:
        self.title = title
        self.hidden_identities = hidden_identities
        self.clustered_epoch = -1
        self.report = PseudoLabelReport(None, title=title)

    def before_train(self, trainer: Trainer) -> None:
        """Write the report into the run folder (main process only)."""
        if trainer.dist.is_main:
            rows = self.report.rows()
            self.report = PseudoLabelReport(Path(trainer.run_dir), title=self.title)
            self.report.restore(rows)

    def record(
        self,
        epoch: int,
        labels: np.ndarray,
        *,
        log: bool,
        detail: str = "",
        extra: dict[str, float] | None = None,
    ) -> dict[str, object]:
        """Note that ``labels`` are ``epoch``'s, add them to the report and log a line.

        Args:
            epoch: The epoch labelled (0-based).
            labels: ``[N]`` int64 pseudo label of each person.
            log: Print the line (the main process).
            detail: How the labels came about, printed in brackets after the counts.
            extra: More scores for the report row.

        Returns:
            The report row.
        """
        self.clustered_epoch = epoch
        row = self.report.add(epoch, labels, self.hidden_identities, extra)
        if log:
            scores = (
                f", pair precision {row['precision']:.3f} recall {row['recall']:.3f}"
                if "precision" in row
                else ""
            )
            tqdm.write(
                f"epoch {epoch + 1}: {row['clusters']} pseudo identities of {row['people']} people, "
                f"{row['singletons']} singletons{f' ({detail})' if detail else ''}{scores}"
            )
        return row

    def state_dict(self) -> dict[str, Any]:
        """The epoch the labels are for, and the report so far."""
        return {"clustered_epoch": self.clustered_epoch, "report": self.report.rows()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.clustered_epoch = int(state["clustered_epoch"])
        self.report.restore(list(state["report"]))
