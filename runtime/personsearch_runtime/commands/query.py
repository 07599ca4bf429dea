"""``personsearch query``: find a person (a crop, or a box in a frame) in a gallery."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from personsearch_runtime.atomic_files import atomic_write_bytes
from personsearch_runtime.commands._options import add_model_options
from personsearch_runtime.errors import PersonSearchError


def _box(text: str) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--box must be x1,y1,x2,y2 numbers, got {text!r}") from None
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"--box must have 4 numbers x1,y1,x2,y2, got {text!r}")
    return values  # type: ignore[return-value]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``personsearch query``."""
    add_model_options(parser)
    parser.add_argument("--gallery", required=True, help="gallery directory built with the same bundle")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--image", help="crop of the person to find")
    what.add_argument("--frame", help="full frame containing the person (with --box)")
    parser.add_argument("--box", type=_box, help="x1,y1,x2,y2 of the person in --frame, in pixels")
    parser.add_argument("--top-k", type=int, default=10, help="hits to return (default 10)")
    parser.add_argument(
        "--score-weighted",
        action="store_true",
        help="rank by similarity x detection score instead of similarity",
    )
    parser.add_argument("--out", required=True, help="folder for hits.json and hits.jpg")


def _read_image(path: str):  # noqa: ANN202 - returns an ndarray
    import cv2
    import numpy as np

    if not Path(path).is_file():
        raise PersonSearchError(f"query image {path} does not exist")
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise PersonSearchError(f"query image {path} is not a readable image")
    return image


def run(args: argparse.Namespace) -> int:
    """Search, write hits.json and hits.jpg, print the ranked list."""
    from personsearch_runtime.drawing import draw_hits
    from personsearch_runtime.gallery import GalleryIndex
    from personsearch_runtime.searcher import PersonSearcher

    if args.frame is not None and args.box is None:
        raise SystemExit("personsearch query: --frame needs --box x1,y1,x2,y2")
    if args.image is not None and args.box is not None:
        raise SystemExit("personsearch query: --box goes with --frame, not --image")
    if args.top_k < 1:
        raise SystemExit("personsearch query: --top-k must be >= 1")
    searcher = PersonSearcher(
        bundle=args.bundle, backend=args.backend, device=args.device, batch_size=1, pipeline=args.pipeline
    )
    # GPU faiss searches the gallery when installed and the user asked for the GPU.
    use_gpu = args.device.startswith("cuda")
    with GalleryIndex.open_for_bundle(
        args.gallery, searcher.bundle, readonly=True, use_gpu=use_gpu
    ) as gallery:
        if len(gallery) == 0:
            raise PersonSearchError(f"gallery {args.gallery} is empty; index some images or videos first")
        if args.image is not None:
            query = _read_image(args.image)
            hits = searcher.search_crop(gallery, query, top_k=args.top_k, score_weighted=args.score_weighted)
        else:
            query = _read_image(args.frame)
            hits = searcher.search_box(
                gallery, query, args.box, top_k=args.top_k, score_weighted=args.score_weighted
            )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "query": {"image": args.image, "frame": args.frame, "box": list(args.box) if args.box else None},
        "bundle": str(searcher.bundle.root),
        "gallery": str(args.gallery),
        "score_weighted": args.score_weighted,
        "hits": [h.to_json() for h in hits],
    }
    atomic_write_bytes(out / "hits.json", json.dumps(payload, indent=2).encode("utf-8"))
    picture = draw_hits(query, hits, out / "hits.jpg", query_box=args.box)
    for h in hits:
        where = f"frame {h.frame_index} ({h.timestamp:.2f} s)" if h.timestamp is not None else "image"
        box = ",".join(f"{v:.0f}" for v in h.box)
        print(f"#{h.rank:<3} sim {h.similarity:.3f}  score {h.score:.2f}  {h.source} {where} box {box}")
    print(f"wrote {out / 'hits.json'} and {picture}")
    return 0
