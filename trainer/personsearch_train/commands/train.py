"""``personsearch train``: train a model from a YAML recipe.

Example:
    personsearch synth --out synthetic/ --preset tiny
    personsearch train --recipe synthetic_instant --data-root synthetic/ --out runs/instant
    personsearch train --recipe synthetic_instant --data-root synthetic/ --out runs/instant --resume
    personsearch train --list-methods

A run folder that holds another run's output (checkpoints, ``config.yaml``, logs,
TensorBoard events, predictions) is refused unless ``--resume`` continues it or
``--overwrite`` deletes exactly those files first; other files in it are never touched.

For several processes (one per GPU, or gloo on CPU) launch it with torchrun:
    torchrun --nproc_per_node 2 -m personsearch_runtime train --recipe ... --out ...
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["add_arguments", "format_methods", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``train`` options to ``parser``."""
    parser.add_argument("--recipe", help="recipe file, or a recipe name from trainer/recipes")
    parser.add_argument(
        "--data-root", help="dataset folder (or a folder holding CUHK-SYSU/ or PRW/); sets data.root"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override recipe settings, e.g. --set optim.lr=0.01 train.epochs=2",
    )
    parser.add_argument("--out", type=Path, help="run folder (checkpoints, config.yaml, logs)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its latest checkpoint"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start again in an --out that holds a previous run: first delete that run's checkpoints, "
        "config.yaml, logs, TensorBoard events and predictions (other files are kept)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--list-methods",
        action="store_true",
        help="list the registered training methods (recipe key 'method') with their settings, and exit",
    )


def format_methods() -> str:
    """The registered methods with their ``method_args`` and defaults, as text."""
    from personsearch_train.methods import available_methods, get_method

    lines = []
    for name in available_methods():
        cls = get_method(name)
        lines.append(f"{name}: {cls.summary}")
        labels = "identity labels and boxes" if cls.reads_identities else "boxes only (no identity labels)"
        lines.append(f"  trains on: {', '.join(cls.dataset_kinds)} datasets; reads {labels}")
        for arg, type_name, default in cls.describe_args():
            lines.append(f"  method_args.{arg}: {type_name} = {default!r}")
    return "\n".join(lines)


def _changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        dotted = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict) and key != "overrides":
            keys.extend(_changed_keys(a, b, dotted + "."))
        elif a != b:
            keys.append(dotted)
    return keys


def run(args: argparse.Namespace) -> int:
    """Train; returns 0 when finished, 130 when interrupted (resumable).

    Raises:
        TrainerError: Missing options, a bad or empty recipe, a missing dataset, a run
            folder that holds another run (without ``--resume`` or ``--overwrite``) or
            no resumable checkpoint (with ``--resume``), a damaged checkpoint. All are
            checked before the run folder is changed.
    """
    import yaml

    from personsearch_train.commands.output_paths import check_output_folder
    from personsearch_train.engine.config import (
        apply_overrides,
        check_paths,
        config_to_dict,
        describe_config,
        load_config,
        read_recipe,
    )
    from personsearch_train.engine.distributed import cleanup
    from personsearch_train.engine.loop import Trainer, check_run_folder, clear_run_outputs
    from personsearch_train.errors import TrainerError

    if args.list_methods:
        print(format_methods())
        return 0
    if not args.recipe or args.out is None:
        raise TrainerError("personsearch train needs --recipe and --out (or --list-methods)")
    if args.resume and args.overwrite:
        raise TrainerError("--resume continues the run in --out and --overwrite deletes it: choose one")
    cfg = load_config(args.recipe, args.overrides, data_root=args.data_root)
    check_paths(cfg)
    out: Path = args.out
    check_output_folder(out, "--out")
    check_run_folder(out, resume=args.resume, overwrite=args.overwrite)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    if args.resume:
        saved = out / "config.yaml"
        if saved.is_file() and main_rank:
            changed = _changed_keys(
                yaml.safe_load(saved.read_text(encoding="utf-8")) or {}, config_to_dict(cfg)
            )
            if changed:
                print(f"note: resuming with changed settings: {', '.join(changed)}", file=sys.stderr)
    if args.overwrite:
        # Every rank clears (idempotent) so none finds the old files in its own check.
        removed = clear_run_outputs(out)
        if removed and main_rank:
            print(f"--overwrite: deleted {len(removed)} files of the previous run in {out}", file=sys.stderr)
    if main_rank:
        # Read again (a small file) to tell the settings the recipe gives from defaults.
        lines = describe_config(cfg, apply_overrides(read_recipe(args.recipe)[1], args.overrides))
        print(
            f"train: {lines[0]}; run folder {out}" + "".join(f"\n  {line}" for line in lines[1:]), flush=True
        )
    try:
        result = Trainer(cfg, run_dir=out, progress=not args.no_progress).fit(resume=args.resume)
    finally:
        cleanup()
    if int(os.environ.get("RANK", "0")) != 0:
        return 130 if result.interrupted else 0
    if result.interrupted:
        print(
            f"stopped at step {result.global_step}; resume with the same command plus --resume",
            file=sys.stderr,
        )
        return 130
    final = result.metrics[-1] if result.metrics else {}
    summary = ", ".join(f"{k}={v:.4f}" for k, v in final.items() if k != "epoch")
    print(
        f"trained {result.global_step} steps in {result.seconds:.1f} s; run folder {out}"
        + (f"; {summary}" if summary else "")
    )
    return 0
