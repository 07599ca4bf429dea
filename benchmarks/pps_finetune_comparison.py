"""Does hybrid pre-training (PPS) help? Fine-tune from PPS against from scratch, same budget.

For each test format (CUHK-SYSU, PRW layouts of the synthetic set) and each fine-tuning
budget (``quarter``: a quarter of the fine-tuning recipe's epochs, ``full``: all of them),
the script fine-tunes the recipe from scratch and from each PPS pre-training (with the
alignment module, ``alignment: dataset_norm``, and without, ``none``), and prints the
test mAP / top-1 of every fine-tune with the gain over scratch:

=================  ==========================================================
row                what starts the fine-tune
=================  ==========================================================
scratch            random initialisation (no ImageNet weights exist here)
pps                ``pps_synthetic`` with the alignment module, folded
pps_no_alignment   ``pps_synthetic`` with ``alignment: none`` (the ablation)
=================  ==========================================================

``--finetune-recipe`` picks what is fine-tuned: ``synthetic_small`` (supervised OIM,
18 epochs, the default) or one of the weakly supervised methods, trained on boxes only:
``rsiamnet_synthetic_small`` (16 epochs), ``ssl_synthetic_small`` or
``cgps_synthetic_small`` (10 epochs each). The same PPS checkpoint starts all of them; the
weakly supervised recipes are used as they are (their clustering radii and thresholds were
chosen for scratch-trained features), only ``model.init_from`` differs.

Every run is resumable and read back when finished, so an interrupted call continues
where it stopped; ``--reuse ROW:FORMAT:BUDGET=RUN`` (fine-tunes) and
``--reuse-pretrain ROW=RUN`` take runs trained elsewhere with the same settings (a
reused fine-tune only needs its ``metrics.jsonl``, so the committed result folders
rebuild the table). Rows are trained one after the other; ``--rows``, ``--formats`` and
``--budgets`` pick a subset (the full grid is 2 pre-trainings and 12 fine-tunes: hours
on 2 CPU cores). A pre-training is trained only when a fine-tune needs it.

Example:
    python benchmarks/pps_finetune_comparison.py --target data/synth --subtask data/subtask \\
        --out runs/pps_comparison --budgets quarter \\
        --table benchmarks/results/pps_finetune_comparison.txt
"""

from __future__ import annotations

import argparse
import platform
from datetime import datetime, timezone
from pathlib import Path

from ablation_sweep import final_metrics, train_unless_finished
from personsearch_train.atomic_files import atomic_write_bytes
from personsearch_train.engine.config import load_config

#: Fine-tuning recipes the comparison knows, all on the synthetic `small` set: the
#: supervised baseline and the weakly supervised methods (boxes only).
FINETUNE_RECIPES = (
    "synthetic_small",
    "rsiamnet_synthetic_small",
    "ssl_synthetic_small",
    "cgps_synthetic_small",
)
#: Budget -> the fraction of the fine-tuning recipe's epochs it trains.
BUDGETS = {"quarter": 4, "full": 1}
FORMATS = {"cuhk_sysu": "CUHK-SYSU format", "prw": "PRW format"}
#: Row -> the pre-training's alignment (None: no pre-training).
ROWS: dict[str, str | None] = {"scratch": None, "pps": "dataset_norm", "pps_no_alignment": "none"}


def _final_metrics(run_dir: Path, epochs: int) -> dict[str, float]:
    """The metrics the fine-tune logged at its last epoch (exits when there are none)."""
    metrics = final_metrics(run_dir, epochs)
    if metrics is None:
        raise SystemExit(f"{run_dir}: no evaluation at epoch {epochs} in metrics.jsonl")
    return metrics


