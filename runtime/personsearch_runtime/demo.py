"""``personsearch demo``: the whole SDK on synthetic data, end to end.

The demo is a script of ordinary ``personsearch`` subcommands run in-process through
the command-line front door, so it exercises exactly what a user types and imports
each package only when its step runs. Every step writes under ``--out``; a step whose
output already exists is reused, so an interrupted demo picks up where it stopped.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DemoStep", "add_arguments", "demo_steps", "run"]


@dataclass(frozen=True)
class DemoStep:
    """One step of the demo.

    Attributes:
        title: What the step does, printed before it runs.
        argv: The ``personsearch`` arguments it runs.
        done_marker: A file the step writes; if it exists the step is skipped.
    """

    title: str
    argv: tuple[str, ...]
    done_marker: Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options to ``parser``."""
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="folder for everything the demo writes")
    parser.add_argument("--preset", default="tiny", choices=("tiny", "small", "medium"), help="synthetic data size")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    parser.add_argument("--fresh", action="store_true", help="redo every step even if its output exists")


def demo_steps(out: Path, preset: str, seed: int) -> list[DemoStep]:
    """Return the demo's steps in order.

    Args:
        out: Output folder of the demo.
        preset: Synthetic dataset preset.
        seed: Synthetic dataset seed.

    Returns:
        The steps; each one's ``argv`` is a complete ``personsearch`` invocation.
    """
    data = out / "data"
    steps = [
        DemoStep(
            "generate the synthetic dataset",
            ("synth", "--out", str(data), "--preset", preset, "--seed", str(seed)),
            data / "synthetic_manifest.json",
        )
    ]
    for dataset, folder in (("cuhk_sysu", "CUHK-SYSU"), ("prw", "PRW")):
        predictions = out / "baseline" / f"{dataset}_predictions.npz"
        metrics = out / "baseline" / f"{dataset}_metrics.json"
        steps.append(
            DemoStep(
                f"colour-histogram baseline on {folder}",
                ("baseline-hist", "--dataset", dataset, "--root", str(data / folder), "--out", str(predictions)),
                predictions,
            )
        )
        steps.append(
            DemoStep(
                f"score the baseline on {folder}",
                (
                    "eval",
                    "--dataset",
                    dataset,
                    "--root",
                    str(data / folder),
                    "--predictions",
                    str(predictions),
                    "--json",
                    str(metrics),
                    "--plot-dir",
                    str(out / "baseline" / f"{dataset}_plots"),
                ),
                metrics,
            )
        )
    return steps


def _print_summary(out: Path, echo: Callable[[str], None]) -> None:
    rows = []
    for metrics_file in sorted(out.glob("*/*_metrics.json")):
        metrics = json.loads(metrics_file.read_text())
        rows.append((metrics_file.parent.name, metrics_file.stem.removesuffix("_metrics"), metrics))
    if not rows:
        return
    echo("\nresults (fractions in [0, 1])")
    echo(f"{'model':<12}{'dataset':<12}{'mAP':>8}{'top-1':>8}{'top-5':>8}{'det AP':>8}")
    for model, dataset, m in rows:
        echo(
            f"{model:<12}{dataset:<12}{m['mAP']:>8.3f}{m['top1']:>8.3f}{m['top5']:>8.3f}{m['det_ap']:>8.3f}"
        )


def run(args: argparse.Namespace, steps: Sequence[DemoStep] | None = None) -> int:
    """Run the demo's steps, skipping those already done.

    Args:
        args: Parsed options from :func:`add_arguments`.
        steps: Steps to run instead of :func:`demo_steps` (for tests).

    Returns:
        0 when every step succeeded, else the failing step's exit code.
    """
    from personsearch_runtime.cli import main as personsearch

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    steps = list(steps if steps is not None else demo_steps(out, args.preset, args.seed))
    start = time.perf_counter()
    for number, step in enumerate(steps, 1):
        header = f"[{number}/{len(steps)}] {step.title}"
        if step.done_marker.exists() and not args.fresh:
            print(f"{header}: already done ({step.done_marker})", flush=True)
            continue
        print(f"{header}\n  $ personsearch {' '.join(step.argv)}", flush=True)
        code = personsearch(list(step.argv))
        if code != 0:
            print(f"demo stopped: step {number} exited with {code}; rerun to resume from it")
            return code
    _print_summary(out, print)
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s; outputs in {out}/")
    return 0
