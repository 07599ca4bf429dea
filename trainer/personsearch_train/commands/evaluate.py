"""``personsearch eval``: score a predictions file (or a checkpoint's model) with the exact protocol.

Scoring itself is :func:`personsearch_train.evaluation.scoring.score_predictions`;
this module only loads the dataset and the file, prints a table, writes the JSON
and (optionally) the plots.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from personsearch_train.atomic_files import atomic_write_bytes
from personsearch_train.errors import TrainerError

__all__ = [
    "DATASETS",
    "add_arguments",
    "load_test_split",
    "report_predictions",
    "run",
    "write_json_atomically",
]

#: Datasets this command scores.
DATASETS = ("cuhk_sysu", "prw")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``personsearch eval``.

    Args:
        parser: The subcommand's parser.
    """
    parser.add_argument("--dataset", choices=DATASETS, required=True, help="which protocol to use")
    parser.add_argument(
        "--root",
        type=Path,
        required=True,
        help="dataset folder (e.g. <synth_out>/CUHK-SYSU or <synth_out>/PRW)",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--predictions", type=Path, default=None, help="predictions .npz (see personsearch_train.evaluation)"
    )
    source.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="run the model of this checkpoint (a run folder or a checkpoint file) on the test split",
    )
    parser.add_argument(
        "--save-predictions",
        type=Path,
        default=None,
        help="with --checkpoint: also write the predictions .npz here",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="with --checkpoint")
    parser.add_argument(
        "--gt-boxes",
        action="store_true",
        help="with --checkpoint: embed the annotated gallery boxes instead of detecting "
        "(re-id quality without detection errors)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=1, help="with --checkpoint: images per forward pass"
    )
    parser.add_argument(
        "--gallery-size",
        type=int,
        default=100,
        help="CUHK-SYSU gallery size: 50, 100, 500, 1000, 2000, 4000, or -1 for the full set (default: 100)",
    )
    parser.add_argument(
        "--multi-view", action="store_true", help="PRW: remove the query camera's frames from the gallery"
    )
    parser.add_argument(
        "--cbgm", action="store_true", help="re-score with CBGM (needs the query_context_* arrays)"
    )
    parser.add_argument(
        "--empty-queries",
        choices=("skip", "zero"),
        default="skip",
        help="queries whose person is in no gallery image: leave out (default) or count as 0",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the headline numbers here (fractions)")
    parser.add_argument(
        "--plot-dir",
        type=Path,
        default=None,
        help="write cmc.png (and, for CUHK-SYSU, gallery_size.png over every available size) here",
    )


def load_test_split(dataset: str, root: Path):  # noqa: ANN201 - PersonSearchSplit, imported lazily
    """Read the test split of ``dataset`` from ``root`` with our readers.

    Args:
        dataset: ``"cuhk_sysu"`` or ``"prw"``.
        root: The dataset folder.

    Returns:
        The :class:`~personsearch_train.data.structures.PersonSearchSplit`.
    """
    if dataset == "cuhk_sysu":
        from personsearch_train.data.cuhk_sysu import load_cuhk_sysu

        return load_cuhk_sysu(root, "test")
    if dataset == "prw":
        from personsearch_train.data.prw import load_prw

        return load_prw(root, "test")
    raise TrainerError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")


def write_json_atomically(data: dict, path: Path) -> None:
    """Write ``data`` as indented JSON via a temporary file, fsync and rename.

    Args:
        data: JSON-serialisable mapping.
        path: Destination; its folder is created if needed.
    """
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def _table(title: str, rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    lines = [title, "-" * max(len(title), width + 10)]
    lines += [f"{k:<{width}}  {v:>8}" for k, v in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Score the predictions file and report.

    Args:
        args: Parsed options.

    Returns:
        Exit status 0.
    """
    from personsearch_train.evaluation.predictions import SearchPredictions

    if args.dataset == "prw" and args.gallery_size != 100:
        raise TrainerError("--gallery-size is a CUHK-SYSU option; PRW uses all frames (or --multi-view)")
    if args.dataset == "cuhk_sysu" and args.multi_view:
        raise TrainerError("--multi-view is a PRW option; CUHK-SYSU uses --gallery-size")
    if args.save_predictions is not None and args.checkpoint is None:
        raise TrainerError("--save-predictions needs --checkpoint (a predictions file is already saved)")
    if args.gt_boxes and args.checkpoint is None:
        raise TrainerError("--gt-boxes needs --checkpoint (it changes how the model is run)")
    if args.gt_boxes and args.cbgm:
        raise TrainerError("--gt-boxes and --cbgm do not combine: CBGM re-scores detections")
    split = load_test_split(args.dataset, args.root)
    if args.checkpoint is not None:
        from personsearch_train.engine.inference import predictions_from_checkpoint

        predictions = predictions_from_checkpoint(
            args.checkpoint,
            split,
            device=args.device,
            batch_size=args.batch_size,
            query_context=args.cbgm,
            ground_truth_boxes=args.gt_boxes,
        )
        if args.save_predictions is not None:
            print(f"wrote {predictions.save(args.save_predictions)}")
        return report_predictions(split, predictions, args, label=args.checkpoint.name)
    predictions = SearchPredictions.load(args.predictions)
    return report_predictions(split, predictions, args, label=args.predictions.name)


def report_predictions(split, predictions, args: argparse.Namespace, *, label: str) -> int:  # noqa: ANN001
    """Score predictions, print the table, write the JSON and plots the options ask for.

    The part of :func:`run` after loading, so a command that makes its predictions by
    running a model can report them identically.

    Args:
        split: The test split (a ``PersonSearchSplit``).
        predictions: Its ``SearchPredictions``.
        args: Parsed options of this command (``dataset``, ``gallery_size``,
            ``multi_view``, ``cbgm``, ``empty_queries``, ``json``, ``plot_dir``).
        label: Where the predictions came from, shown in the table title.

    Returns:
        Exit status 0.
    """
    from personsearch_train.evaluation.scoring import evaluate_predictions

    report = evaluate_predictions(
        split,
        predictions,
        gallery_size=args.gallery_size,
        multi_view=args.multi_view,
        cbgm=args.cbgm,
        empty_queries=args.empty_queries,
    )
    summary = report.summary()
    search = report.search
    rows = [
        ("mAP", f"{100 * summary['mAP']:.2f}"),
        ("top-1", f"{100 * summary['top1']:.2f}"),
        ("top-5", f"{100 * summary['top5']:.2f}"),
        ("top-10", f"{100 * summary['top10']:.2f}"),
        ("detection AP", f"{100 * summary['det_ap']:.2f}"),
        ("detection recall", f"{100 * summary['det_recall']:.2f}"),
        ("queries scored", str(search.num_scored)),
        ("queries skipped", str(len(search.skipped))),
    ]
    title = f"{search.protocol}{' + CBGM' if args.cbgm else ''}  ({label}, values in %)"
    print(_table(title, rows))
    if args.json is not None:
        write_json_atomically(summary, args.json)
        print(f"wrote {args.json}")
    if args.plot_dir is not None:
        _write_plots(args, split, predictions, report)
    return 0


def _write_plots(args: argparse.Namespace, split, predictions, report) -> None:  # noqa: ANN001
    from personsearch_train.evaluation.person_search import evaluate_search_cuhk
    from personsearch_train.evaluation.plots import plot_cmc, plot_gallery_size_curve

    plot_dir = Path(args.plot_dir)
    cmc_path = plot_cmc({report.search.protocol: report.search.cmc}, plot_dir / "cmc.png")
    print(f"wrote {cmc_path}")
    if args.dataset != "cuhk_sysu":
        return
    sizes = sorted(split.galleries)
    maps, top1s = [], []
    for size in sizes:
        result = evaluate_search_cuhk(
            split, predictions, gallery_size=size, cbgm=args.cbgm, empty_queries=args.empty_queries
        )
        maps.append(result.mean_ap)
        top1s.append(result.top(1))
    curve_path = plot_gallery_size_curve(sizes, maps, top1s, plot_dir / "gallery_size.png")
    print(f"wrote {curve_path}")
