"""Training images/s of a method against the supervised baseline, on real batches, one run.

Where ``train_throughput.py`` compares architectures on random images, this compares
*methods*: each recipe builds its trainer exactly as ``personsearch train`` does (model,
method losses, hooks, optimiser, precision, threads), and the timed unit is the
trainer's own optimiser step on the same batches of the synthetic set (the first
batches of epoch 1, which both recipes draw alike: same seed, sampler and data). The
methods are timed in interleaved rounds, so drift in machine load hits all alike; the
median round is reported, as images/s and as a ratio to the first recipe (the baseline).

Work a method does outside its steps (feature extraction before the first epoch, the
per-epoch clustering of R-SiamNet, CGPS and SSL) is timed once, on the side, and shown
per epoch.

Example:
    python benchmarks/method_throughput.py --data-root synthetic_small/ \\
        --recipes synthetic_small rsiamnet_synthetic_small --steps 10 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from personsearch_train.engine.config import load_config
from personsearch_train.engine.loop import Trainer


def _prepare(recipe: str, data_root: Path, overrides: list[str], run_dir: Path) -> tuple[Trainer, float]:
    """A set-up trainer with its epoch-1 hooks run; returns it and the seconds those hooks took."""
    trainer = Trainer(load_config(recipe, overrides, data_root=data_root), run_dir=run_dir, progress=False)
    trainer.setup()
    start = time.perf_counter()
    for hook in trainer.hooks:
        hook.before_epoch(trainer, 0)
    return trainer, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True, help="the synthetic `small` set")
    parser.add_argument(
        "--recipes", nargs="+", default=["synthetic_small", "rsiamnet_synthetic_small"], help="baseline first"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="override, every recipe")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round and recipe")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per recipe first")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        prepared = [
            _prepare(recipe, args.data_root, args.overrides, Path(tmp) / f"run{i}")
            for i, recipe in enumerate(args.recipes)
        ]
        batches_needed = args.warmup + args.steps * args.rounds
        loaders = [iter(trainer._loader(0)) for trainer, _ in prepared]
        batches = [[next(loader) for _ in range(batches_needed)] for loader in loaders]
        images = [sum(len(b[0]) for b in recipe_batches[args.warmup :]) for recipe_batches in batches]
        for (trainer, _), recipe_batches in zip(prepared, batches, strict=True):
            for batch in recipe_batches[: args.warmup]:
                trainer._step(*batch)
        seconds: list[list[float]] = [[] for _ in prepared]
        for round_index in range(args.rounds):
            offset = args.warmup + round_index * args.steps
            for i, (trainer, _) in enumerate(prepared):
                start = time.perf_counter()
                for batch in batches[i][offset : offset + args.steps]:
                    trainer._step(*batch)
                seconds[i].append(time.perf_counter() - start)
        # Per-epoch clustering cost (the extraction already ran in _prepare for epoch 1).
        clustering = []
        for trainer, _ in prepared:
            start = time.perf_counter()
            for hook in trainer.hooks:
                if hasattr(hook, "assign_labels"):
                    # The last epoch: methods that start with instance epochs cluster by then.
                    hook.assign_labels(trainer.cfg.train.epochs - 1)
            clustering.append(time.perf_counter() - start)

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    first = prepared[0][0]
    print(
        f"# {datetime.now(timezone.utc):%Y-%m-%dT%H:%MZ}, {platform.processor() or platform.machine()}, "
        f"torch threads {torch.get_num_threads()}, load average {load}"
    )
    print(
        f"device={first.device} batch={first.cfg.train.batch_size} steps={args.steps} x rounds={args.rounds} "
        f"(median round), batches: the first {batches_needed} of epoch 1"
    )
    print(
        f"{'recipe':<28} {'method':<10} {'images/s':>9} {'ratio':>6} {'epoch-1 hooks s':>15} "
        f"{'clustering s':>12} {'ratio per epoch':>15}"
    )
    baseline = baseline_epoch = None
    for recipe, (trainer, hook_seconds), times, count, cluster_s in zip(
        args.recipes, prepared, seconds, images, clustering, strict=True
    ):
        rate = (count / args.rounds) / statistics.median(times)
        baseline = baseline or rate
        # Whole epochs: the steps plus the method's per-epoch work (a one-off extraction
        # before epoch 1 spread over the schedule, or repeated every epoch).
        extraction = max(0.0, hook_seconds - cluster_s)
        every_epoch = getattr(getattr(trainer.method, "args", None), "cluster_features", "") == "extract"
        per_epoch_work = cluster_s + (extraction if every_epoch else extraction / trainer.cfg.train.epochs)
        epoch_images = trainer.iters_per_epoch * trainer.cfg.train.batch_size
        epoch_rate = epoch_images / (epoch_images / rate + per_epoch_work)
        baseline_epoch = baseline_epoch or epoch_rate
        print(
            f"{recipe:<28} {trainer.method.name:<10} {rate:>9.3f} {rate / baseline:>5.2f}x "
            f"{hook_seconds:>15.1f} {cluster_s:>12.1f} {epoch_rate / baseline_epoch:>14.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
