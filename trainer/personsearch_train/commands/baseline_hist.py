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
        "--dataset", choices=available_readers("person_search"), required=True, help="which dataset reader"
    )
    parser.add_argument("--root", type=Path, required=True, help="dataset folder (e.g. <synth_out>/PRW)")
    parser.add_argument("--out", type=Path, required=True, help="predictions .npz to write")


def run(args: argparse.Namespace) -> int:
    """Describe every ground-truth and query box with colour histograms and save the predictions.

    Args:
        args: Parsed options (``dataset``, ``root``, ``out``).

    Returns:
        Exit status 0.
    """
    from personsearch_train.baselines.color_histogram import ColorHistogramEmbedder, histogram_predictions
    from personsearch_train.data.registry import load_split

    start = time.perf_counter()
    split = load_split(args.dataset, args.root, "test")
    embedder = ColorHistogramEmbedder()
    predictions = histogram_predictions(split, embedder, progress=True)
    path = predictions.save(args.out)
    print(
        f"baseline-hist: {predictions.num_gallery} gallery images, {len(predictions.det_scores)} boxes, "
        f"{predictions.num_queries} queries, {embedder.dim}-d HSV stripe histograms -> {path} "
        f"({time.perf_counter() - start:.1f} s)"
    )
    print(
        f"score it with: personsearch eval --dataset {args.dataset} --root {args.root} --predictions {path}"
    )
    return 0
