"""``personsearch eval``: score a predictions file, a checkpoint's model, or a bundle through the runtime.

``--predictions`` and ``--checkpoint`` are the trainer's command unchanged
(:mod:`personsearch_train.commands.evaluate`). ``--bundle`` makes the predictions with
the torch-free runtime (:class:`~personsearch_runtime.searcher.PersonSearcher`: ONNX
Runtime or TensorRT) and scores them with the trainer's ``report_predictions``, so the
three sources are checked by one validation function and scored by one code path.

Person search by sentence (``--dataset cuhk_sysu_tbps`` / ``prw_tbps``) with ``--bundle``
needs a bundle exported with ``--text-checkpoint``: its crop encoder embeds the runtime's
detections and its text encoder the sentences
(:mod:`personsearch_export.runtime_sentence_search`), scored by the trainer's
``report_sentence_search``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from personsearch_train.commands import evaluate as trainer_evaluate
from personsearch_train.data.registry import load_split
from personsearch_train.data.tbps import TBPS_DATASETS
from personsearch_train.errors import TrainerError

from personsearch_export.bundle_folder import open_bundle
from personsearch_export.errors import ExportError

if TYPE_CHECKING:
    from personsearch_train.data.structures import PersonSearchSplit
    from personsearch_train.data.tbps import SentenceQueries
    from personsearch_train.evaluation.predictions import SearchPredictions
    from personsearch_train.evaluation.scoring import EvalOptions

__all__ = ["add_arguments", "predictions_from_bundle", "run", "sentence_predictions_from_bundle"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``personsearch eval`` (the trainer's, plus ``--bundle`` and ``--backend``).

    Args:
        parser: The subcommand's parser.
    """
    sources = trainer_evaluate.add_arguments(parser)
    # In the trainer's source group, so argparse enforces exactly one of the three sources.
    sources.add_argument(
        "--bundle",
        type=Path,
        default=None,
        help="run this exported bundle with the torch-free runtime on the test split",
    )
    parser.add_argument(
        "--backend",
        choices=("ort", "trt"),
        default="ort",
        help="with --bundle: ONNX Runtime (default) or TensorRT engines in BUNDLE/engines",
    )


def _runtime_device(device: str, backend: str) -> str:
    if device != "auto":
        return device
    # TensorRT only runs on a GPU; ONNX Runtime defaults to the CPU, which is what the
    # runtime is measured and checked on.
    return "cuda" if backend == "trt" else "cpu"


def predictions_from_bundle(
    bundle: str | Path,
    split: PersonSearchSplit,
    *,
    backend: str = "ort",
    device: str = "cpu",
    batch_size: int = 1,
    query_context: bool = False,
    progress: bool = True,
) -> SearchPredictions:
    """Load a bundle into a ``PersonSearcher`` and predict on a test split.

    Args:
        bundle: The bundle folder.
        split: The test split.
        backend: ``"ort"`` or ``"trt"``.
        device: ``"cpu"`` or ``"cuda[:N]"``.
        batch_size: Gallery images per detector call (capped at the bundle's largest batch).
        query_context: Also record the CBGM query context.
        progress: Show progress bars.

    Returns:
        The ``SearchPredictions``.
    """
    from personsearch_runtime.searcher import PersonSearcher

    from personsearch_export.runtime_predictions import predict_split_with_runtime

    searcher = PersonSearcher(bundle=bundle, backend=backend, device=device, batch_size=batch_size)
    return predict_split_with_runtime(searcher, split, query_context=query_context, progress=progress)


def sentence_predictions_from_bundle(
    bundle: str | Path,
    split: PersonSearchSplit,
    queries: SentenceQueries,
    *,
    backend: str = "ort",
    device: str = "cpu",
    batch_size: int = 1,
    progress: bool = True,
) -> SearchPredictions:
    """Load a bundle with text graphs into a ``PersonSearcher`` and predict sentence search.

    Args:
        bundle: The bundle folder (exported with ``--text-checkpoint``).
        split: The person-search test split.
        queries: Its sentence queries.
        backend: ``"ort"`` or ``"trt"``.
        device: ``"cpu"`` or ``"cuda[:N]"``.
        batch_size: Gallery images per detector call (capped at the bundle's largest batch).
        progress: Show progress bars.

    Returns:
        Predictions for the split with one query per sentence.

    Raises:
        ExportError: The bundle has no text graphs.
    """
    from personsearch_runtime.searcher import PersonSearcher

    from personsearch_export.runtime_sentence_search import predict_sentence_search_with_runtime

    searcher = PersonSearcher(bundle=bundle, backend=backend, device=device, batch_size=batch_size)
    return predict_sentence_search_with_runtime(searcher, split, queries, progress=progress)


def _run_tbps_bundle(args: argparse.Namespace, options: EvalOptions) -> int:
    """``--dataset cuhk_sysu_tbps|prw_tbps --bundle B``: sentence search through the runtime."""
    from personsearch_train.data.tbps import load_sentence_queries

    bundle = open_bundle(args.bundle, verify_hashes=False)
    if not bundle.manifest.has_text:
        raise ExportError(
            f"bundle {bundle.root} has no text encoder, so it cannot search by sentence ({args.dataset}); "
            "export it with 'personsearch export --checkpoint DET_RUN --text-checkpoint T2I_RUN --out BUNDLE'"
        )
    root = trainer_evaluate.tbps_dataset_root(args.dataset, args.root)
    split = load_split(options.dataset, root, "test")
    queries = load_sentence_queries(args.dataset, root, split)
    predictions = sentence_predictions_from_bundle(
        args.bundle,
        split,
        queries,
        backend=args.backend,
        device=_runtime_device(args.device, args.backend),
        batch_size=args.batch_size,
    )
    if args.save_predictions is not None:
        print(f"wrote {predictions.save(args.save_predictions)}")
    return trainer_evaluate.report_sentence_search(
        args.dataset,
        split,
        queries,
        predictions,
        options,
        json_path=args.json,
        plot_dir=args.plot_dir,
        label=f"{Path(args.bundle).name} via runtime ({args.backend})",
    )


def run(args: argparse.Namespace) -> int:
    """Score the chosen source and report.

    Args:
        args: Parsed options.

    Returns:
        Exit status 0.
    """
    if args.bundle is None:
        if args.backend != "ort":
            raise TrainerError("--backend is a --bundle option; the checkpoint path runs PyTorch")
        return trainer_evaluate.run(args)
    options = trainer_evaluate.eval_options_from_args(args)
    if args.gt_boxes:
        raise TrainerError("--gt-boxes is a --checkpoint option; a bundle is evaluated on its own detections")
    if args.dataset in TBPS_DATASETS:
        return _run_tbps_bundle(args, options)
    # The bundle's structure is checked before the test split is read (which can take a
    # while); the searcher checks its hashes when it loads it.
    open_bundle(args.bundle, verify_hashes=False)
    split = load_split(options.dataset, args.root, "test")
    predictions = predictions_from_bundle(
        args.bundle,
        split,
        backend=args.backend,
        device=_runtime_device(args.device, args.backend),
        batch_size=args.batch_size,
        query_context=options.cbgm,
    )
    if args.save_predictions is not None:
        print(f"wrote {predictions.save(args.save_predictions)}")
    label = f"{Path(args.bundle).name} via runtime ({args.backend})"
    return trainer_evaluate.report_predictions(
        split, predictions, options, json_path=args.json, plot_dir=args.plot_dir, label=label
    )
