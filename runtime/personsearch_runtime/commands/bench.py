"""``personsearch bench``: time detection + embedding of a bundle on this machine.

Frames are decoded into memory first (from ``--source``, or synthetic noise frames of
``--size``), so the table measures preprocessing and inference, not the disk. Each
batch size is warmed up, then timed over the same frames; frames/s is reported with
the split between preprocessing and the model. The first lines say which detection path
runs and why (``PipelineChoice.describe``). A batch size above the bundle's largest is
timed at the largest, and the table says so.
"""

from __future__ import annotations

import argparse
import time

from personsearch_runtime.commands._options import add_model_options, non_negative_int, positive_int

#: Synthetic frame sides bench accepts, in pixels.
MIN_SIDE, MAX_SIDE = 16, 8192
#: Memory the decoded frames may take; more is a typo (``--frames 100000``), not a benchmark.
MAX_FRAME_BYTES = 2 << 30


def _size(text: str) -> tuple[int, int]:
    parts = text.strip().lower().split("x")
    try:
        h, w = (int(v) for v in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be HxW in pixels, e.g. 576x768; got {text!r}") from None
    if not (MIN_SIDE <= h <= MAX_SIDE and MIN_SIDE <= w <= MAX_SIDE):
        raise argparse.ArgumentTypeError(
            f"height and width must each be {MIN_SIDE} to {MAX_SIDE} pixels, e.g. 576x768; got {text!r}"
        )
    return h, w


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``personsearch bench``."""
    add_model_options(parser)
    parser.add_argument(
        "--source", nargs="+", default=[], help="images/videos/folders to time on (default: noise)"
    )
    parser.add_argument(
        "--frames", type=positive_int, default=16, help="frames to time per batch size (default 16)"
    )
    parser.add_argument(
        "--size",
        type=_size,
        default=(576, 768),
        help=f"synthetic frame size HxW, {MIN_SIDE} to {MAX_SIDE} pixels a side (default 576x768)",
    )
    parser.add_argument(
        "--batch", type=positive_int, nargs="+", default=[1, 4], help="batch sizes to time (default 1 4)"
    )
    parser.add_argument(
        "--warmup", type=non_negative_int, default=1, help="untimed batches per batch size (default 1)"
    )


def run(args: argparse.Namespace) -> int:
    """Print a frames/s table per batch size."""
    import numpy as np

    from personsearch_runtime.errors import PersonSearchError
    from personsearch_runtime.preprocess import batch_images, prepare_image
    from personsearch_runtime.searcher import PersonSearcher, normalize_device
    from personsearch_runtime.sources import FrameReader, expand_sources

    normalize_device(args.device)  # a typo is reported before any frame is made

    def too_much(nbytes: int, what: str) -> PersonSearchError:
        return PersonSearchError(
            f"{what} would hold {nbytes / 2**30:.1f} GiB of frames in memory (at most "
            f"{MAX_FRAME_BYTES / 2**30:.0f} GiB); lower --frames"
        )

    if args.source:
        reader = FrameReader(expand_sources(args.source))
        images = []
        held = 0
        try:
            for frame in reader:
                images.append(frame.image)
                held += frame.image.nbytes
                if held > MAX_FRAME_BYTES:
                    raise too_much(held, f"--frames {args.frames} from --source")
                if len(images) >= args.frames:
                    break
        finally:
            reader.close()
        if not images:
            raise PersonSearchError("no readable frames in --source; give images or videos OpenCV can decode")
    else:
        needed = args.frames * args.size[0] * args.size[1] * 3
        if needed > MAX_FRAME_BYTES:
            raise too_much(needed, f"--frames {args.frames} of --size {args.size[0]}x{args.size[1]}")
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (*args.size, 3), dtype=np.uint8) for _ in range(args.frames)]
    print(
        f"{len(images)} frames of {images[0].shape[0]}x{images[0].shape[1]}; backend {args.backend}, "
        f"device {args.device}"
    )
    notes = []
    for i, batch in enumerate(args.batch):
        searcher = PersonSearcher(
            bundle=args.bundle,
            backend=args.backend,
            device=args.device,
            batch_size=batch,
            pipeline=args.pipeline,
        )
        if i == 0:
            # The choice does not depend on the batch size: say it once, above the table.
            for line in searcher.pipeline_choice.describe():
                print(line)
            print("| batch | pipeline | preprocess ms/frame | model ms/frame | frames/s |")
            print("|---:|---|---:|---:|---:|")
        if searcher.batch_size != batch:
            notes.append(
                f"--batch {batch} is above the bundle's largest batch; timed at {searcher.batch_size}"
            )
        batch = searcher.batch_size
        spec = searcher.manifest.preprocessing
        chunks = [images[i : i + batch] for i in range(0, len(images), batch)]
        for chunk in chunks[: args.warmup]:
            searcher.detect_prepared([prepare_image(im, spec) for im in chunk])
        t_pre = t_model = 0.0
        for chunk in chunks:
            t0 = time.perf_counter()
            prepared = [prepare_image(im, spec) for im in chunk]
            batch_images(prepared, spec)
            t1 = time.perf_counter()
            searcher.detect_prepared(prepared)
            t2 = time.perf_counter()
            t_pre, t_model = t_pre + (t1 - t0), t_model + (t2 - t1)
        n = len(images)
        print(
            f"| {batch} | {searcher.pipeline} | {1000 * t_pre / n:.2f} | {1000 * t_model / n:.2f} | "
            f"{n / max(t_pre + t_model, 1e-9):.1f} |"
        )
    for note in notes:
        print(f"note: {note}")
    return 0
