"""Run a method's ablation rows on the synthetic set and print them beside a paper's table.

A sweep is a set of trainings of one recipe that differ only in ``method_args`` (or in
the row's own overrides, or its recipe), on a shorter schedule (``--epochs``, with the
learning-rate step at three quarters of it), each evaluated once at its end. Every row
trains in its own folder under ``--out``; an interrupted sweep picks up where it stopped
(finished rows are read back from their ``metrics.jsonl``, an unfinished one resumes
from its ``latest`` checkpoint). The table is also written to ``--table``. The
per-method scripts (``rsiamnet_ablation.py``, ``ssl_ablation.py``, ``cfam_ablation.py``)
hold the rows and the paper's numbers and call :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from personsearch_train.atomic_files import atomic_write_bytes
from personsearch_train.engine.checkpoint import CheckpointFiles
from personsearch_train.engine.config import load_config
from personsearch_train.engine.loop import Trainer


@dataclass(frozen=True)
class AblationRow:
    """One row of a sweep.

    Attributes:
        name: The row's name as the paper's table prints it.
        method_args: ``method_args`` overrides of the recipe for this row.
        paper: Paper numbers in percent by dataset, one per table column (``mAP``,
            ``top-1`` for person search); a dataset the paper does not report is left out.
        overrides: Further ``KEY=VALUE`` overrides of this row (e.g. model settings).
        recipe: This row's recipe, when it is not the sweep's.
    """

    name: str
    method_args: Mapping[str, object] = field(default_factory=dict)
    paper: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    overrides: tuple[str, ...] = ()
    recipe: str | None = None


def _overrides(
    dataset: str, epochs: int, method_args: Mapping[str, object], extra: Sequence[str]
) -> list[str]:
    milestone = max(1, round(epochs * 0.75))
    return [
        f"data.dataset={dataset}",
        f"train.epochs={epochs}",
        f"schedule.milestones=[{milestone}]",
        f"eval.every={epochs}",
        *extra,
        *(f"method_args.{key}={value}" for key, value in method_args.items()),
    ]


def final_metrics(run_dir: Path, epochs: int) -> dict[str, float] | None:
    """The metrics a run logged at epoch ``epochs`` (its ``metrics.jsonl``), or None."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    done = [r for r in rows if r.get("epoch") == epochs]
    return done[-1] if done else None


def train_unless_finished(recipe: str, overrides: list[str], data_root: Path, run_dir: Path) -> bool:
    """Train ``recipe`` into ``run_dir`` unless it finished; resume an interrupted run.

    Returns:
        Whether anything was trained (False: the finished run was left as it is).
    """
    cfg = load_config(recipe, overrides, data_root=data_root)
    latest = CheckpointFiles(run_dir, "latest")
    resume = latest.exists()
    if resume and int(json.loads(latest.metadata.read_text()).get("epoch", 0)) >= cfg.train.epochs:
        return False
    Trainer(cfg, run_dir=run_dir, progress=False).fit(resume=resume)
    return True


def run_row(key: str, row: AblationRow, args: argparse.Namespace) -> tuple[dict[str, float], float | None]:
    """Train, resume or read back one row: its final metrics, and minutes trained now (None: read back)."""
    run_dir = args.reuse.get(key) or args.out / f"{args.dataset}_{key}"
    metrics = final_metrics(run_dir, args.epochs)
    if metrics is None and key in args.reuse:
        raise SystemExit(f"--reuse {key}={run_dir}: that run has no epoch-{args.epochs} evaluation")
    if metrics is not None:
        return metrics, None
    overrides = _overrides(args.dataset, args.epochs, row.method_args, [*(args.set or []), *row.overrides])
    cfg = load_config(row.recipe or args.recipe, overrides, data_root=args.data_root)
    resume = CheckpointFiles(run_dir, "latest").exists()
    start = time.perf_counter()
    Trainer(cfg, run_dir=run_dir, progress=False).fit(resume=resume)
    metrics = final_metrics(run_dir, args.epochs)
    if metrics is None:
        raise SystemExit(f"{run_dir}: training ended without the epoch-{args.epochs} evaluation")
    return metrics, (time.perf_counter() - start) / 60