def budget_epochs(recipe_epochs: int) -> dict[str, int]:
    """Epochs of each budget for a fine-tuning recipe of ``recipe_epochs`` epochs."""
    return {budget: max(1, recipe_epochs // divisor) for budget, divisor in BUDGETS.items()}


def _parse_reuse(items: list[str], parser: argparse.ArgumentParser) -> dict[tuple[str, str, str], Path]:
    reuse = {}
    for item in items:
        key, sep, run = item.partition("=")
        parts = tuple(key.split(":"))
        if (
            not sep
            or len(parts) != 3
            or parts[0] not in ROWS
            or parts[1] not in FORMATS
            or parts[2] not in BUDGETS
        ):
            parser.error(
                f"--reuse {item!r}: expected ROW:FORMAT:BUDGET=RUN, e.g. scratch:prw:quarter=runs/ft"
            )
        reuse[parts] = Path(run)
    return reuse


def main() -> int:
    """Run (or read back) the pre-trainings and fine-tunes, print and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=Path, required=True, help="the synthetic `small` person-search set")
    parser.add_argument(
        "--subtask", type=Path, required=True, help="`personsearch synth --subtask-sets` output"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder of the runs")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=list(FORMATS))
    parser.add_argument("--budgets", nargs="+", default=list(BUDGETS), choices=list(BUDGETS))
    parser.add_argument(
        "--finetune-recipe",
        default="synthetic_small",
        choices=FINETUNE_RECIPES,
        help="what is fine-tuned (default synthetic_small; the others are weakly supervised)",
    )
    parser.add_argument("--pretrain-epochs", type=int, default=16, help="pps_synthetic epochs (default 16)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per training")
    parser.add_argument("--reuse", action="append", default=[], metavar="ROW:FORMAT:BUDGET=RUN")
    parser.add_argument("--reuse-pretrain", action="append", default=[], metavar="ROW=RUN")
    parser.add_argument(
        "--no-train",
        action="store_true",
        help="train nothing: tabulate the finished (or reused) runs and list the missing ones",
    )
    parser.add_argument("--table", type=Path, help="also write the table here")
    args = parser.parse_args()
    reuse = _parse_reuse(args.reuse, parser)
    pretrain_runs = {row: args.out / f"pretrain_{row}" for row in ROWS if ROWS[row] is not None}
    for item in args.reuse_pretrain:
        row, sep, run = item.partition("=")
        if not sep or ROWS.get(row) is None:
            parser.error(f"--reuse-pretrain {item!r}: expected pps=RUN or pps_no_alignment=RUN")
        pretrain_runs[row] = Path(run)

    threads = f"train.cpu_threads={args.threads}"
    milestone = max(1, round(args.pretrain_epochs * 0.75))
    epochs_of = budget_epochs(load_config(args.finetune_recipe, [], data_root=args.target).train.epochs)
    pretrained: set[str] = set()

    def pretrain(row: str) -> Path:
        if row not in pretrained:
            train_unless_finished(
                "pps_synthetic",
                [
                    f"train.epochs={args.pretrain_epochs}",
                    f"schedule.milestones=[{milestone}]",
                    f"method_args.alignment={ROWS[row]}",
                    threads,
                ],
                args.subtask,
                pretrain_runs[row],
            )
            pretrained.add(row)
        return pretrain_runs[row]

    results: dict[tuple[str, str, str], dict[str, float]] = {}
    missing: list[str] = []
    for row in args.rows:
        for fmt in args.formats:
            for budget in args.budgets:
                epochs = epochs_of[budget]
                run = reuse.get((row, fmt, budget), args.out / f"{row}_{fmt}_{budget}")
                metrics = final_metrics(run, epochs)
                if metrics is None:
                    if args.no_train:
                        missing.append(f"{row} {FORMATS[fmt]} {budget}")
                        continue
                    overrides = [f"data.dataset={fmt}", f"train.epochs={epochs}", threads]
                    if ROWS[row] is not None:
                        overrides.append(f"model.init_from={pretrain(row)}")
                    train_unless_finished(args.finetune_recipe, overrides, args.target, run)
                    metrics = _final_metrics(run, epochs)
                results[row, fmt, budget] = metrics

    lines = [
        f"# {datetime.now(timezone.utc):%Y-%m-%dT%H:%MZ}, {platform.processor() or platform.machine()}, "
        f"pps_synthetic {args.pretrain_epochs} epochs -> {args.finetune_recipe} fine-tunes; "
        "test mAP / top-1 in %",
        f"{'start':<18} {'test set':<18} {'budget':<14} {'mAP':>6} {'top-1':>6} {'mAP vs scratch':>15}",
    ]
    # Grouped by test set, then budget, so every gain sits under its scratch row.
    order = {name: i for i, name in enumerate([*FORMATS, *BUDGETS, *ROWS])}
    for (row, fmt, budget), metrics in sorted(
        results.items(), key=lambda item: (order[item[0][1]], order[item[0][2]], order[item[0][0]])
    ):
        base = results.get(("scratch", fmt, budget))
        gain = (
            f"{100 * (metrics['mAP'] - base['mAP']):+15.2f}" if base is not None and row != "scratch" else ""
        )
        lines.append(
            f"{row:<18} {FORMATS[fmt]:<18} {f'{budget} ({epochs_of[budget]} ep)':<14} "
            f"{100 * metrics['mAP']:>6.2f} {100 * metrics['top1']:>6.2f} {gain:>15}"
        )
    if missing:
        lines.append(f"# not run: {', '.join(missing)}")
    print("\n".join(lines))
    if args.table is not None:
        atomic_write_bytes(args.table, ("\n".join(lines) + "\n").encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
