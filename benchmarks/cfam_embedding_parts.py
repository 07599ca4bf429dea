"""Score each part of a CFAM model's retrieval embedding alone and combined, beside a baseline.

CFAM's retrieval embedding folds the global, coarse and fine embeddings into one vector
with weights ``(global, coarse, fine)`` (``model.overrides.embedding_weights``). This
script re-embeds one split of a UFine6926-layout set with several weightings of a CFAM
checkpoint (no retraining: the weights only enter the final fold) and prints
text-to-image R@1, mAP and mSD in percent, with an IRRA checkpoint's single embedding for
reference. Run it on the validation split when choosing weights.

Example:
    python benchmarks/cfam_embedding_parts.py --root synthetic_small/UFine6926 --split val \\
        --checkpoint runs/cfam_small/latest.safetensors --baseline runs/irra_small/latest.safetensors \\
        --table benchmarks/results/cfam_embedding_parts_val.txt
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path

from personsearch_train.atomic_files import atomic_write_bytes
from personsearch_train.data.registry import load_text_split
from personsearch_train.engine.checkpoint import load_model_from_checkpoint
from personsearch_train.engine.text_inference import embed_text_split
from personsearch_train.evaluation.text_evaluator import TextRetrievalEvaluator

#: ``(row name, (global, coarse, fine))``.
WEIGHTINGS = (
    ("global only", (1.0, 0.0, 0.0)),
    ("coarse only", (0.0, 1.0, 0.0)),
    ("fine only", (0.0, 0.0, 1.0)),
    ("combined 1:1:1 (the recipe)", (1.0, 1.0, 1.0)),
    ("combined 2:1:1", (2.0, 1.0, 1.0)),
    ("combined 1:1:2", (1.0, 1.0, 2.0)),
    ("combined 0:1:1 (no global)", (0.0, 1.0, 1.0)),
)


def _scores(model: object, split: object) -> dict[str, float]:
    evaluator = TextRetrievalEvaluator()
    evaluator.process(embed_text_split(model, split, batch_size=128))  # type: ignore[arg-type]
    return evaluator.evaluate()


def main() -> int:
    """Parse the command line, embed and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="UFine6926-layout dataset folder")
    parser.add_argument("--split", default="val", choices=("train", "val", "test"))
    parser.add_argument("--checkpoint", type=Path, required=True, help="a cfam run or checkpoint file")
    parser.add_argument("--baseline", type=Path, help="an irra run or checkpoint file, for reference")
    parser.add_argument("--table", type=Path, help="also write the table here")
    args = parser.parse_args()

    split = load_text_split("ufine6926", args.root, args.split)
    lines = [
        f"# {datetime.now(timezone.utc):%Y-%m-%dT%H:%MZ}, {args.checkpoint}, ufine6926 {args.split} split "
        f"({len(split.captions)} captions, {len(split.image_paths)} images)",
        f"{'embedding':<34} {'R@1':>6} {'mAP':>6} {'mSD':>6}",
    ]
    print("\n".join(lines), flush=True)
    model, _ = load_model_from_checkpoint(args.checkpoint, prefer="latest")
    if getattr(model, "granularity_decoder", None) is None:
        raise SystemExit(f"{args.checkpoint}: not a CFAM model (it has no granularity decoder)")
    rows = []
    for name, weights in WEIGHTINGS:
        model.embedding_weights = weights
        rows.append((f"CFAM, {name}", _scores(model, split)))
    if args.baseline is not None:
        baseline, _ = load_model_from_checkpoint(args.baseline, prefer="latest")
        rows.append(("baseline (its one embedding)", _scores(baseline, split)))
    for name, scores in rows:
        line = f"{name:<34} " + " ".join(f"{100 * scores[k]:>6.2f}" for k in ("R1", "mAP", "mSD"))
        lines.append(line)
        print(line, flush=True)
    if args.table is not None:
        atomic_write_bytes(args.table, ("\n".join(lines) + "\n").encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
