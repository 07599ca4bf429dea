"""``personsearch query``: find a person (a crop, a box in a frame, or a sentence) in a gallery.

``--text`` searches by description (the bundle's text encoder against the crop
embeddings the gallery stores); give it several times for several sentences of the same
person (one query). With ``--image`` or ``--frame``/``--box`` as well, hits are ranked
by ``--text-weight`` x sentence similarity + (1 - ``--text-weight``) x image similarity
(``GalleryIndex.search_fused``). A sentence that is empty, has no letters or digits, or
is not UTF-8 is refused before anything loads; one longer than the text encoder takes is
cut, with a warning.

Everything the user typed is checked before the bundle and gallery are loaded: the box
(four finite numbers, x1 < x2 and y1 < y2; negative values are fine, ``--box -5,10,50,100``
and ``--box=-5,10,50,100`` both work), the query image (an image file, not a folder, a
video or a corrupt file, at least ``MIN_QUERY_SIDE`` pixels on a side) and ``--out`` (a
folder, or a path where one can be made).

A query given as ``--frame`` and ``--box`` leaves out the hits from that frame itself,
as the PRW protocol leaves the query frame out of the gallery: its best hit would be the
query person, found where the user already saw them. ``--include-query-frame`` keeps
them.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from personsearch_runtime.atomic_files import atomic_write_bytes
from personsearch_runtime.commands._options import add_model_options, positive_int
from personsearch_runtime.errors import PersonSearchError

#: Hits drawn in hits.jpg; hits.json holds all of them.
DRAWN_HITS = 20


def _box(text: str) -> tuple[float, float, float, float]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"must be 4 numbers x1,y1,x2,y2 (pixels), got {text!r}")
    try:
        x1, y1, x2, y2 = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 4 numbers x1,y1,x2,y2 (pixels), got {text!r}") from None
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise argparse.ArgumentTypeError(f"must be 4 finite numbers x1,y1,x2,y2 (pixels), got {text!r}")
    if x2 <= x1 or y2 <= y1:
        raise argparse.ArgumentTypeError(f"needs x1 < x2 and y1 < y2 (x1,y1,x2,y2 in pixels), got {text!r}")
    return x1, y1, x2, y2


def _weight(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``personsearch query``."""
    add_model_options(parser)
    parser.add_argument("--gallery", required=True, help="gallery directory built with the same bundle")
    parser.add_argument(
        "--text",
        action="append",
        default=None,
        metavar="SENTENCE",
        help='describe the person, e.g. --text "a woman in a red coat with a black backpack"; repeat for '
        "several sentences of the same person; with --image or --frame the two are fused",
    )
    parser.add_argument(
        "--text-weight",
        type=_weight,
        default=0.5,
        help="with --text and an image query: weight of the sentence similarity in [0, 1] (default 0.5)",
    )
    what = parser.add_mutually_exclusive_group(required=False)
    what.add_argument("--image", help="image file: a crop of the person to find")
    what.add_argument("--frame", help="image file: a full frame containing the person (with --box)")
    parser.add_argument(
        "--box",
        type=_box,
        help="x1,y1,x2,y2 of the person in --frame, in pixels (negative values allowed: --box=-5,10,50,100)",
    )
    parser.add_argument("--top-k", type=positive_int, default=10, help="hits to return (default 10)")
    parser.add_argument(
        "--include-query-frame",
        action="store_true",
        help="with --frame: keep hits from the query frame itself (left out by default, as the PRW protocol "
        "does, since the best of them is the query person)",
    )
    parser.add_argument(
        "--score-weighted",
        action="store_true",
        help="rank by similarity x detection score instead of similarity",
    )
    parser.add_argument("--out", required=True, help="folder for hits.json and hits.jpg (created if missing)")
    parser.add_argument(
        "--json",
        default=None,
        metavar="FILE",
        help="also write the hits JSON to this file (the same content as OUT/hits.json)",
    )


