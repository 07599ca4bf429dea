"""``personsearch index``: detect, embed and store people from images and videos in a gallery."""

from __future__ import annotations

import argparse
import sys

from personsearch_runtime.commands._options import add_model_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``personsearch index``."""
    add_model_options(parser)
    parser.add_argument("--gallery", required=True, help="gallery directory (created when missing)")
    parser.add_argument(
        "sources", nargs="*", metavar="SOURCE", help="images, videos, folders or glob patterns (quote globs)"
    )
    parser.add_argument("--batch", type=int, default=4, help="frames per detector call (default 4)")
    parser.add_argument(
        "--every-nth-frame", type=int, default=1, help="keep every K-th video frame (default 1)"
    )
    parser.add_argument(
        "--index-factory",
        default="Flat",
        help="search index for a new gallery: Flat (exact, default), numpy, or a faiss factory "
        "string such as IVF4096,Flat or IVF4096,PQ32",
    )
    parser.add_argument(
        "--delete-source",
        action="append",
        default=[],
        metavar="PATH",
        help="remove this source's detections from the gallery first (repeatable)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Index the sources; print a summary. Exit 0 (unreadable files are skipped and counted)."""
    from personsearch_runtime.gallery import GalleryIndex
    from personsearch_runtime.searcher import PersonSearcher

    if not args.sources and not args.delete_source:
        raise SystemExit("personsearch index: give at least one SOURCE (or --delete-source PATH)")
    searcher = PersonSearcher(
        bundle=args.bundle,
        backend=args.backend,
        device=args.device,
        batch_size=args.batch,
        pipeline=args.pipeline,
    )
    with GalleryIndex.open_for_bundle(
        args.gallery, searcher.bundle, index_factory=args.index_factory
    ) as gallery:
        for source in args.delete_source:
            removed = gallery.delete_source(source)
            print(f"removed {source}: {removed} detections")
        if args.delete_source and not args.sources:
            gallery.save()
            return 0
        summary = searcher.index(
            gallery,
            args.sources,
            every_nth_frame=args.every_nth_frame,
            progress=not args.no_progress and sys.stderr.isatty(),
        )
        info = gallery.info()
    done = f", {summary.already_done} already done" if summary.already_done else ""
    print(
        f"indexed {summary.frames} frames ({summary.detections} detections) from {summary.sources} sources"
        f"{done} in {summary.seconds:.1f} s ({summary.frames_per_second:.1f} frames/s)"
    )
    if summary.skipped:
        print(f"skipped {len(summary.skipped)} unreadable file(s):")
        for path, reason in summary.skipped:
            print(f"  {path}: {reason}")
    print(
        f"gallery {info.path}: {info.num_sources} sources, {info.num_frames} frames, "
        f"{info.num_detections} detections"
    )
    return 0
