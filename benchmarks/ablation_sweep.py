"""Run a method's ablation rows on the synthetic set and print them beside a paper's table.

A sweep is a set of trainings of one recipe that differ only in ``method_args``, on a
shorter schedule (``--epochs``, with the learning-rate step at three quarters of it),
each evaluated once at its end. Every row trains in its own folder under ``--out``; an
interrupted sweep picks up where it stopped (finished rows are read back from their
``metrics.jsonl``, an unfinished one resumes from its ``latest`` checkpoint). The table
is also written to ``--table``. The per-method scripts (``rsiamnet_ablation.py``,
``ssl_ablation.py``) hold the rows and the paper's numbers and call :func:`main`.
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
        paper: Paper ``(mAP, top-1)`` in percent by dataset (``cuhk_sysu``, ``prw``);
            a dataset the paper does not report is left out.
    """

    name: str
    method_args: Mapping[str, object] = field(default_factory=dict)
    paper: Mapping[str, tuple[float, float]] = field(default_factory=dict)


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


def _final_metrics(run_dir: Path, epochs: int) -> dict[str, float] | None:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    done = [r for r in rows if r.get("epoch") == epochs]
    return done[-1] if done else None


def run_row(key: str, row: AblationRow, args: argparse.Namespace) -> tuple[dict[str, float], float | None]:
    """Train, resume or read back one row: its final metrics, and minutes trained now (None: read back)."""
    run_dir = args.out / f"{args.dataset}_{key}"
    metrics = _final_metrics(run_dir, args.epochs)
    if metrics is not None:
        return metrics, None
    overrides = _overrides(args.dataset, args.epochs, row.method_args, args.set or [])
    cfg = load_config(args.recipe, overrides, data_root=args.data_root)
    resume = CheckpointFiles(run_dir, "latest").exists()
    start = time.perf_counter()
    Trainer(cfg, run_dir=run_dir, progress=False).fit(resume=resume)
    metrics = _final_metrics(run_dir, args.epochs)
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
        argv: Command line (``sys.argv[1:]`` when None).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data-root", type=Path, required=True, help="the synthetic `small` set")
    parser.add_argument("--out", type=Path, required=True, help="folder of the row runs")
    parser.add_argument("--dataset", default="cuhk_sysu", choices=("cuhk_sysu", "prw"))
    parser.add_argument(
        "--epochs", type=int, default=default_epochs, help="epochs per row (the full recipes train 16)"
    )
    parser.add_argument("--recipe", default=recipe)
    parser.add_argument("--rows", nargs="+", default=list(rows), choices=list(rows), help="rows to run")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="extra override of every row")
    parser.add_argument("--table", type=Path, help="also write the table here")
    args = parser.parse_args(argv)

    settings = f" ({', '.join(args.set)})" if args.set else ""
    lines = [
        f"# {datetime.now(timezone.utc):%Y-%m-%dT%H:%MZ}, {platform.processor() or platform.machine()}, "
        f"recipe {args.recipe}{settings}, {args.dataset}, {args.epochs} epochs per row (lr x0.1 at "
        f"{max(1, round(args.epochs * 0.75))})",
        f"{table_title:<38} {'mAP':>6} {'top-1':>6}   {'paper mAP':>9} {'paper R1':>8}   {'minutes':>7}",
    ]
    print("\n".join(lines), flush=True)
    for key in args.rows:
        row = rows[key]
        metrics, minutes = run_row(key, row, args)
        paper = row.paper.get(args.dataset)
        paper_text = f"{paper[0]:>9.2f} {paper[1]:>8.2f}" if paper else f"{'-':>9} {'-':>8}"
        line = (
            f"{row.name:<38} {100 * metrics['mAP']:>6.2f} {100 * metrics['top1']:>6.2f}   "
            f"{paper_text}   {'(done)' if minutes is None else f'{minutes:.1f}':>7}"
        )
        lines.append(line)
        print(line, flush=True)
    lines.append(paper_note)
    text = "\n".join(lines) + "\n"
    print(lines[-1])
    if args.table is not None:
        atomic_write_bytes(args.table, text.encode())
    return 0