def _read_image(path: str, option: str):  # noqa: ANN202 - returns an ndarray
    """Decode the query image, or say exactly why it cannot be used."""
    import cv2
    import numpy as np

    from personsearch_runtime.sources import is_video

    if not path.strip():
        raise PersonSearchError(f"{option} is empty; give the path of an image file")
    file = Path(path)
    if file.is_dir():
        raise PersonSearchError(
            f"{option} {path} is a folder; {option} expects one image file (e.g. person.jpg)"
        )
    if not file.exists():
        raise PersonSearchError(f"{option} {path} does not exist; give the path of an image file")
    if not file.is_file():
        raise PersonSearchError(f"{option} {path} is not a regular file; give an image file (JPEG, PNG, ...)")
    if is_video(file):
        raise PersonSearchError(
            f"{option} {path} is a video; {option} expects an image: save the frame that shows the person "
            "as a .jpg or .png and give that"
        )
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise PersonSearchError(
            f"{option} {path} is not a readable image (empty, corrupt or not an image format OpenCV "
            "decodes); give a JPEG, PNG, BMP or TIFF file"
        )
    return image


def _check_out(out: Path) -> None:
    """Refuse an ``--out`` where the two result files cannot go, before any work is done."""
    if out.exists() and not out.is_dir():
        raise PersonSearchError(
            f"--out {out} is a file; --out is the folder that receives hits.json and hits.jpg: give a "
            "folder path (it is created when missing)"
        )
    ancestor = out.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        raise PersonSearchError(f"--out {out} cannot be created: {ancestor} is a file, not a folder")
    for name in ("hits.json", "hits.jpg"):
        if (out / name).is_dir():
            raise PersonSearchError(
                f"{out / name} is a folder, but query writes its {name} file there; move that folder "
                "away or give another --out"
            )


def _check_json_path(text: str) -> Path:
    """Refuse a ``--json`` path that cannot receive a file, before any work is done."""
    if not text.strip():
        raise PersonSearchError("--json is empty; give a file path for the hits, e.g. --json hits.json")
    path = Path(text)
    if path.is_dir():
        raise PersonSearchError(f"--json {text} is a folder; give a file path, e.g. {path / 'hits.json'}")
    if path.parent.exists() and not path.parent.is_dir():
        raise PersonSearchError(f"--json {text} cannot be written: {path.parent} is a file, not a folder")
    return path


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _search(searcher, gallery, query, sentences: list[str], args: argparse.Namespace, top_k: int) -> list:  # noqa: ANN001
    """One search for what the user gave: sentences, an image (crop or frame + box), or both fused."""
    crop = query if args.image is not None else None
    frame = query if args.frame is not None else None
    if sentences and query is not None:
        return searcher.search_mixed(
            gallery,
            sentences,
            crop_bgr=crop,
            frame_bgr=frame,
            box=args.box,
            text_weight=args.text_weight,
            top_k=top_k,
        )
    if sentences:
        return searcher.search_text(gallery, sentences, top_k, score_weighted=args.score_weighted)
    if crop is not None:
        return searcher.search_crop(gallery, crop, top_k=top_k, score_weighted=args.score_weighted)
    return searcher.search_box(gallery, frame, args.box, top_k=top_k, score_weighted=args.score_weighted)


def _hits_outside_query_frame(
    search: Callable[[int], list], gallery_size: int, args: argparse.Namespace
) -> list:
    """``search(top_k)``'s hits without those from the ``--frame`` query's own frame, unless kept.

    The gallery is asked for more hits until ``--top-k`` remain after leaving the query
    frame's detections out, or the whole gallery has been ranked. A crop or sentence
    query (no ``--frame``), or ``--include-query-frame``, is one search.
    """
    if args.frame is None or args.include_query_frame:
        return search(args.top_k)
    wanted = args.top_k
    while True:
        hits = search(wanted)
        kept = [h for h in hits if not _same_file(h.source, args.frame)]
        if len(kept) >= args.top_k or len(hits) < wanted or wanted >= gallery_size:
            break
        wanted = min(2 * wanted + len(hits) - len(kept), gallery_size)
    return [dataclasses.replace(h, rank=rank) for rank, h in enumerate(kept[: args.top_k], 1)]


