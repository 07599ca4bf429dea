"""``personsearch eval``: score a predictions file (or a checkpoint's model) with the exact protocol.

Person search (``cuhk_sysu``, ``prw``): scoring itself is
:func:`personsearch_train.evaluation.scoring.evaluate_predictions`; this module only
reads the dataset (through the data registry) and the file, turns the options into one
:class:`~personsearch_train.evaluation.scoring.EvalOptions`, prints a table, writes the
JSON and (optionally) the plots.

Text-to-image person retrieval (the ``text_person`` readers: ``cuhk_pedes``,
``icfg_pedes``, ``rstpreid``, ``ufine6926``, ``ufine3c``): only ``--checkpoint`` is a
source. The checkpoint's dual-encoder model embeds the test split
(:func:`~personsearch_train.engine.text_inference.embed_text_split`) and
:class:`~personsearch_train.evaluation.text_evaluator.TextRetrievalEvaluator` scores it
(UFine3C per source), text-to-image and image-to-text.

Text-based person search in full images (``cuhk_sysu_tbps``, ``prw_tbps``): the
CUHK-SYSU / PRW test split with every query person given by sentences
(:mod:`personsearch_train.data.tbps`). ``--checkpoint`` (the detector) needs
``--text-checkpoint`` (a dual encoder trained by ``irra`` / ``cfam``): the detections are
embedded by the dual encoder's crop tower, the sentences by its text tower
(:func:`~personsearch_train.evaluation.sentence_search.predict_sentence_search`), and the
unchanged CUHK-SYSU / PRW protocol scores one query per sentence. A ``--predictions``
file saved from such a run (``--save-predictions``) is scored the same way.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from personsearch_train.atomic_files import atomic_write_bytes
from personsearch_train.commands.output_paths import check_output_file, check_output_folder
from personsearch_train.data.registry import available_readers, load_split, load_text_split
from personsearch_train.data.tbps import TBPS_DATASETS, TBPS_FILE_STEMS
from personsearch_train.engine.config import check_gallery_size, resolve_dataset_root
from personsearch_train.errors import TrainerError
from personsearch_train.evaluation.scoring import DEFAULT_GALLERY_SIZE, EvalOptions

if TYPE_CHECKING:
    from torch import nn

    from personsearch_train.data.structures import PersonSearchSplit
    from personsearch_train.data.tbps import SentenceQueries
    from personsearch_train.engine.text_inference import TextRetrievalEmbeddings
    from personsearch_train.evaluation.predictions import SearchPredictions
    from personsearch_train.evaluation.scoring import PersonSearchReport

__all__ = [
    "add_arguments",
    "eval_options_from_args",
    "report_predictions",
    "report_sentence_search",
    "report_text_retrieval",
    "run",
    "tbps_dataset_root",
    "write_json_atomically",
]


#: Batch size of the text-retrieval path when ``--batch-size`` is not given (the
#: person-search default of 1 would run the encoders one crop or caption at a time).
DEFAULT_TEXT_BATCH_SIZE = 64


class _StoreExplicit(argparse.Action):
    """``store`` that also records the option in ``namespace.explicit_options``.

    A text dataset refuses person-search options even when given with their default
    value (``--gallery-size 100``), and ``--batch-size`` has another default there;
    both need to know whether the user typed the option.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        given = set(getattr(namespace, "explicit_options", ()))
        given.add(self.option_strings[0])
        namespace.explicit_options = given


def _text_datasets() -> tuple[str, ...]:
    return available_readers("text_person", evaluable=True)


def _is_text_dataset(dataset: str) -> bool:
    return dataset in _text_datasets()


