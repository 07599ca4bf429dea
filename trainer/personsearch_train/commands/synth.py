"""``personsearch synth``: generate the synthetic person-search data set.

With ``--unlabelled-crops N`` it writes instead an unlabelled person-crop set (the
stand-in for LUPerson that UniPT pre-trains on), whose people are absent from the text
layouts of the set that ``--preset`` and ``--target-seed`` name.

With ``--subtask-sets`` it writes instead the sub-task sets of hybrid person-search
pre-training (detection-only COCO scenes, labelled Market-1501 crops, unlabelled
crops), whose people are absent from every layout of that set and which are rendered
in another style (:mod:`personsearch_train.data.synthetic.subtask_sets`).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``personsearch synth``.

    Args:
        parser: The subcommand's parser.
    """
    from personsearch_train.data.synthetic.generator import PRESETS

    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output folder: new, empty, or holding a previous synthetic set (which is replaced)",
    )
    parser.add_argument(
        "--preset", choices=tuple(PRESETS), default="tiny", help="size of the set (default: tiny)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed from 0 to 2**32-1; the same seed gives identical files (default: 0)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="rendering processes (default: 1 for tiny sets, else all CPUs)",
    )
    # Each writes another kind of set into --out; argparse refuses both at once.
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument(
        "--unlabelled-crops",
        type=int,
        default=None,
        metavar="N",
        help="write only an unlabelled set of N person crops (no captions, no identities) whose people "
        "are not in the PEDES/UFine6926 layouts of the set named by --preset and --target-seed; "
        "--seed then seeds the crop set",
    )
    kind.add_argument(
        "--subtask-sets",
        action="store_true",
        help="write only the hybrid pre-training sub-task sets (COCO detection scenes, Market-1501 "
        "crops, LUPerson-synthetic crops), sized by --preset, with none of the people of the set named "
        "by --preset and --target-seed and in another style; --seed then seeds these sets",
    )
    parser.add_argument(
        "--target-seed",
        type=int,
        default=None,
        help="with --unlabelled-crops or --subtask-sets: seed of the synthetic set whose people to keep "
        "out (default: 0)",
    )


def run(args: argparse.Namespace) -> int:
    """Generate the set and print a short summary.

    Args:
        args: Parsed options (``out``, ``preset``, ``seed``, ``workers``,
            ``unlabelled_crops``, ``subtask_sets``, ``target_seed``).

    Returns:
        Exit status 0.

    Raises:
        ConfigError: A seed outside 0..2**32-1, fewer than one worker or crop,
            ``--target-seed`` without ``--unlabelled-crops`` or ``--subtask-sets``, or
            both of those (a namespace built by hand; the parser refuses that itself).
        TrainerError: ``--out`` is a file, lies under a file, or is a non-empty folder
            that holds no synthetic set; or writing failed (disk full, permissions),
            in which case a folder this run created is removed again.
    """
    from personsearch_train.commands.output_paths import check_output_folder
    from personsearch_train.data.synthetic.generator import generate_dataset, tbps_entries
    from personsearch_train.engine.config import MAX_SEED
    from personsearch_train.errors import ConfigError, TrainerError

    if not 0 <= args.seed <= MAX_SEED:
        raise ConfigError(f"--seed must be an integer from 0 to {MAX_SEED} (2**32-1), got {args.seed}")
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}.")
    # getattr: a namespace built by hand for the full set may lack the newer options.
    unlabelled = getattr(args, "unlabelled_crops", None)
    subtask = bool(getattr(args, "subtask_sets", False))
    target_seed = getattr(args, "target_seed", None)
    if unlabelled is not None and subtask:
        raise ConfigError("--unlabelled-crops and --subtask-sets write different sets; choose one.")
    if unlabelled is None and not subtask and target_seed is not None:
        raise ConfigError("--target-seed only applies with --unlabelled-crops or --subtask-sets.")
    if unlabelled is not None and unlabelled < 1:
        raise ConfigError(f"--unlabelled-crops must be at least 1, got {unlabelled}.")
    if target_seed is not None and not 0 <= target_seed <= MAX_SEED:
        raise ConfigError(
            f"--target-seed must be an integer from 0 to {MAX_SEED} (2**32-1), got {target_seed}"
        )
    out = Path(args.out)
    check_output_folder(out, "--out")
    # Everything in a folder that was new or empty is this run's, so a failed run may
    # remove it whole; a previous set being replaced is the generator's to refuse or clear.
    fresh = not out.exists() or not any(out.iterdir())
    try:
        if unlabelled is not None:
            return _run_unlabelled(args, unlabelled, 0 if target_seed is None else target_seed)
        if subtask:
            return _run_subtask(args, 0 if target_seed is None else target_seed)
        manifest = generate_dataset(
            out,
            args.preset,
            args.seed,
            workers=args.workers,
            progress=lambda m: print(f"synth: {m}", flush=True),
        )
    except (OSError, KeyboardInterrupt) as exc:
        if fresh and out.is_dir():
            shutil.rmtree(out, ignore_errors=True)
        if isinstance(exc, KeyboardInterrupt):
            raise
        if fresh:
            state = f"the partial set was removed ({out}). Run it again"
        else:
            state = (
                f"the previous set in {out} was already removed and the new one is incomplete: move any "
                "files of your own out of it, delete it and run it again"
            )
        raise TrainerError(
            f"writing the synthetic set failed: {exc.strerror or exc} ({exc.filename or out}); {state} "
            "once there is space and permission to write, or choose another --out"
        ) from None
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
    for truth, label in ((manifest.cuhk_sysu, "CUHK-SYSU-TBPS"), (manifest.prw, "PRW-TBPS")):
        train, test = (len(tbps_entries(truth, split)) for split in ("train", "test"))
        print(f"  {label:<11} {train} train / {test} test sentence entries (2 sentences each)")
    p = c["pedes"]
    print(f"  {'PEDES':<11} {p['images']} crops, {p['identities']} ids, {p['captions']} captions")
    for name, label in (("ufine6926", "UFine6926"), ("ufine3c", "UFine3C")):
        u = c[name]
        parts = ", ".join(f"{v} {k.removesuffix('_images')}" for k, v in u.items() if k.endswith("_images"))
        ids, captions = u["identities"], u["captions"]
        print(f"  {label:<11} {u['images']} images ({parts}), {ids} ids, {captions} captions")
    print(f"  {'COCO':<11} {c['coco']['train_images']} train / {c['coco']['val_images']} val images")
    m = c["market1501"]
    crops = f"{m['bounding_box_train']} train / {m['bounding_box_test']} test / {m['query']} query crops"
    print(f"  {'Market-1501':<11} {crops}")
    print(f"  done in {manifest.seconds:.1f} s")
    return 0


