"""Rerun the component analysis of R-SiamNet (Han et al., ICCV 2021, Table 2) on the synthetic set.

Five trainings of ``rsiamnet_synthetic_small`` that differ only in ``method_args``, on a
shorter schedule (``--epochs``, 4 by default, with the learning-rate step at three
quarters of it), each evaluated once at its end, printed beside the paper's CUHK-SYSU
numbers:

======================================  ==================================================
Table 2 row                             method_args
======================================  ==================================================
Search path w/ IR                       paths: search, pseudo_labels: instance, no L_ins/L_int
Instance path w/ IR                     paths: instance, pseudo_labels: instance, no L_ins/L_int
R-SiamNet w/ L_ins & IR                 paths: both, pseudo_labels: instance, int_weight 0
R-SiamNet w/ L_ins & L_int & IR         paths: both, pseudo_labels: instance
R-SiamNet w/ L_ins & L_int & L_clu      paths: both, pseudo_labels: first_neighbour (full)
======================================  ==================================================

Every row trains in its own folder under ``--out``; an interrupted sweep picks up where it
stopped (finished rows are read back from their ``metrics.jsonl``, an unfinished one
resumes from its ``latest`` checkpoint). The table is also written to ``--table``.

Example:
    python benchmarks/rsiamnet_ablation.py --data-root synthetic_small/ --out runs/ablation \\
        --table benchmarks/results/rsiamnet_ablation_cuhk_sysu.txt
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

from personsearch_train.atomic_files import atomic_write_bytes
from personsearch_train.engine.checkpoint import CheckpointFiles
from personsearch_train.engine.config import load_config
from personsearch_train.engine.loop import Trainer

#: Table 2 of the paper (CUHK-SYSU): mAP and rank-1 in percent.
PAPER = {
    "search_ir": (51.85, 59.69),
    "instance_ir": (63.79, 65.55),
    "ins_ir": (76.06, 78.21),
    "ins_int_ir": (79.62, 82.17),
    "full": (85.72, 86.86),
}

ROWS = {
    "search_ir": (
        "Search path w/ IR",
        {"paths": "search", "pseudo_labels": "instance", "ins_weight": 0, "int_weight": 0},
    ),
    "instance_ir": (
        "Instance path w/ IR",
        {"paths": "instance", "pseudo_labels": "instance", "ins_weight": 0, "int_weight": 0},
    ),
    "ins_ir": ("R-SiamNet w/ L_ins & IR", {"pseudo_labels": "instance", "int_weight": 0}),
    "ins_int_ir": ("R-SiamNet w/ L_ins & L_int & IR", {"pseudo_labels": "instance"}),
    "full": ("R-SiamNet w/ L_ins & L_int & L_clu", {}),
}


def _overrides(dataset: str, epochs: int, method_args: dict[str, object]) -> list[str]:
    milestone = max(1, round(epochs * 0.75))
    return [
        f"data.dataset={dataset}",
        f"train.epochs={epochs}",
        f"schedule.milestones=[{milestone}]",
        f"eval.every={epochs}",
        *(f"method_args.{key}={value}" for key, value in method_args.items()),
    ]


def _final_metrics(run_dir: Path, epochs: int) -> dict[str, float] | None:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    done = [r for r in rows if r.get("epoch") == epochs]
    return done[-1] if done else None


def run_row(key: str, args: argparse.Namespace) -> tuple[dict[str, float], float | None]:
    """Train, resume or read back one row: its final metrics, and minutes trained now (None: read back)."""
    run_dir = args.out / f"{args.dataset}_{key}"
    metrics = _final_metrics(run_dir, args.epochs)
    if metrics is not None:
        return metrics, None
    _, method_args = ROWS[key]
    overrides = _overrides(args.dataset, args.epochs, method_args)
    cfg = load_config(args.recipe, overrides, data_root=args.data_root)
    resume = CheckpointFiles(run_dir, "latest").exists()
    start = time.perf_counter()
    Trainer(cfg, run_dir=run_dir, progress=False).fit(resume=resume)
    metrics = _final_metrics(run_dir, args.epochs)
    if metrics is None:
        raise SystemExit(f"{run_dir}: training ended without the epoch-{args.epochs} evaluation")
    return metrics, (time.perf_counter() - start) / 60


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True, help="the synthetic `small` set")
    parser.add_argument("--out", type=Path, required=True, help="folder of the row runs")
    parser.add_argument("--dataset", default="cuhk_sysu", choices=("cuhk_sysu", "prw"))
    parser.add_argument("--epochs", type=int, default=4, help="epochs per row (the full recipe trains 16)")
    parser.add_argument("--recipe", default="rsiamnet_synthetic_small")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS), help="rows to run")
    parser.add_argument("--table", type=Path, help="also write the table here")
    args = parser.parse_args()

    lines = [
        f"# {datetime.now(timezone.utc):%Y-%m-%dT%H:%MZ}, {platform.processor() or platform.machine()}, "
        f"recipe {args.recipe}, {args.dataset}, {args.epochs} epochs per row (lr x0.1 at "
        f"{max(1, round(args.epochs * 0.75))})",
        f"{'Table 2 row':<38} {'mAP':>6} {'top-1':>6}   {'paper mAP':>9} {'paper R1':>8}   {'minutes':>7}",
    ]
    print("\n".join(lines), flush=True)
    for key in args.rows:
        metrics, minutes = run_row(key, args)
        name, _ = ROWS[key]
        paper_map, paper_r1 = PAPER[key]
        line = (
            f"{name:<38} {100 * metrics['mAP']:>6.2f} {100 * metrics['top1']:>6.2f}   "
            f"{paper_map:>9.2f} {paper_r1:>8.2f}   {'(done)' if minutes is None else f'{minutes:.1f}':>7}"
        )
        lines.append(line)
        print(line, flush=True)
    lines.append("paper: CUHK-SYSU, ResNet-50 from ImageNet, 48 epochs; ours: synthetic `small`, scratch")
    text = "\n".join(lines) + "\n"
    print(lines[-1])
    if args.table is not None:
        atomic_write_bytes(args.table, text.encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
