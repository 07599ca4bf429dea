"""``personsearch eval``: score a predictions file (or a checkpoint's model) with the exact protocol.

Scoring itself is :func:`personsearch_train.evaluation.scoring.evaluate_predictions`;
this module only reads the dataset (through the data registry) and the file, turns the
options into one :class:`~personsearch_train.evaluation.scoring.EvalOptions`, prints a
table, writes the JSON and (optionally) the plots.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from personsearch_train.atomic_files import atomic_write_bytes
from personsearch_train.commands.output_paths import check_output_file, check_output_folder
from personsearch_train.data.registry import available_readers, load_split
from personsearch_train.engine.config import check_gallery_size, resolve_dataset_root
from personsearch_train.errors import TrainerError
from personsearch_train.evaluation.scoring import DEFAULT_GALLERY_SIZE, EvalOptions

if TYPE_CHECKING:
    from personsearch_train.data.structures import PersonSearchSplit
    from personsearch_train.evaluation.predictions import SearchPredictions
    from personsearch_train.evaluation.scoring import PersonSearchReport

__all__ = [
    "add_arguments",
    "eval_options_from_args",
    "report_predictions",
    "run",
    "write_json_atomically",
]


# argparse has no public name for the group type; typeshed and the stdlib both call it this.
def add_arguments(parser: argparse.ArgumentParser) -> argparse._MutuallyExclusiveGroup:
    """Declare the options of ``personsearch eval``.

    Args:
        parser: The subcommand's parser.

    Returns:
        The required, mutually exclusive group of prediction sources
        (``--predictions`` / ``--checkpoint``). A command that adds another source
        (the exporter's ``--bundle``) adds it to this group, so argparse itself
        enforces "exactly one source" with its usual message.
    """
    parser.add_argument(
        "--dataset",
        choices=available_readers("person_search"),
        required=True,
        help="which dataset reader and protocol to use",
    )
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
        default=DEFAULT_GALLERY_SIZE,
        help="CUHK-SYSU gallery size: 50, 100, 500, 1000, 2000, 4000, or -1 for the full set "
        f"(default: {DEFAULT_GALLERY_SIZE})",
    )
    parser.add_argument(
        "--multi-view", action="store_true", help="PRW: remove the query camera's frames from the gallery"
    )
    parser.add_argument(
        "--cbgm", action="store_true", help="re-score with CBGM (needs the query_context_* arrays)"
    )
    parser.add_argument(
        "--no-cws",
        dest="cws",
        action="store_false",
        help="rank by cosine similarity alone; by default similarities are weighted by the detection "
        "score (CWS, as SeqNet's model does)",
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
    return source


def eval_options_from_args(args: argparse.Namespace) -> EvalOptions:
    """Check the options every source shares and turn the protocol ones into :class:`EvalOptions`.

    The one place the command line's options are validated, whichever source
    (``--predictions``, ``--checkpoint``, the exporter's ``--bundle``) makes the
    predictions; each source adds only the checks of its own options.

    Args:
        args: Parsed options of :func:`add_arguments`.

    Returns:
        The protocol options.

    Raises:
        TrainerError: An option its dataset's protocol lacks, a CUHK-SYSU gallery size
            the protocol does not have, ``--batch-size`` below 1, ``--gt-boxes`` with
            ``--cbgm``, or an output path (``--json``, ``--plot-dir``,
            ``--save-predictions``) that cannot be written (a folder where a file goes,
            or under a file), so no work is done before such a failure.
    """
    options = EvalOptions(
        dataset=args.dataset,
        gallery_size=args.gallery_size,
        multi_view=args.multi_view,
        cbgm=args.cbgm,
        cws=args.cws,
        empty_queries=args.empty_queries,
    )
    if args.batch_size < 1:
        raise TrainerError(f"--batch-size must be >= 1, got {args.batch_size}")
    check_gallery_size(options.dataset, options.gallery_size, "--gallery-size")
    if args.gt_boxes and args.cbgm:
        raise TrainerError("--gt-boxes and --cbgm do not combine: CBGM re-scores detections")
    for option, path in (("--json", args.json), ("--save-predictions", args.save_predictions)):
        if path is not None:
            check_output_file(path, option)
    if args.plot_dir is not None:
        check_output_folder(args.plot_dir, "--plot-dir")
    return options


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
    """Score the predictions file (or the checkpoint's predictions) and report.

    Args:
        args: Parsed options.

    Returns:
        Exit status 0.
    """
    from personsearch_train.evaluation.predictions import SearchPredictions

    options = eval_options_from_args(args)
    if args.save_predictions is not None and args.checkpoint is None:
        raise TrainerError("--save-predictions needs --checkpoint (a predictions file is already saved)")
    if args.gt_boxes and args.checkpoint is None:
        raise TrainerError("--gt-boxes needs --checkpoint (it changes how the model is run)")
    root = resolve_dataset_root(options.dataset, args.root)
    # The source is read (or found) before the dataset, so a bad file fails at once.
    if args.checkpoint is not None:
        from personsearch_train.engine.checkpoint import find_checkpoint

        find_checkpoint(args.checkpoint)
    else:
        if args.predictions.is_dir():
            raise TrainerError(
                f"--predictions {args.predictions} is a folder; give the predictions .npz file"
            )
        predictions = SearchPredictions.load(args.predictions)
        label = args.predictions.name
    split = load_split(options.dataset, root, "test")
    if args.checkpoint is not None:
        from personsearch_train.engine.inference import predictions_from_checkpoint

        predictions = predictions_from_checkpoint(
            args.checkpoint,
            split,
            device=args.device,
            batch_size=args.batch_size,
            query_context=options.cbgm,
            ground_truth_boxes=args.gt_boxes,
        )
        if args.save_predictions is not None:
            print(f"wrote {predictions.save(args.save_predictions)}")
        label = args.checkpoint.name
    return report_predictions(
        split, predictions, options, json_path=args.json, plot_dir=args.plot_dir, label=label
    )


def report_predictions(
    split: PersonSearchSplit,
    predictions: SearchPredictions,
    options: EvalOptions,
    *,
    json_path: Path | None = None,
    plot_dir: Path | None = None,
    label: str,
) -> int:
    """Score predictions, print the table, and write the JSON and plots asked for.

    The part of :func:`run` after the predictions exist, so a command that makes its
    predictions another way (the exporter's runtime path) reports them identically.

    Args:
        split: The test split.
        predictions: Its predictions.
        options: The protocol to score with.
        json_path: Where to write the headline numbers (fractions); none when None.
        plot_dir: Where to write ``cmc.png`` (and, for CUHK-SYSU, ``gallery_size.png``);
            none when None.
        label: Where the predictions came from, shown in the table title.

    Returns:
        Exit status 0.
    """
    from personsearch_train.evaluation.scoring import evaluate_with_options

    report = evaluate_with_options(split, predictions, options)
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
    ranking = "" if options.cws else ", cosine without CWS"
    title = f"{search.protocol}{' + CBGM' if options.cbgm else ''}  ({label}{ranking}, values in %)"
    print(_table(title, rows))
    if json_path is not None:
        write_json_atomically(summary, json_path)
        print(f"wrote {json_path}")
    if plot_dir is not None:
        _write_plots(Path(plot_dir), options, split, predictions, report)
    return 0


def _write_plots(
    plot_dir: Path,
    options: EvalOptions,
    split: PersonSearchSplit,
    predictions: SearchPredictions,
    report: PersonSearchReport,
) -> None:
    from personsearch_train.evaluation.person_search import evaluate_search_cuhk
    from personsearch_train.evaluation.plots import plot_cmc, plot_gallery_size_curve

    cmc_path = plot_cmc({report.search.protocol: report.search.cmc}, plot_dir / "cmc.png")
    print(f"wrote {cmc_path}")
    if options.dataset != "cuhk_sysu":
        return
    sizes = sorted(split.galleries)
    maps, top1s = [], []
    for size in sizes:
        result = evaluate_search_cuhk(
            split,
            predictions,
            gallery_size=size,
            cbgm=options.cbgm,
            cws=options.cws,
            empty_queries=options.empty_queries,
        )
        maps.append(result.mean_ap)
        top1s.append(result.top(1))
    curve_path = plot_gallery_size_curve(sizes, maps, top1s, plot_dir / "gallery_size.png")
    print(f"wrote {curve_path}")