def _run_unlabelled(args: argparse.Namespace, count: int, target_seed: int) -> int:
    """Write the unlabelled crop set of ``--unlabelled-crops`` and print its summary.

    Args:
        args: Parsed options (``out``, ``preset``, ``seed``, ``workers``).
        count: Number of crops.
        target_seed: Seed of the synthetic set whose people are kept out.

    Returns:
        Exit status 0.
    """
    from personsearch_train.data.synthetic.unlabelled_crops import generate_unlabelled_crops

    manifest = generate_unlabelled_crops(
        Path(args.out),
        count=count,
        seed=args.seed,
        target_preset=args.preset,
        target_seed=target_seed,
        workers=args.workers,
        progress=lambda m: print(f"synth: {m}", flush=True),
    )
    print(f"unlabelled crop set (seed {manifest.seed}) written to {manifest.root}")
    print(
        f"  {manifest.count} crops of {manifest.identities} people, none of them in the PEDES/UFine6926 "
        f"layouts of the '{manifest.target_preset}' set with seed {manifest.target_seed} "
        f"({manifest.rejected_identities} look-alikes rejected)"
    )
    print(f"  attribute truth: {manifest.truth_path}")
    print("    for measuring pseudo-caption accuracy only: training must never read it")
    print(f"  done in {manifest.seconds:.1f} s")
    return 0


def _run_subtask(args: argparse.Namespace, target_seed: int) -> int:
    """Write the hybrid pre-training sub-task sets of ``--subtask-sets`` and print their summary.

    Args:
        args: Parsed options (``out``, ``preset``, ``seed``, ``workers``).
        target_seed: Seed of the synthetic set whose people are kept out.

    Returns:
        Exit status 0.
    """
    from personsearch_train.data.synthetic.subtask_sets import generate_subtask_sets

    manifest = generate_subtask_sets(
        Path(args.out),
        preset=args.preset,
        seed=args.seed,
        target_seed=target_seed,
        workers=args.workers,
        progress=lambda m: print(f"synth: {m}", flush=True),
    )
    c = manifest.counts
    coco, market, crops = c["COCO"], c["Market-1501"], c["LUPerson-synthetic"]
    rejected = sum(manifest.rejected_identities.values())
    cameras = market["cameras"]
    print(f"sub-task pre-training sets (seed {manifest.seed}) written to {manifest.root}")
    print(
        f"  COCO {coco['train_images']} scenes / {coco['person_boxes']} boxes, Market-1501 "
        f"{market['bounding_box_train']} crops of {market['identities']} ids over {cameras} cameras, "
        f"LUPerson-synthetic {crops['images']} crops; nobody from the '{manifest.preset}' set with seed "
        f"{manifest.target_seed} ({rejected} look-alikes rejected); shifted style"
    )
    print(f"  done in {manifest.seconds:.1f} s")
    return 0
