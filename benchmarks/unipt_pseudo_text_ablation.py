"""Measure UniPT's pseudo-text design on the synthetic set: caption, pre-train, fine-tune per row.

Each row captions the unlabelled crop set its own way, pre-trains ``unipt`` on those
captions and fine-tunes ``unipt_finetune`` from the result; the table gives the
fine-tuned model's text-to-image R@1 and mAP on the ``small`` preset's UFine6926-layout
test split, and the rows differ only in how captions are made:

============================================  ==========================================
row                                           captions
============================================  ==========================================
No pre-training (from scratch)                none: fine-tuning only
Required attributes only                      6 required attributes, one fixed template
+ optional attributes (p > 0.9)               + kept optional attributes, fixed template
+ templates and synonyms (full UniPT)         + a random template of the file, synonyms
Control: full captions shuffled across crops  the same sentences, each given to another crop
============================================  ==========================================

The control separates what the captions *say* from what pre-training on person crops
does by itself (the image tower, trained from scratch, sees 6 epochs of crops either
way): its captions no longer describe their image.

The UniPT paper reports the effect of its generator's scale (2.6 M images, 228
templates) but no per-design table we could read, so there is no paper column. Every
stage is resumable: a row's caption file, pre-training run and fine-tuning run are
read back when finished (or resumed from their ``latest`` checkpoint), and ``--reuse
ROW=PRETRAIN_RUN,FINETUNE_RUN`` takes finished runs of the same settings (the README's
main runs) instead of training them again.

Example:
    python benchmarks/unipt_pseudo_text_ablation.py --data-root synthetic_small/ \\
        --unlabelled unlabelled/ --scorer runs/irra_small --out runs/unipt_ablation \\
        --table benchmarks/results/unipt_pseudo_text_ablation.txt
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from ablation_sweep import final_metrics, train_unless_finished
from personsearch_train.atomic_files import atomic_write_bytes
from personsearch_train.methods.unipt.caption_templates import load_caption_templates
from personsearch_train.methods.unipt.captioner import CaptionDesign, PromptScorer, caption_images
from personsearch_train.methods.unipt.phrase_banks import load_phrase_bank


@dataclass(frozen=True)
class DesignRow:
    """One row: its name and caption design (None: no pre-training).

    Attributes:
        name: Row label.
        design: How captions are made (None: no pre-training).
        shuffled: Give each crop's captions to another crop (a seeded permutation).
    """

    name: str
    design: CaptionDesign | None
    shuffled: bool = False


ROWS = {
    "scratch": DesignRow("No pre-training (from scratch)", None),
    "required": DesignRow(
        "Required attributes only",
        CaptionDesign(use_optional=False, fixed_template=True, synonym_probability=0.0),
    ),
    "optional": DesignRow(
        "+ optional attributes (p > 0.9)", CaptionDesign(fixed_template=True, synonym_probability=0.0)
    ),
    "full": DesignRow("+ templates and synonyms (full UniPT)", CaptionDesign()),
    "shuffled": DesignRow("Control: full captions shuffled", CaptionDesign(), shuffled=True),
}


def _shuffle_captions(path: Path, seed: int = 0) -> None:
    """Permute the captions (and their attributes) of a caption file across its images, in place."""
    entries = json.loads(path.read_text(encoding="utf-8"))
    order = np.random.default_rng(seed).permutation(len(entries))
    shuffled = [
        {**entry, "captions": entries[j]["captions"], "attributes": entries[j].get("attributes", {})}
        for entry, j in zip(entries, order, strict=True)
    ]
    atomic_write_bytes(path, json.dumps(shuffled, indent=1).encode())


def run_row(key: str, row: DesignRow, args: argparse.Namespace) -> tuple[dict[str, float], float | None]:
    """Caption, pre-train and fine-tune one row (each stage skipped when done).

    Returns:
        The fine-tuned model's final metrics, and the minutes this call spent (None when
        every stage was read back: the time is in the log of the call that trained it).
    """
    start = time.perf_counter()
    folder = args.out / key
    threads = [f"train.cpu_threads={args.threads}"]
    pretrain_run, finetune_run = args.reuse.get(key, (folder / "pretrain", folder / "finetune"))
    init = []
    trained = False
    if row.design is not None:
        captions = folder / "captions.json"
        if not captions.exists() and key not in args.reuse:
            bank = load_phrase_bank()
            # Shuffled into a temporary file first, so an interruption never leaves an
            # unshuffled file under the final name.
            made = captions.with_name("captions.unshuffled.json") if row.shuffled else captions
            caption_images(
                args.unlabelled,
                made,
                scorer=PromptScorer.from_checkpoint(args.scorer),
                bank=bank,
                templates=load_caption_templates(bank=bank),
                design=row.design,
                progress=False,
            )
            if row.shuffled:
                _shuffle_captions(made)
                made.replace(captions)
            trained = True
        trained |= train_unless_finished(
            "unipt_pretrain_synthetic",
            [
                f"train.epochs={args.pretrain_epochs}",
                f"method_args.captions_file={captions.resolve()}",
                *threads,
            ],
            args.unlabelled,
            pretrain_run,
        )
        init = [f"model.init_from={pretrain_run}"]
    trained |= train_unless_finished(
        "unipt_finetune_synthetic",
        [f"train.epochs={args.finetune_epochs}", f"eval.every={args.finetune_epochs}", *threads, *init],
        args.data_root,
        finetune_run,
    )
    metrics = final_metrics(finetune_run, args.finetune_epochs)
    if metrics is None:
        raise SystemExit(f"{finetune_run}: no epoch-{args.finetune_epochs} evaluation")
    return metrics, (time.perf_counter() - start) / 60 if trained else None


def main() -> int:
    """Parse the command line, run (or read back) the rows, print and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True, help="the synthetic `small` set")
    parser.add_argument("--unlabelled", type=Path, required=True, help="the unlabelled crop set")
    parser.add_argument("--scorer", type=Path, required=True, help="image-text run that scores the phrases")
    parser.add_argument("--out", type=Path, required=True, help="folder of the rows' files and runs")
    parser.add_argument("--pretrain-epochs", type=int, default=6)
    parser.add_argument("--finetune-epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per training")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--table", type=Path, help="also write the table here")
    parser.add_argument(
        "--reuse",
        action="append",
        default=[],
        metavar="ROW=PRETRAIN_RUN,FINETUNE_RUN",
        help="finished runs of a row (for scratch: ROW=,FINETUNE_RUN)",
    )
    args = parser.parse_args()
    reuse = {}
    for item in args.reuse:
        key, sep, runs = item.partition("=")
        pretrain, comma, finetune = runs.partition(",")
        if not sep or not comma or key not in ROWS:
            parser.error(
                f"--reuse {item!r}: expected ROW=PRETRAIN_RUN,FINETUNE_RUN with ROW one of {', '.join(ROWS)}"
            )
        reuse[key] = (Path(pretrain), Path(finetune))
    args.reuse = reuse

    lines = [
        f"# {datetime.now(timezone.utc):%Y-%m-%dT%H:%MZ}, {platform.processor() or platform.machine()}, "
        f"unipt_pretrain_synthetic {args.pretrain_epochs} epochs -> unipt_finetune_synthetic "
        f"{args.finetune_epochs} epochs, UFine6926 layout test split (text-to-image)",
        f"{'pseudo-text design':<40} {'R@1':>6} {'mAP':>6} {'mINP':>6}   {'minutes':>7}",
    ]
    print("\n".join(lines), flush=True)
    for key in args.rows:
        metrics, minutes = run_row(key, ROWS[key], args)
        line = (
            f"{ROWS[key].name:<40} {100 * metrics['R1']:>6.2f} {100 * metrics['mAP']:>6.2f} "
            f"{100 * metrics['mINP']:>6.2f}   " + (f"{minutes:>7.1f}" if minutes is not None else "read back")
        )
        lines.append(line)
        print(line, flush=True)
    lines.append(
        "paper: no per-design table available; ours: synthetic `small`, scorer = " + str(args.scorer)
    )
    print(lines[-1])
    if args.table is not None:
        atomic_write_bytes(args.table, ("\n".join(lines) + "\n").encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
