"""``personsearch demo``: the whole SDK on synthetic data, end to end.

synthetic data -> colour-histogram baseline -> train (instant recipe) -> evaluate ->
export an ONNX bundle -> index the PRW-format frames with the runtime -> query by a
person crop -> a picture of the ranked hits and a table of metrics.

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
        argv: The ``personsearch`` arguments it runs (empty when ``action`` is set).
        done_marker: A file the step writes; if it exists the step is skipped.
        action: A function run instead of a subcommand (for glue such as cutting
            the query crop); returns an exit code.
    """

    title: str
    argv: tuple[str, ...]
    done_marker: Path
    action: Callable[[], int] | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options to ``parser``."""
    parser.add_argument(
        "--out", type=Path, default=Path("demo_output"), help="folder for everything the demo writes"
    )
    parser.add_argument(
        "--preset", default="tiny", choices=("tiny", "small", "medium"), help="synthetic data size"
    )
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
                (
                    "baseline-hist",
                    "--dataset",
                    dataset,
                    "--root",
                    str(data / folder),
                    "--out",
                    str(predictions),
                ),
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

    run_dir = out / "instant"
    bundle = out / "bundle"
    gallery = out / "gallery"
    crop = out / "query" / "query_crop.png"
    steps += [
        DemoStep(
            "train the narrow SeqNet (instant recipe) on the CUHK-SYSU-format training set",
            ("train", "--recipe", "synthetic_instant", "--data-root", str(data), "--out", str(run_dir)),
            run_dir / "best.safetensors",
        ),
        DemoStep(
            "evaluate the trained checkpoint with the CUHK-SYSU protocol",
            (
                "eval",
                "--dataset",
                "cuhk_sysu",
                "--root",
                str(data / "CUHK-SYSU"),
                "--checkpoint",
                str(run_dir),
                "--gallery-size",
                "50",
                "--json",
                str(run_dir / "cuhk_sysu_metrics.json"),
                "--plot-dir",
                str(run_dir / "plots"),
            ),
            run_dir / "cuhk_sysu_metrics.json",
        ),
        DemoStep(
            "export the checkpoint to an ONNX bundle (with measured parity)",
            ("export", "--checkpoint", str(run_dir), "--out", str(bundle)),
            bundle / "manifest.json",
        ),
        DemoStep(
            "index the PRW-format test frames with the torch-free runtime",
            ("index", "--bundle", str(bundle), "--gallery", str(gallery), str(data / "PRW" / "frames")),
            gallery / "gallery.sqlite",
        ),
        DemoStep(
            "cut the first PRW query person out of its frame",
            (),
            crop,
            action=lambda: _cut_query_crop(data / "PRW", crop),
        ),
        DemoStep(
            "query the gallery with the crop",
            (
                "query",
                "--bundle",
                str(bundle),
                "--gallery",
                str(gallery),
                "--image",
                str(crop),
                "--out",
                str(crop.parent),
            ),
            crop.parent / "hits.json",
        ),
    ]
    return steps


def _cut_query_crop(prw_root: Path, crop_path: Path) -> int:
    """Write the first ``query_info.txt`` person as an image file; return an exit code."""
    import cv2

    line = (prw_root / "query_info.txt").read_text().splitlines()[0].split()
    x, y, w, h = (float(v) for v in line[1:5])
    frame_path = prw_root / "frames" / f"{line[5]}.jpg"
    frame = cv2.imread(str(frame_path))
    if frame is None:
        print(f"cannot read {frame_path}")
        return 1
    x1, y1 = max(int(x), 0), max(int(y), 0)
    crop = frame[y1 : int(y + h), x1 : int(x + w)]
    crop_path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(crop_path), crop):
        print(f"cannot write {crop_path}")
        return 1
    box = f"{x1},{y1},{int(x + w)},{int(y + h)}"
    print(f"  query: person {line[0]} in {frame_path.name}, box {box} -> {crop_path}")
    return 0


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
        echo(f"{model:<12}{dataset:<12}{m['mAP']:>8.3f}{m['top1']:>8.3f}{m['top5']:>8.3f}{m['det_ap']:>8.3f}")


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
        if step.action is not None:
            print(header, flush=True)
            code = step.action()
        else:
            print(f"{header}\n  $ personsearch {' '.join(step.argv)}", flush=True)
            code = personsearch(list(step.argv))
        if code != 0:
            print(f"demo stopped: step {number} exited with {code}; rerun to resume from it")
            return code
    _print_summary(out, print)
    for picture in sorted(out.glob("query/hits.*g")) + sorted(out.glob("instant/plots/*.png")):
        print(f"picture: {picture}")
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s; outputs in {out}/")
    return 0
