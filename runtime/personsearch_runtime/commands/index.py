"""``personsearch index``: detect, embed and store people from images and videos in a gallery.

What it does when things go wrong (the gallery module's docstring has the details):

- Interrupted (Ctrl-C, ``kill -9``, power loss, full disk): every committed batch is kept;
  the same command resumes after the last committed frame. A gallery whose creation
  was killed is cleaned up and created again, with a one-line notice.
- One writer per gallery: a second ``index`` on the same gallery is refused at once,
  naming the first one's pid; ``query`` and ``info`` keep working meanwhile.
- Settings are part of the gallery: another model, another ``--every-nth-frame`` or
  another ``--index-factory`` than the gallery was built with is refused, never mixed.
- A source file whose content changed at the same path is indexed again and its old
  detections are replaced; the summary lists it.
- Unreadable files (empty, corrupt, unsupported) and video frames that do not decode are
  skipped, counted and named once in the summary; the exit code stays 0. Exit 2 with
  "none of the sources could be read" only when no source could be read and none of
  them had been indexed before.
- A damaged ``index.npz`` is rebuilt from ``gallery.sqlite`` (``--rebuild-index`` rewrites
  it without indexing anything).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from personsearch_runtime.commands._options import add_model_options, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``personsearch index``."""
    add_model_options(parser)
    parser.add_argument("--gallery", required=True, help="gallery directory (created when missing)")
    parser.add_argument(
        "sources", nargs="*", metavar="SOURCE", help="images, videos, folders or glob patterns (quote globs)"
    )
    parser.add_argument("--batch", type=positive_int, default=4, help="frames per detector call (default 4)")
    parser.add_argument(
        "--every-nth-frame",
        type=positive_int,
        default=1,
        help="keep every K-th video frame (default 1); fixed per gallery by its first index run",
    )
    parser.add_argument(
        "--index-factory",
        default=None,
        help="search index for a new gallery: Flat (exact, default), numpy, or a faiss factory "
        "string such as IVF4096,Flat or IVF4096,PQ32; an existing gallery keeps its own",
    )
    parser.add_argument(
        "--delete-source",
        action="append",
        default=[],
        metavar="PATH",
        help="remove this source's detections from the gallery first (repeatable)",
    )
    parser.add_argument(
        "--rebuild-index",
        action="store_true",
        help="rebuild the search index (index.npz) from gallery.sqlite and save it, e.g. after it was "
        "reported corrupted; SOURCEs are optional with it",
    )
    parser.add_argument(
        "--add-text-embeddings",
        action="store_true",
        help="give a gallery indexed without the text encoder a crop embedding for every stored person "
        "(needs a bundle exported with --text-checkpoint; the frames are read again, nothing is re-detected; "
        "resumable); SOURCEs are optional with it",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _is_not_a_skip(record: logging.LogRecord) -> bool:
    return not hasattr(record, "skipped_item")


@contextmanager
def _skips_left_to_the_summary() -> Iterator[None]:
    """Keep the frame reader from printing each skip as it happens; the summary names them all.

    Its other records still go through.
    """
    logger = logging.getLogger("personsearch_runtime.sources")
    logger.addFilter(_is_not_a_skip)
    try:
        yield
    finally:
        logger.removeFilter(_is_not_a_skip)


def run(args: argparse.Namespace) -> int:
    """Index the sources; print a summary.

    Returns:
        0, also when some files or frames were skipped (they are named in the summary).

    Raises:
        PersonSearchError: Bad sources, gallery or settings (printed as one message, exit 2).
    """
    from personsearch_runtime.errors import PersonSearchError
    from personsearch_runtime.gallery import GalleryIndex
    from personsearch_runtime.searcher import PersonSearcher
    from personsearch_runtime.sources import expand_sources

    if (
        not args.sources
        and not args.delete_source
        and not args.rebuild_index
        and not args.add_text_embeddings
    ):
        raise PersonSearchError(
            "give at least one SOURCE (or --delete-source PATH, --rebuild-index or --add-text-embeddings)"
        )
    # Expanded before any model loads, so a mistyped path fails at once.
    files = expand_sources(args.sources) if args.sources else []
    searcher = PersonSearcher(
        bundle=args.bundle,
        backend=args.backend,
        device=args.device,
        batch_size=args.batch,
        pipeline=args.pipeline,
    )
    # Without sources (--delete-source, --rebuild-index) there is nothing to create a gallery for.
    with GalleryIndex.open_for_bundle(
        args.gallery, searcher.bundle, index_factory=args.index_factory or "Flat", create=bool(files)
    ) as gallery:
        # A run without sources reads no frames, so its stride is neither checked nor recorded.
        gallery.check_settings(
            every_nth_frame=args.every_nth_frame if files else None, index_factory=args.index_factory
        )
        for source in args.delete_source:
            removed = gallery.delete_source(source)
            print(f"removed {source}: {removed} detections")
        if args.rebuild_index:
            gallery.rebuild_index()
        if args.add_text_embeddings:
            added = searcher.add_text_embeddings(
                gallery, progress=not args.no_progress and sys.stderr.isatty()
            )
            print(f"added text embeddings to {added} stored detections of {gallery.path}")
        if not files:
            gallery.save()
            if args.rebuild_index:
                count = len(gallery)
                print(f"rebuilt the search index of {gallery.path} from {count} stored detections")
            return 0
        with _skips_left_to_the_summary():
            summary = searcher.index(
                gallery,
                files,
                every_nth_frame=args.every_nth_frame,
                progress=not args.no_progress and sys.stderr.isatty(),
            )
        info = gallery.info()
        replaced = list(gallery.replaced_sources)
    _print_summary(summary, replaced, info)
    return 0


def _print_summary(summary: Any, replaced: list[str], info: Any) -> None:
    done = f", {summary.already_done} already done" if summary.already_done else ""
    print(
        f"indexed {summary.frames} frames ({summary.detections} detections) from {summary.sources} sources"
        f"{done} in {summary.seconds:.1f} s ({summary.frames_per_second:.1f} frames/s)"
    )
    if replaced:
        print(f"re-indexed {len(replaced)} changed file(s) (their old detections were replaced):")
        for path in replaced:
            print(f"  {path}")
    if summary.skipped:
        print(f"skipped {len(summary.skipped)} unreadable file(s):")
        for path, reason in summary.skipped:
            print(f"  {path}: {reason}")
    if summary.bad_frames:
        print(f"skipped undecodable frames in {len(summary.bad_frames)} video(s):")
        for path, reason in summary.bad_frames:
            print(f"  {path}: {reason}")
    print(
        f"gallery {info.path}: {info.num_sources} sources, {info.num_frames} frames, "
        f"{info.num_detections} detections"
    )