def _is_tbps_dataset(dataset: str) -> bool:
    return dataset in TBPS_DATASETS


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
        choices=(
            *available_readers("person_search", evaluable=True),
            *sorted(TBPS_DATASETS),
            *_text_datasets(),
        ),
        required=True,
        help="which dataset reader and protocol to use: person search (cuhk_sysu, prw), person search "
        "by sentence (cuhk_sysu_tbps, prw_tbps: --checkpoint with --text-checkpoint) or "
        "text-to-image person retrieval (with --checkpoint only)",
    )
    parser.add_argument(
        "--root",
        type=Path,
        required=True,
        help="dataset folder (e.g. <synth_out>/CUHK-SYSU or <synth_out>/PRW; for a text dataset "
        "the folder holding its annotation JSON)",
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
        "--text-checkpoint",
        type=Path,
        default=None,
        help="cuhk_sysu_tbps / prw_tbps with --checkpoint: the text-to-image model (a dual encoder "
        "trained by irra or cfam) whose crop and text encoders embed the detections and the sentences",
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
        "--batch-size",
        type=int,
        default=1,
        action=_StoreExplicit,
        help="with --checkpoint: images per forward pass (default: 1; text datasets: images and "
        f"captions per encoder call, default {DEFAULT_TEXT_BATCH_SIZE})",
    )
    parser.add_argument(
        "--gallery-size",
        type=int,
        default=DEFAULT_GALLERY_SIZE,
        action=_StoreExplicit,
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
        action=_StoreExplicit,
        help="queries whose person is in no gallery image: leave out (default) or count as 0",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the headline numbers here (fractions)")
    parser.add_argument(
        "--plot-dir",
        type=Path,
        default=None,
        help="write cmc.png (and, for CUHK-SYSU, gallery_size.png over every available size; for a "
        "text dataset the text-to-image rank curve, one per UFine3C source) here",
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
            or under a file), so no work is done before such a failure; a text dataset
            (only ``--checkpoint`` evaluates those, through :func:`run`);
            ``--text-checkpoint`` for a dataset other than ``cuhk_sysu_tbps`` /
            ``prw_tbps`` or with another source than ``--checkpoint``, a TBPS
            ``--checkpoint`` without it, or TBPS with ``--cbgm`` or ``--gt-boxes``.
    """
    if _is_text_dataset(args.dataset):
        _refuse_prediction_source(args.dataset)
    _check_tbps_options(args)
    options = EvalOptions(
        # TBPS is scored by the protocol of the dataset its scenes come from.
        dataset=TBPS_DATASETS.get(args.dataset, args.dataset),
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


def _check_tbps_options(args: argparse.Namespace) -> None:
    """Refuse ``--text-checkpoint`` where it has no use, and what sentence queries cannot do.

    Raises:
        TrainerError: Naming the option and what to do instead.
    """
    text_checkpoint = getattr(args, "text_checkpoint", None)
    tbps = ", ".join(sorted(TBPS_DATASETS))
    if not _is_tbps_dataset(args.dataset):
        if text_checkpoint is not None:
            raise TrainerError(
                f"--text-checkpoint is for person search by sentence (--dataset {tbps}); "
                f"--dataset {args.dataset} does not use it, leave it out"
            )
        return
    if getattr(args, "bundle", None) is not None and text_checkpoint is not None:
        raise TrainerError(
            "--text-checkpoint is not used with --bundle: the bundle carries its own text encoder "
            "(export it with --text-checkpoint); leave it out"
        )
    if getattr(args, "predictions", None) is not None and text_checkpoint is not None:
        raise TrainerError(
            "--text-checkpoint is not used with --predictions: the file already holds the sentence "
            "embeddings; leave it out"
        )
    if getattr(args, "checkpoint", None) is not None and text_checkpoint is None:
        raise TrainerError(
            f"--dataset {args.dataset} with --checkpoint DET_RUN also needs --text-checkpoint T2I_RUN "
            "(a dual encoder trained by irra or cfam) to embed the sentences and the detected people"
        )
    if args.cbgm:
        raise TrainerError(
            f"--cbgm re-scores with the query image's other people; a sentence query of {args.dataset} "
            "has no image. Leave --cbgm out"
        )
    if args.gt_boxes:
        raise TrainerError(
            f"--gt-boxes is not available for {args.dataset}: sentence search is scored on the "
            "detector's own boxes. Leave it out"
        )


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

    if _is_text_dataset(args.dataset):
        return _run_text(args)
    if _is_tbps_dataset(args.dataset):
        return _run_tbps(args)
    options = eval_options_from_args(args)
    if args.save_predictions is not None and args.checkpoint is None:
        raise TrainerError("--save-predictions needs --checkpoint (a predictions file is already saved)")
    if args.gt_boxes and args.checkpoint is None:
        raise TrainerError("--gt-boxes needs --checkpoint (it changes how the model is run)")
    root = resolve_dataset_root(options.dataset, args.root)
    # The source is read (or found) before the dataset, so a bad file fails at once.
    if args.checkpoint is not None:
        from personsearch_train.engine.checkpoint import load_model_from_checkpoint

        model, metadata = load_model_from_checkpoint(args.checkpoint)
        _check_person_search_model(model, metadata, args.checkpoint)
    else:
        if args.predictions.is_dir():
            raise TrainerError(
                f"--predictions {args.predictions} is a folder; give the predictions .npz file"
            )
        predictions = SearchPredictions.load(args.predictions)
        label = args.predictions.name
    split = load_split(options.dataset, root, "test")
    if args.checkpoint is not None:
        from personsearch_train.engine.distributed import select_device
        from personsearch_train.engine.inference import predict_split

        target = select_device(args.device)
        predictions = predict_split(
            model.to(target),
            split,
            device=target,
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


def tbps_dataset_root(dataset: str, root: str | Path) -> Path:
    """The scene folder of a TBPS dataset given on the command line.

    Accepts the folder itself, a parent holding it under MACA's name
    (``CUHK-SYSU-TBPS``, ``PRW-TBPS``) or under the usual one (``CUHK-SYSU``, ``PRW``,
    as ``personsearch synth`` writes them).

    Args:
        dataset: ``"cuhk_sysu_tbps"`` or ``"prw_tbps"``.
        root: The folder given with ``--root``.

    Returns:
        The dataset folder.

    Raises:
        ConfigError: ``root`` does not exist or is a file.
    """
    maca = Path(root).expanduser() / TBPS_FILE_STEMS[dataset]
    return resolve_dataset_root(TBPS_DATASETS[dataset], maca if maca.is_dir() else root)


def _load_text_model(checkpoint: Path, dataset: str) -> nn.Module:
    """Load ``--text-checkpoint`` and refuse a model without the dual-encoder interface."""
    from personsearch_train.engine.checkpoint import load_model_from_checkpoint
    from personsearch_train.engine.text_inference import missing_text_model_attributes

    model, metadata = load_model_from_checkpoint(checkpoint)
    missing = missing_text_model_attributes(model)
    if missing:
        raise TrainerError(
            f"--text-checkpoint: {_describe_model(model, metadata, checkpoint)}, which has no "
            f"{', '.join(missing)}; {dataset} needs a text-to-image retrieval checkpoint (a dual encoder "
            "trained by irra or cfam)"
        )
    return model


def _run_tbps(args: argparse.Namespace) -> int:
    """``personsearch eval`` on ``cuhk_sysu_tbps`` / ``prw_tbps``: detections and sentences, one protocol."""
    from personsearch_train.data.tbps import load_sentence_queries
    from personsearch_train.evaluation.predictions import SearchPredictions

    options = eval_options_from_args(args)
    if args.save_predictions is not None and args.checkpoint is None:
        raise TrainerError("--save-predictions needs --checkpoint (a predictions file is already saved)")
    root = tbps_dataset_root(args.dataset, args.root)
    # Models (or the file) first, so a wrong checkpoint fails before the dataset is read.
    if args.checkpoint is not None:
        from personsearch_train.engine.checkpoint import load_model_from_checkpoint

        detector, metadata = load_model_from_checkpoint(args.checkpoint)
        _check_person_search_model(detector, metadata, args.checkpoint)
        text_model = _load_text_model(args.text_checkpoint, args.dataset)
        label = f"{args.checkpoint.name} + {args.text_checkpoint.name}"
    else:
        if args.predictions.is_dir():
            raise TrainerError(
                f"--predictions {args.predictions} is a folder; give the predictions .npz file"
            )
        predictions = SearchPredictions.load(args.predictions)
        label = args.predictions.name
    split = load_split(options.dataset, root, "test")
    queries = load_sentence_queries(args.dataset, root, split)
    if args.checkpoint is not None:
        from personsearch_train.engine.distributed import select_device
        from personsearch_train.evaluation.sentence_search import (
            CheckpointSentencePredictor,
            predict_sentence_search,
        )

        predictor = CheckpointSentencePredictor(
            detector,
            text_model,
            device=select_device(args.device),
            batch_size=args.batch_size,
            encoder_batch_size=DEFAULT_TEXT_BATCH_SIZE,
        )
        predictions = predict_sentence_search(
            predictor, split, queries, progress=True, source=f"{label} on {args.dataset} test"
        )
        if args.save_predictions is not None:
            print(f"wrote {predictions.save(args.save_predictions)}")
    return report_sentence_search(
        args.dataset,
        split,
        queries,
        predictions,
        options,
        json_path=args.json,
        plot_dir=args.plot_dir,
        label=label,
    )


def report_sentence_search(
    dataset: str,
    split: PersonSearchSplit,
    queries: SentenceQueries,
    predictions: SearchPredictions,
    options: EvalOptions,
    *,
    json_path: Path | None = None,
    plot_dir: Path | None = None,
    label: str,
) -> int:
    """Score sentence-search predictions with the scenes' protocol and report like :func:`report_predictions`.

    Args:
        dataset: ``"cuhk_sysu_tbps"`` or ``"prw_tbps"`` (for the title).
        split: The person-search test split (one query per person).
        queries: Its sentence queries.
        predictions: Predictions for ``sentence_query_split(split, queries)`` (one query
            row per sentence).
        options: The protocol to score with (its dataset is the scenes' one).
        json_path: Where to write the headline numbers (fractions); none when None.
        plot_dir: Where to write the plots; none when None.
        label: Where the predictions came from, shown in the table title.

    Returns:
        Exit status 0.
    """
    from personsearch_train.data.tbps import sentence_query_split

    described = len(split.queries) - len(queries.queries_without_sentences(len(split.queries)))
    print(
        f"{dataset}: {queries.num_sentences} sentence queries for {described} of the "
        f"{len(split.queries)} query persons ({queries.source})"
    )
    if described < len(split.queries):
        print(f"  {len(split.queries) - described} query persons have no sentence and are not searched for")
    return report_predictions(
        sentence_query_split(split, queries),
        predictions,
        options,
        json_path=json_path,
        plot_dir=plot_dir,
        label=f"{dataset}, {label}",
    )


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


def _describe_model(model: nn.Module, metadata: dict, checkpoint: Path) -> str:
    """``checkpoint X holds model 'name' (method 'm')``, for the messages that refuse it."""
    name = (metadata.get("model") or {}).get("name", type(model).__name__)
    method = (metadata.get("method") or {}).get("name", "seqnet_oim")
    return f"checkpoint {checkpoint} holds model {name!r} (method {method!r})"


def _check_person_search_model(model: nn.Module, metadata: dict, checkpoint: Path) -> None:
    """Refuse a checkpoint whose model cannot detect and embed people (a text-retrieval model)."""
    from personsearch_train.engine.text_inference import missing_text_model_attributes

    missing = [name for name in ("predict", "embed_boxes") if not hasattr(model, name)]
    if not missing:
        return
    what = (
        "a text-to-image retrieval model"
        if not missing_text_model_attributes(model)
        else f"a model without {' and '.join(missing)}"
    )
    raise TrainerError(
        f"{_describe_model(model, metadata, checkpoint)}, {what}; person-search datasets need a "
        f"person-search model. Evaluate it on a text dataset: --dataset one of {', '.join(_text_datasets())}"
    )


def _refuse_prediction_source(dataset: str) -> None:
    """Refuse a predictions file or bundle for a text dataset: both hold person-search predictions.

    Raises:
        TrainerError: Always, naming the dataset and the one source that works.
    """
    raise TrainerError(
        f"--dataset {dataset} is a text-to-image dataset; it is evaluated from a --checkpoint of a "
        "text-retrieval model only (predictions files and bundles hold person-search predictions)"
    )


def _check_text_options(args: argparse.Namespace) -> None:
    """Refuse what a text dataset cannot use, before any file is read.

    Raises:
        TrainerError: A source other than ``--checkpoint``, a person-search-only option
            (even given at its default value), ``--batch-size`` below 1, or an output
            path that cannot be written.
    """
    dataset = args.dataset
    if getattr(args, "predictions", None) is not None or getattr(args, "bundle", None) is not None:
        _refuse_prediction_source(dataset)
    _check_tbps_options(args)
    given = set(getattr(args, "explicit_options", ()))
    refused = [
        option
        for option, used in (
            ("--save-predictions", args.save_predictions is not None),
            ("--gt-boxes", args.gt_boxes),
            ("--gallery-size", "--gallery-size" in given or args.gallery_size != DEFAULT_GALLERY_SIZE),
            ("--multi-view", args.multi_view),
            ("--cbgm", args.cbgm),
            ("--no-cws", not args.cws),
            ("--empty-queries", "--empty-queries" in given or args.empty_queries != "skip"),
        )
        if used
    ]
    if refused:
        raise TrainerError(
            f"{', '.join(refused)}: person-search option{'s' if len(refused) > 1 else ''}, not used by the "
            f"text-to-image dataset {dataset}; leave {'them' if len(refused) > 1 else 'it'} out"
        )
    if args.batch_size < 1:
        raise TrainerError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.json is not None:
        check_output_file(args.json, "--json")
    if args.plot_dir is not None:
        check_output_folder(args.plot_dir, "--plot-dir")


def _text_batch_size(args: argparse.Namespace) -> int:
    # The parser's default (1) is the person-search one; a text run uses its own unless asked.
    if "--batch-size" in set(getattr(args, "explicit_options", ())):
        return int(args.batch_size)
    return DEFAULT_TEXT_BATCH_SIZE if args.batch_size == 1 else int(args.batch_size)


def _run_text(args: argparse.Namespace) -> int:
    """``personsearch eval`` on a text-to-image dataset: embed the test split and report."""
    from personsearch_train.engine.checkpoint import load_model_from_checkpoint
    from personsearch_train.engine.distributed import select_device
    from personsearch_train.engine.text_inference import embed_text_split, missing_text_model_attributes

    _check_text_options(args)
    root = resolve_dataset_root(args.dataset, args.root)
    # The model is read before the dataset, so a wrong checkpoint fails at once.
    model, metadata = load_model_from_checkpoint(args.checkpoint)
    missing = missing_text_model_attributes(model)
    if missing:
        kind = (
            "a person-search model"
            if hasattr(model, "predict") and hasattr(model, "embed_boxes")
            else "not a text-retrieval model"
        )
        raise TrainerError(
            f"{_describe_model(model, metadata, args.checkpoint)}, {kind} (it has no {', '.join(missing)}); "
            f"text dataset {args.dataset} needs a text-to-image retrieval checkpoint. Evaluate this one on "
            f"--dataset {' or '.join(available_readers('person_search', evaluable=True))}"
        )
    split = load_text_split(args.dataset, root, "test")
    target = select_device(args.device)
    embeddings = embed_text_split(
        model.to(target), split, device=target, batch_size=_text_batch_size(args), progress=True
    )
    return report_text_retrieval(
        embeddings, args.dataset, json_path=args.json, plot_dir=args.plot_dir, label=args.checkpoint.name
    )


def _text_rows(scores: dict[str, float], prefix: str, num_texts: int, num_images: int) -> list[str]:
    """Rows of one block: each metric in both directions (values in %)."""
    lines = [f"{'':<8}  {'text->image':>11}  {'image->text':>11}"]
    for key, name in (("R1", "R@1"), ("R5", "R@5"), ("R10", "R@10"), ("mAP", "mAP"), ("mINP", "mINP")):
        t2i, i2t = scores[f"{prefix}{key}"], scores[f"{prefix}i2t_{key}"]
        lines.append(f"{name:<8}  {100 * t2i:>11.2f}  {100 * i2t:>11.2f}")
    # UFineBench defines mSD for text queries only.
    lines.append(f"{'mSD':<8}  {100 * scores[f'{prefix}mSD']:>11.2f}  {'-':>11}")
    lines.append(f"{'queries':<8}  {num_texts:>11}  {num_images:>11}")
    return lines


def report_text_retrieval(
    embeddings: TextRetrievalEmbeddings,
    dataset: str,
    *,
    json_path: Path | None = None,
    plot_dir: Path | None = None,
    label: str,
) -> int:
    """Score text-retrieval embeddings, print the table, and write the JSON and plot asked for.

    Args:
        embeddings: The test split's caption and image embeddings.
        dataset: The text dataset (``"ufine3c"`` is scored per source).
        json_path: Where to write the scores (fractions; UFine3C keys ``"<source>/R1"``
            ...); none when None.
        plot_dir: Where to write ``cmc.png``, the text-to-image rank curve (one per
            UFine3C source); none when None.
        label: Where the embeddings came from, shown in the table titles.

    Returns:
        Exit status 0.
    """
    import numpy as np

    from personsearch_train.evaluation.text_evaluator import OVERALL, TextRetrievalEvaluator

    evaluator = TextRetrievalEvaluator(group_by_source=dataset == "ufine3c")
    evaluator.process(embeddings)
    scores = evaluator.evaluate()
    caption_sources = np.asarray(embeddings.caption_sources, dtype=np.str_)
    image_sources = np.asarray(embeddings.image_sources, dtype=np.str_)
    blocks = []
    for group in evaluator.curves:
        prefix = "" if group == OVERALL else f"{group}/"
        counts = (
            (embeddings.num_texts, embeddings.num_images)
            if group == OVERALL
            else (int(np.sum(caption_sources == group)), int(np.sum(image_sources == group)))
        )
        title = f"{dataset}{'' if group == OVERALL else f' source {group}'}  ({label}, values in %)"
        rows = _text_rows(scores, prefix, *counts)
        blocks.append("\n".join([title, "-" * max(len(title), len(rows[0])), *rows]))
    print("\n\n".join(blocks))
    if json_path is not None:
        write_json_atomically(scores, json_path)
        print(f"wrote {json_path}")
    if plot_dir is not None:
        from personsearch_train.evaluation.plots import plot_cmc

        curves = {
            (f"{dataset} text-to-image" if group == OVERALL else group): curve
            for group, curve in evaluator.curves.items()
        }
        path = plot_cmc(curves, Path(plot_dir) / "cmc.png", title=f"{dataset}: text-to-image rank curve")
        print(f"wrote {path}")
    return 0
