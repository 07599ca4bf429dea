"""``personsearch synth``: generate the synthetic person-search data set."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``personsearch synth``.

    Args:
        parser: The subcommand's parser.
    """
    from personsearch_train.data.synthetic.generator import PRESETS

    parser.add_argument(
        "--out", type=Path, required=True, help="output folder (created; a previous set is replaced)"
    )
    parser.add_argument(
        "--preset", choices=tuple(PRESETS), default="tiny", help="size of the set (default: tiny)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed; the same seed gives identical files (default: 0)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="rendering processes (default: 1 for tiny sets, else all CPUs)",
    )


def run(args: argparse.Namespace) -> int:
    """Generate the set and print a short summary.

    Args:
        args: Parsed options (``out``, ``preset``, ``seed``, ``workers``).

    Returns:
        Exit status 0.
    """
    from personsearch_train.data.synthetic.generator import generate_dataset
    from personsearch_train.errors import ConfigError

    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}.")
    manifest = generate_dataset(
        args.out,
        args.preset,
        args.seed,
        workers=args.workers,
        progress=lambda m: print(f"synth: {m}", flush=True),
    )
    c = manifest.counts
    print(f"synthetic set '{manifest.preset}' (seed {manifest.seed}) written to {manifest.root}")
    for name, label in (("cuhk_sysu", "CUHK-SYSU"), ("prw", "PRW")):
        d = c[name]
        print(
            f"  {label:<11} {d['train_images']} train / {d['test_images']} test images, {d['boxes']} boxes "
            f"({d['labelled_boxes']} labelled), "
            f"{d['train_identities']} train / {d['test_identities']} test ids, "
            f"{d['queries']} queries"
        )
    p = c["pedes"]
    print(f"  {'PEDES':<11} {p['images']} crops, {p['identities']} ids, {p['captions']} captions")
    print(f"  {'COCO':<11} {c['coco']['train_images']} train / {c['coco']['val_images']} val images")
    m = c["market1501"]
    crops = f"{m['bounding_box_train']} train / {m['bounding_box_test']} test / {m['query']} query crops"
    print(f"  {'Market-1501':<11} {crops}")
    print(f"  done in {manifest.seconds:.1f} s")
    return 0