def main(
    *,
    description: str,
    rows: Mapping[str, AblationRow],
    recipe: str,
    table_title: str,
    paper_note: str,
    default_epochs: int = 4,
    datasets: Sequence[str] = ("cuhk_sysu", "prw"),
    columns: Sequence[tuple[str, str]] = (("mAP", "mAP"), ("top1", "top-1")),
    argv: Sequence[str] | None = None,
) -> int:
    """Parse the command line, run (or read back) the rows and print the table.

    Args:
        description: First line of the calling script's docstring.
        rows: The rows by key (``--rows`` picks some).
        recipe: The default recipe.
        table_title: Header of the rows' name column.
        paper_note: Last line of the table: where the paper's numbers come from.
        default_epochs: Default ``--epochs``.
        datasets: ``--dataset`` choices, the first is the default.
        columns: ``(metric key, header)`` of each column, as the evaluator names the metric.
        argv: Command line (``sys.argv[1:]`` when None).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data-root", type=Path, required=True, help="the synthetic `small` set")
    parser.add_argument("--out", type=Path, required=True, help="folder of the row runs")
    parser.add_argument("--dataset", default=datasets[0], choices=tuple(datasets))
    parser.add_argument(
        "--epochs", type=int, default=default_epochs, help="epochs per row (the full recipes train 16)"
    )
    parser.add_argument("--recipe", default=recipe)
    parser.add_argument("--rows", nargs="+", default=list(rows), choices=list(rows), help="rows to run")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="extra override of every row")
    parser.add_argument("--table", type=Path, help="also write the table here")
    parser.add_argument(
        "--reuse",
        action="append",
        metavar="ROW=RUN_DIR",
        help="read a row from a finished run of the same settings (e.g. the full recipe's run)",
    )
    args = parser.parse_args(argv)
    reuse = {}
    for item in args.reuse or []:
        key, sep, folder = item.partition("=")
        if not sep or key not in rows:
            parser.error(f"--reuse {item!r}: expected ROW=RUN_DIR with ROW one of {', '.join(rows)}")
        reuse[key] = Path(folder)
    args.reuse = reuse

    settings = f" ({', '.join(args.set)})" if args.set else ""
    lines = [
        f"# {datetime.now(timezone.utc):%Y-%m-%dT%H:%MZ}, {platform.processor() or platform.machine()}, "
        f"recipe {args.recipe}{settings}, {args.dataset}, {args.epochs} epochs per row (lr x0.1 at "
        f"{max(1, round(args.epochs * 0.75))})",
        f"{table_title:<38} "
        + " ".join(f"{header:>6}" for _, header in columns)
        + "   "
        + " ".join(f"{'paper ' + header:>12}" for _, header in columns)
        + f"   {'minutes':>7}",
    ]
    print("\n".join(lines), flush=True)
    for key in args.rows:
        row = rows[key]
        metrics, minutes = run_row(key, row, args)
        paper = row.paper.get(args.dataset)
        paper_text = (
            " ".join(f"{value:>12.2f}" for value in paper)
            if paper
            else " ".join(f"{'-':>12}" for _ in columns)
        )
        ours = " ".join(f"{100 * metrics[key]:>6.2f}" for key, _ in columns)
        line = (
            f"{row.name:<38} {ours}   {paper_text}   {'(done)' if minutes is None else f'{minutes:.1f}':>7}"
        )
        lines.append(line)
        print(line, flush=True)
    lines.append(paper_note)
    text = "\n".join(lines) + "\n"
    print(lines[-1])
    if args.table is not None:
        atomic_write_bytes(args.table, text.encode())
    return 0
