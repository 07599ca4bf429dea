"""``personsearch info``: what a gallery was built with and holds, and which detection path a bundle takes.

``--gallery`` describes the gallery: model, settings (embedding dimension, index kind,
video frame stride) and counts. It opens the gallery read-only, so it works while
``personsearch index`` writes it. A path that is a file, a folder that is not a gallery,
an interrupted creation and a damaged or empty database each get one message (exit 2).

``--bundle`` (with ``--backend``, ``--device`` and ``--pipeline`` as for ``index``,
``query`` and ``bench``) prints the path those commands would take on this machine and
why, without loading any model.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from personsearch_runtime.commands._options import add_model_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``personsearch info``."""
    parser.add_argument("--gallery", help="gallery directory to describe")
    add_model_options(parser, bundle_required=False)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args: argparse.Namespace) -> int:
    """Print the gallery description and/or the bundle's detection path.

    Raises:
        PersonSearchError: Neither option given, or the gallery or bundle cannot be read.
    """
    from personsearch_runtime.bundle import Bundle
    from personsearch_runtime.errors import PersonSearchError
    from personsearch_runtime.searcher import pipeline_for_bundle

    if args.gallery is None and args.bundle is None:
        raise PersonSearchError("give --gallery DIR, --bundle DIR, or both")
    payload: dict[str, Any] = {}
    lines: list[str] = []
    if args.gallery is not None:
        from personsearch_runtime.gallery import GalleryIndex

        with GalleryIndex.open(args.gallery, readonly=True) as gallery:
            payload = gallery.info().to_json()
        width = max(len(k) for k in payload)
        lines += [f"{key:<{width}}  {'-' if value is None else value}" for key, value in payload.items()]
    if args.bundle is not None:
        bundle = Bundle.load(args.bundle)
        choice = pipeline_for_bundle(
            bundle, backend=args.backend, device=args.device, requested=args.pipeline
        )
        payload["pipeline"] = {
            "path": choice.path,
            "reason": choice.reason,
            "backend": choice.backend,
            "device": choice.device,
            "io_binding": choice.io_binding,
            "warning": choice.warning,
            "line": choice.line(),
        }
        lines += choice.describe()
        text, tokenizer = bundle.manifest.text, bundle.manifest.tokenizer
        payload["sentence_search"] = (
            None if text is None else {**text.to_json(), "max_tokens": tokenizer.max_length}
        )
        lines.append(
            "sentence search: no (export with --text-checkpoint to add it)"
            if text is None
            else f"sentence search: yes ({text.model_name} trained by {text.method}: {text.embedding_dim}-d, "
            f"crops {text.crop_size[0]}x{text.crop_size[1]}, up to {tokenizer.max_length} tokens"
            f"{', int8 text encoder for the CPU' if text.int8_file else ''})"
        )
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        print("\n".join(lines))
    return 0
