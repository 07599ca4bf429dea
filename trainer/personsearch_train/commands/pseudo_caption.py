r"""``personsearch pseudo-caption``: UniPT's pseudo-captions for a folder of person crops.

Example::

    personsearch pseudo-caption --images unlabelled/ --scorer runs/irra_small \\
        --out unlabelled/captions.json

writes a LUPerson-T style JSON list (``file_path`` relative to ``--images``, one or more
``captions``, and the selected ``attributes``) that ``method: unipt`` pre-trains on
(``data.dataset: luperson_t``). Interrupted runs resume where they stopped when run
again with the same options (see :mod:`personsearch_train.methods.unipt.captioner`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``personsearch pseudo-caption``.

    Args:
        parser: The subcommand's parser.
    """
    parser.add_argument(
        "--images", type=Path, required=True, help="folder of person crops (searched recursively)"
    )
    parser.add_argument(
        "--scorer",
        required=True,
        help="run folder or checkpoint of an image-text model trained here (irra, cfam, unipt...), "
        "or a local Hugging Face CLIP folder (save_pretrained of a CLIPModel)",
    )
    parser.add_argument("--out", type=Path, required=True, help="caption JSON to write")
    parser.add_argument(
        "--bank", type=Path, default=None, help="attribute phrase bank (default: the shipped one)"
    )
    parser.add_argument(
        "--templates", type=Path, default=None, help="caption templates (default: the shipped ones)"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.9,
        help="probability an optional attribute must exceed (default 0.9)",
    )
    parser.add_argument(
        "--logit-scale", type=float, default=None, help="softmax scale (default: 1/temperature of the scorer)"
    )
    parser.add_argument("--captions-per-image", type=int, default=1, help="captions per crop (default 1)")
    parser.add_argument("--no-optional", action="store_true", help="required attributes only")
    parser.add_argument(
        "--fixed-template", action="store_true", help="the first template only, no synonyms (ablation)"
    )
    parser.add_argument(
        "--synonym-probability",
        type=float,
        default=0.5,
        help="chance of replacing a template word (default 0.5)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the template and synonym draws")
    parser.add_argument("--batch-size", type=int, default=64, help="crops per forward pass (default 64)")
    parser.add_argument("--device", default="cpu", help="torch device of the scorer (default cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Caption the folder and print a summary.

    Args:
        args: Parsed options.

    Returns:
        Exit status 0.

    Raises:
        ConfigError: Bad folder, bank, templates or options (the message names the file
            and line where there is one).
    """
    from personsearch_train.methods.unipt.caption_templates import load_caption_templates
    from personsearch_train.methods.unipt.captioner import CaptionDesign, PromptScorer, caption_images
    from personsearch_train.methods.unipt.phrase_banks import load_phrase_bank

    bank = load_phrase_bank(args.bank)
    templates = load_caption_templates(args.templates, bank=bank)
    design = CaptionDesign(
        threshold=args.threshold,
        use_optional=not args.no_optional,
        fixed_template=args.fixed_template,
        synonym_probability=0.0 if args.fixed_template else args.synonym_probability,
        captions_per_image=args.captions_per_image,
        seed=args.seed,
    )
    scorer = PromptScorer.from_checkpoint(
        args.scorer, logit_scale=args.logit_scale, batch_size=args.batch_size, device=args.device
    )
    summary = caption_images(
        args.images,
        args.out,
        scorer=scorer,
        bank=bank,
        templates=templates,
        design=design,
        progress=not args.no_progress,
    )
    resumed = f" ({summary.resumed} from the interrupted run)" if summary.resumed else ""
    print(f"captioned {summary.captioned} of {summary.images} images{resumed} -> {summary.out}")
    print(f"  {len(bank.prompts())} prompts scored with {args.scorer} (logit scale {scorer.logit_scale:g})")
    if summary.skipped:
        shown = ", ".join(summary.skipped[:10]) + (" ..." if len(summary.skipped) > 10 else "")
        print(f"  skipped {len(summary.skipped)} unreadable file(s): {shown}")
    return 0
