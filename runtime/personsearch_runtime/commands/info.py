"""``personsearch info``: what a gallery was built with, and how much it holds."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``personsearch info``."""
    parser.add_argument("--gallery", required=True, help="gallery directory")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args: argparse.Namespace) -> int:
    """Print the gallery description."""
    from personsearch_runtime.gallery import GalleryIndex

    with GalleryIndex.open(args.gallery, readonly=True) as gallery:
        info = gallery.info()
    if args.json:
        print(json.dumps(info.to_json(), indent=2))
        return 0
    width = max(len(k) for k in info.to_json())
    for key, value in info.to_json().items():
        print(f"{key:<{width}}  {value}")
    return 0
