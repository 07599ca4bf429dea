"""``personsearch trtexec-report``: summarise trtexec's --exportTimes / --exportProfile JSON."""

from __future__ import annotations

import argparse
import json

from personsearch_export.engine_build import write_json_atomic
from personsearch_export.errors import TrtexecReportError
from personsearch_export.trtexec import format_report, load_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's options."""
    parser.add_argument("times", metavar="TIMES.json", help="trtexec --exportTimes output")
    parser.add_argument("profile", nargs="?", metavar="PROFILE.json", help="trtexec --exportProfile output")
    parser.add_argument("--batch", type=int, default=1, help="images per query at the benchmarked shape")
    parser.add_argument("--json", metavar="FILE", help="write the summary as JSON ('-' for stdout only)")
    parser.add_argument("--top-layers", type=int, default=10, help="slowest layers to list")


def run(args: argparse.Namespace) -> int:
    """Print the table (and write JSON when asked)."""
    if args.top_layers < 0:
        raise TrtexecReportError(f"--top-layers must be >= 0, got {args.top_layers}")
    report = load_report(args.times, args.profile, batch=args.batch)
    if args.json == "-":
        print(json.dumps(report.to_json(), indent=2))
        return 0
    print(format_report(report, top_layers=args.top_layers), end="")
    if args.json:
        write_json_atomic(args.json, report.to_json())
    return 0
