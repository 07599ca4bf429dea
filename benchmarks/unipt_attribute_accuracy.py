"""Score UniPT pseudo-captions against the synthetic crops' true attributes, per attribute.

Reads the caption file ``personsearch pseudo-caption`` wrote (its ``attributes`` are the
selected phrase values) and the generator's evaluation-only truth
(``truth/attributes.json`` of ``personsearch synth --unlabelled-crops``), prints the
per-attribute table (:mod:`personsearch_train.evaluation.attribute_accuracy`) and a few
captions beside the true attributes, and writes both to ``--table``.

Example:
    python benchmarks/unipt_attribute_accuracy.py --captions unlabelled/captions.json \\
        --truth unlabelled/truth/attributes.json --table benchmarks/results/unipt_attribute_accuracy.txt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from personsearch_train.atomic_files import atomic_write_bytes
from personsearch_train.evaluation.attribute_accuracy import attribute_accuracy, format_accuracy_table
from personsearch_train.methods.unipt.phrase_banks import load_phrase_bank


def main() -> int:
    """Parse the command line, score, print and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--captions", type=Path, required=True, help="caption JSON of personsearch pseudo-caption"
    )
    parser.add_argument("--truth", type=Path, required=True, help="truth/attributes.json of the crop set")
    parser.add_argument("--bank", type=Path, default=None, help="the phrase bank the captions used")
    parser.add_argument("--examples", type=int, default=4, help="captions shown beside their truth")
    parser.add_argument("--table", type=Path, help="also write the output here")
    args = parser.parse_args()

    bank = load_phrase_bank(args.bank)
    entries = json.loads(args.captions.read_text(encoding="utf-8"))
    truth = {e["file_path"]: e["attributes"] for e in json.loads(args.truth.read_text(encoding="utf-8"))}
    # The captions' paths are relative to the folder given to pseudo-caption, the truth's to the
    # crop set's root; match on the common suffix.
    by_name = {Path(k).name: v for k, v in truth.items()}
    missing = [e["file_path"] for e in entries if Path(e["file_path"]).name not in by_name]
    if missing:
        raise SystemExit(f"{len(missing)} captioned files have no truth entry (first: {missing[0]})")
    selections = [e["attributes"] for e in entries]
    truths = [by_name[Path(e["file_path"]).name] for e in entries]
    rows = attribute_accuracy(selections, truths, bank)
    lines = [
        f"# {len(entries)} pseudo-captioned crops ({args.captions.name}) against the generator's attributes",
        format_accuracy_table(rows),
        "",
        "Examples (generated caption | true attributes):",
    ]
    for entry, true in list(zip(entries, truths, strict=True))[: args.examples]:
        shown = "; ".join(f"{k}: {'/'.join(v)}" for k, v in true.items() if v != ["none"])
        lines.append(f'- {entry["file_path"]}: "{entry["captions"][0]}" | {shown}')
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.table is not None:
        atomic_write_bytes(args.table, text.encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
