"""``personsearch baseline-hist``: the colour-histogram re-id baseline, written as a predictions file."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``personsearch baseline-hist``.

    Args:
        parser: The subcommand's parser.
    """
    from personsearch_train.data.registry import available_readers

    parser.add_argument(
        "--dataset",
        choices=available_readers("person_search", evaluable=True),
        required=True,
        help="which dataset reader",
    )
    parser.add_argument(
        "--root",
        type=Path,
        required=True,
        help="dataset folder (e.g. <synth_out>/PRW), or the folder holding it (<synth_out>)",
    )
    parser.add_argument("--out", type=Path, required=True, help="predictions .npz to write")


def run(args: argparse.Namespace) -> int:
    """Describe every ground-truth and query box with colour histograms and save the predictions.

    Args:
        args: Parsed options (``dataset``, ``root``, ``out``).

    Returns:
        Exit status 0.

    Raises:
        TrainerError: ``--root`` is missing or a file, ``--out`` is a folder or lies
            under a file, or the dataset cannot be read.
    """
    from personsearch_train.baselines.color_histogram import ColorHistogramEmbedder, histogram_predictions
    from personsearch_train.commands.output_paths import check_output_file
    from personsearch_train.data.registry import load_split
    from personsearch_train.engine.config import resolve_dataset_root

    start = time.perf_counter()
    # Both before any work: a bad --out would otherwise show only after every image is read.
    root = resolve_dataset_root(args.dataset, args.root)
    check_output_file(args.out, "--out")
    split = load_split(args.dataset, root, "test")
    embedder = ColorHistogramEmbedder()
    predictions = histogram_predictions(split, embedder, progress=True)
    path = predictions.save(args.out)
    print(
        f"baseline-hist: {predictions.num_gallery} gallery images, {len(predictions.det_scores)} boxes, "
        f"{predictions.num_queries} queries, {embedder.dim}-d HSV stripe histograms -> {path} "
        f"({time.perf_counter() - start:.1f} s)"
    )
    print(f"score it with: personsearch eval --dataset {args.dataset} --root {root} --predictions {path}")
    return 0