def run(args: argparse.Namespace) -> int:
    """Search, write hits.json and hits.jpg, print the ranked list."""
    from personsearch_runtime.drawing import draw_hits
    from personsearch_runtime.gallery import GalleryIndex
    from personsearch_runtime.preprocess import MIN_QUERY_SIDE
    from personsearch_runtime.searcher import PersonSearcher
    from personsearch_runtime.text_search import SentenceTruncatedWarning, check_sentence

    sentences = args.text or []
    if args.image is None and args.frame is None and not sentences:
        raise PersonSearchError(
            "give the person to find: --text SENTENCE, --image CROP, or --frame F --box B"
        )
    sentences = [
        check_sentence(s, "--text" if len(sentences) == 1 else f"--text #{i + 1}")
        for i, s in enumerate(sentences)
    ]
    if args.frame is not None and args.box is None:
        raise PersonSearchError("--frame needs --box x1,y1,x2,y2 (the person's box in that frame, in pixels)")
    if args.image is not None and args.box is not None:
        raise PersonSearchError("--box goes with --frame, not with --image (a crop is its own box)")
    if args.top_k < 1:  # argparse checks the command line; this guards callers building args by hand
        raise PersonSearchError(f"--top-k must be >= 1, got {args.top_k}")
    if not args.out.strip():
        # Path("") is "." : an empty --out (an unset shell variable) would write into the current folder.
        raise PersonSearchError("--out is empty; give a folder for hits.json and hits.jpg")
    out = Path(args.out)
    _check_out(out)
    json_copy = _check_json_path(args.json) if args.json is not None else None
    query = None
    if args.image is not None:
        query = _read_image(args.image, "--image")
        height, width = query.shape[:2]
        if min(height, width) < MIN_QUERY_SIDE:
            raise PersonSearchError(
                f"--image {args.image} is {width}x{height} pixels (WxH); a query crop must be at least "
                f"{MIN_QUERY_SIDE}x{MIN_QUERY_SIDE} to show a person: give a larger crop, or the full frame "
                "with --frame and --box"
            )
    elif args.frame is not None:
        query = _read_image(args.frame, "--frame")
    searcher = PersonSearcher(
        bundle=args.bundle, backend=args.backend, device=args.device, batch_size=1, pipeline=args.pipeline
    )
    # GPU faiss searches the gallery when installed and the user asked for the GPU.
    use_gpu = args.device.startswith("cuda")
    with warnings.catch_warnings(record=True) as caught:
        # A cut sentence is reported as one line of the command's output, not as a
        # Python warning with a source line.
        warnings.simplefilter("always", SentenceTruncatedWarning)
        with GalleryIndex.open_for_bundle(
            args.gallery, searcher.bundle, readonly=True, use_gpu=use_gpu
        ) as gallery:
            if len(gallery) == 0:
                raise PersonSearchError(f"gallery {args.gallery} is empty; index some images or videos first")
            if sentences and query is not None and args.score_weighted:
                raise PersonSearchError(
                    "--score-weighted applies to single-modality queries, not to --text with an image"
                )
            search = functools.partial(_search, searcher, gallery, query, sentences, args)
            hits = _hits_outside_query_frame(search, len(gallery), args)
    for warning in caught:
        if issubclass(warning.category, SentenceTruncatedWarning):
            print(f"personsearch query: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "query": {
            "image": args.image,
            "frame": args.frame,
            "box": list(args.box) if args.box else None,
            "text": sentences or None,
            "text_weight": args.text_weight if sentences and query is not None else None,
        },
        "bundle": str(searcher.bundle.root),
        "gallery": str(args.gallery),
        "score_weighted": args.score_weighted,
        "hits": [h.to_json() for h in hits],
    }
    encoded = json.dumps(payload, indent=2, allow_nan=False).encode("utf-8")
    atomic_write_bytes(out / "hits.json", encoded)
    if json_copy is not None:
        json_copy.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(json_copy, encoded)
    picture = draw_hits(query, hits[:DRAWN_HITS], out / "hits.jpg", query_box=args.box, sentences=sentences)
    for h in hits:
        where = f"frame {h.frame_index} ({h.timestamp:.2f} s)" if h.timestamp is not None else "image"
        box = ",".join(f"{v:.0f}" for v in h.box)
        print(f"#{h.rank:<3} sim {h.similarity:.3f}  score {h.score:.2f}  {h.source} {where} box {box}")
    shown = f" (the picture shows the best {DRAWN_HITS} of {len(hits)})" if len(hits) > DRAWN_HITS else ""
    also = f" and {json_copy}" if json_copy is not None else ""
    print(f"wrote {out / 'hits.json'}{also} and {picture}{shown}")
    return 0
