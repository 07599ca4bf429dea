"""``personsearch bench``: time detection + embedding of a bundle on this machine.

Frames are decoded into memory first (from ``--source``, or synthetic noise frames of
``--size``), so the table measures preprocessing and inference, not the disk. Each
batch size is warmed up, then timed over the same frames; frames/s is reported with
the split between preprocessing and the model. The first lines say which detection path
runs and why (``PipelineChoice.describe``).
"""

from __future__ import annotations

import argparse
import time

from personsearch_runtime.commands._options import add_model_options


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must be HxW, e.g. 576x768; got {text!r}") from None
    return h, w


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``personsearch bench``."""
    add_model_options(parser)
    parser.add_argument(
        "--source", nargs="*", default=[], help="images/videos/folders to time on (default: noise)"
    )
    parser.add_argument("--frames", type=int, default=16, help="frames to time per batch size (default 16)")
    parser.add_argument(
        "--size", type=_size, default=(576, 768), help="synthetic frame size HxW (default 576x768)"
    )
    parser.add_argument(
        "--batch", type=int, nargs="+", default=[1, 4], help="batch sizes to time (default 1 4)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed batches per batch size (default 1)")


def run(args: argparse.Namespace) -> int:
    """Print a frames/s table per batch size."""
    import numpy as np

    from personsearch_runtime.errors import PersonSearchError
    from personsearch_runtime.preprocess import batch_images, prepare_image
    from personsearch_runtime.searcher import PersonSearcher
    from personsearch_runtime.sources import FrameReader, expand_sources

    if args.source:
        reader = FrameReader(expand_sources(args.source))
        images = []
        for frame in reader:
            images.append(frame.image)
            if len(images) >= args.frames:
                break
        reader.close()
        if not images:
            raise PersonSearchError("no readable frames in --source")
    else:
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (*args.size, 3), dtype=np.uint8) for _ in range(args.frames)]
    print(
        f"{len(images)} frames of {images[0].shape[0]}x{images[0].shape[1]}; backend {args.backend}, "
        f"device {args.device}"
    )
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
            f"{n / (t_pre + t_model):.1f} |"
        )
    return 0
