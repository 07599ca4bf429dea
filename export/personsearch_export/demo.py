"""``personsearch demo``: the whole SDK on synthetic data, end to end.

synthetic data -> colour-histogram baseline -> train (instant recipe) -> evaluate ->
score the shipped model on both formats -> train the instant text model -> export both
to one ONNX bundle -> index the PRW-format frames with the runtime -> query by a
person's box in a frame -> a picture of the ranked hits, checked against the synthetic
ground truth -> query the same frames by a sentence describing the first query person
-> a table of metrics.

Two models take part, and the demo says which does what:

* the **instant** model is trained here, for 600 steps of the ``synthetic_instant``
  recipe, to show the trainer, checkpoints and evaluation at work; it is far too short
  a run to find anyone;
* the **shipped** model (``pretrained:seqnet_small_synthetic``, trained for 45 minutes
  by the committed ``synthetic_small`` recipe, see ``trainer/pretrained/``) is scored on
  both formats, exported, and does the indexing and the query, so the hits picture
  shows what a trained model does;
* the **instant text model** (``irra_instant``: MiniLM text tower, small image tower
  trained from scratch for 24 steps on the synthetic UFine6926 captions) is exported
  into the same bundle as the text and crop encoders, so the gallery also stores a
  cross-modal embedding of every person and a sentence can search it. 24 steps teach it
  little; the step shows the path, and who the hits are is printed without a check.

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

__all__ = ["SHIPPED_MODEL", "DemoError", "DemoStep", "add_arguments", "check_top_hit", "demo_steps", "run"]

#: The shipped checkpoint the demo exports, indexes and queries with.
SHIPPED_MODEL = "pretrained:seqnet_small_synthetic"

#: IoU a hit needs with a ground-truth box to count as that person (the PRW protocol's 0.5).
_MATCH_IOU = 0.5


class DemoError(Exception):
    """The demo cannot run with the options given (printed as a message, exit code 2)."""

    is_user_error = True


@dataclass(frozen=True)
class DemoStep:
    """One step of the demo.

    Attributes:
        title: What the step does, printed before it runs.
        argv: The ``personsearch`` arguments it runs (empty when ``action`` is set).
        done_marker: A file the step writes; if it exists the step is skipped.
        action: A function run instead of a subcommand (for glue such as checking the
            query's hits); returns an exit code.
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
    parser.add_argument("--seed", type=_seed, default=0, help="seed of the synthetic data (0 to 2**32-1)")
    parser.add_argument("--fresh", action="store_true", help="redo every step even if its output exists")


def _seed(text: str) -> int:
    """An argparse type: a synthetic-data seed, 0 to 2**32-1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be from 0 to 4294967295 (2**32-1), got {value}")
    return value


def _eval_step(title: str, dataset: str, root: Path, source: tuple[str, str], out: Path) -> DemoStep:
    """A step scoring ``source`` (``("--predictions", F)`` or ``("--checkpoint", C)``) on one dataset."""
    metrics = out / f"{dataset}_metrics.json"
    gallery = ("--gallery-size", "50") if dataset == "cuhk_sysu" else ()
    argv = ("eval", "--dataset", dataset, "--root", str(root), *source, *gallery)
    argv += ("--json", str(metrics), "--plot-dir", str(out / f"{dataset}_plots"))
    return DemoStep(title, argv, metrics)


def _first_query(prw_root: Path) -> tuple[str, int, tuple[float, float, float, float]]:
    """The first ``query_info.txt`` person: (frame file name, pid, xyxy box)."""
    line = (prw_root / "query_info.txt").read_text().splitlines()[0].split()
    x, y, w, h = (float(v) for v in line[1:5])
    return f"{line[5]}.jpg", int(line[0]), (x, y, x + w, y + h)


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
            _eval_step(
                f"score the baseline on {folder}",
                dataset,
                data / folder,
                ("--predictions", str(predictions)),
                out / "baseline",
            )
        )

    run_dir = out / "instant"
    text_run = out / "text_instant"
    sentence_dir = out / "sentence_query"
    shipped = out / "shipped"
    bundle = out / "bundle"
    gallery = out / "gallery"
    query_dir = out / "query"
    steps += [
        DemoStep(
            "train the narrow SeqNet for 600 steps (instant recipe) to show the trainer at work",
            ("train", "--recipe", "synthetic_instant", "--data-root", str(data), "--out", str(run_dir)),
            run_dir / "best.safetensors",
        ),
        _eval_step(
            "evaluate the instant checkpoint with the CUHK-SYSU protocol (600 steps: expect little)",
            "cuhk_sysu",
            data / "CUHK-SYSU",
            ("--checkpoint", str(run_dir)),
            run_dir,
        ),
    ]
    for dataset, folder in (("cuhk_sysu", "CUHK-SYSU"), ("prw", "PRW")):
        steps.append(
            _eval_step(
                f"evaluate the shipped model ({SHIPPED_MODEL}) on {folder}",
                dataset,
                data / folder,
                ("--checkpoint", SHIPPED_MODEL),
                shipped,
            )
        )
    steps += [
        DemoStep(
            "train the instant text model (IRRA-style, MiniLM text tower) on the synthetic captions",
            ("train", "--recipe", "irra_instant", "--data-root", str(data), "--out", str(text_run)),
            text_run / "best.safetensors",
        ),
        DemoStep(
            "export the shipped model and the text model to one ONNX bundle (with measured parity)",
            (
                "export",
                "--checkpoint",
                SHIPPED_MODEL,
                "--text-checkpoint",
                str(text_run),
                "--out",
                str(bundle),
            ),
            bundle / "manifest.json",
        ),
        DemoStep(
            "index the PRW-format frames with the torch-free runtime",
            ("index", "--bundle", str(bundle), "--gallery", str(gallery), str(data / "PRW" / "frames")),
            gallery / "gallery.sqlite",
        ),
    ]
    steps += [
        DemoStep(
            "query the gallery with the first PRW query person (a box in its frame)",
            (),
            query_dir / "hits.json",
            action=lambda: _query_first_person(data / "PRW", bundle, gallery, query_dir),
        ),
        DemoStep(
            "check the hits against the synthetic ground truth",
            (),
            query_dir / "check.json",
            action=lambda: check_top_hit(data / "PRW", query_dir),
        ),
        DemoStep(
            "search the same frames by a sentence describing the first query person",
            (),
            sentence_dir / "who.json",
            action=lambda: _query_by_sentence(data / "PRW", bundle, gallery, sentence_dir),
        ),
    ]
    return steps


def _first_query_sentence(prw_root: Path) -> str:
    """The first sentence the synthetic ``PRW-TBPS_test.json`` gives the first query person."""
    _, pid, _ = _first_query(prw_root)
    entries = json.loads((prw_root / "PRW-TBPS_test.json").read_text())
    for entry in entries:
        if int(str(entry["id"]).lstrip("p")) == pid:
            text = entry.get("desrciption", entry.get("description"))
            return text if isinstance(text, str) else text[0]
    raise DemoError(f"{prw_root / 'PRW-TBPS_test.json'} has no sentence for query person {pid}")


def _query_by_sentence(prw_root: Path, bundle: Path, gallery: Path, out: Path) -> int:
    """``personsearch query --text`` with the first query person's sentence; print who the hits are."""
    from personsearch_runtime.atomic_files import atomic_write_bytes
    from personsearch_runtime.cli import main as personsearch

    sentence = _first_query_sentence(prw_root)
    argv = ["query", "--bundle", str(bundle), "--gallery", str(gallery), "--text", sentence, "--top-k", "10"]
    argv += ["--out", str(out)]
    print(
        f"  $ personsearch {' '.join(argv[:5])} --text {json.dumps(sentence)} {' '.join(argv[7:])}",
        flush=True,
    )
    code = personsearch(argv)
    if code:
        return code
    _, pid, _ = _first_query(prw_root)
    hits = json.loads((out / "hits.json").read_text())["hits"]
    who = _hit_identities(prw_root, hits)
    ranks = [rank for rank, person in enumerate(who, 1) if person == pid]
    print(f"  person {pid}'s ranks among the top {len(hits)} sentence hits: {ranks or 'none'}")
    result = {"sentence": sentence, "query_pid": pid, "hit_pids": who, "ranks_of_query_person": ranks}
    atomic_write_bytes(out / "who.json", (json.dumps(result, indent=2) + "\n").encode())
    return 0


def _query_first_person(prw_root: Path, bundle: Path, gallery: Path, query_dir: Path) -> int:
    """Run ``personsearch query`` for the first ``query_info.txt`` person; return its exit code."""
    from personsearch_runtime.cli import main as personsearch

    frame_name, _, box = _first_query(prw_root)
    argv = ["query", "--bundle", str(bundle), "--gallery", str(gallery)]
    argv += ["--frame", str(prw_root / "frames" / frame_name), "--box=" + ",".join(f"{v:g}" for v in box)]
    argv += ["--out", str(query_dir)]
    print(f"  $ personsearch {' '.join(argv)}", flush=True)
    return personsearch(argv)


def _hit_identity(boxes, pids, box) -> int | None:  # noqa: ANN001 - numpy arrays from the reader
    """The pid of the ground-truth person a hit box overlaps best (IoU >= 0.5); None for no person."""
    import numpy as np
    from personsearch_runtime.box_ops import box_iou

    if len(boxes) == 0:
        return None
    iou = box_iou(np.asarray([box], dtype=np.float32), np.asarray(boxes, dtype=np.float32))[0]
    best = int(np.argmax(iou))
    return int(pids[best]) if iou[best] >= _MATCH_IOU else None


def _hit_identities(prw_root: Path, hits: list[dict]) -> list[int | None]:
    """The ground-truth pid each hit (``hits.json`` rows) is, by IoU >= 0.5 in its frame; None for nobody."""
    from personsearch_train.data import load_prw

    truth = {
        record.name: record
        for split in ("train", "test")
        for record in load_prw(prw_root, split, integer_boxes=False).images
    }
    who: list[int | None] = []
    for hit in hits:
        record = truth.get(Path(hit["source"]).name)
        who.append(None if record is None else _hit_identity(record.boxes, record.pids, hit["box"]))
    return who


def check_top_hit(prw_root: Path, query_dir: Path) -> int:
    """Say who the query's hits are, from the synthetic ground truth, and check the top one.

    Reads ``query_dir/hits.json`` (written by ``personsearch query`` for the first PRW
    query person), matches every hit box to the ground truth of its frame (IoU >= 0.5),
    prints the top five and writes ``query_dir/check.json``.

    Args:
        prw_root: The demo's ``PRW`` folder.
        query_dir: The query step's output folder.

    Returns:
        0 when the top hit is the query person, 1 otherwise.
    """
    from personsearch_runtime.atomic_files import atomic_write_bytes

    frame_name, pid, _ = _first_query(prw_root)
    hits = json.loads((query_dir / "hits.json").read_text())["hits"]
    rows = [
        {"rank": hit["rank"], "frame": Path(hit["source"]).name, "pid": who, **hit}
        for hit, who in zip(hits, _hit_identities(prw_root, hits), strict=True)
    ]
    print(f"  query: person {pid} in {frame_name}")
    for row in rows[:5]:
        who = "no annotated person" if row["pid"] is None else f"person {row['pid']}"
        mark = "  <- the query person" if row["pid"] == pid else ""
        print(f"  rank {row['rank']}: {row['frame']:<18} {who:<20} similarity {row['similarity']:.3f}{mark}")
    correct_ranks = [row["rank"] for row in rows if row["pid"] == pid]
    top_is_query = bool(rows) and rows[0]["pid"] == pid
    result = {
        "query_pid": pid,
        "query_frame": frame_name,
        "top_hit_is_query_person": top_is_query,
        "ranks_of_query_person": correct_ranks,
        "hits": rows,
    }
    atomic_write_bytes(query_dir / "check.json", (json.dumps(result, indent=2) + "\n").encode())
    if not top_is_query:
        print(f"  the top hit is not person {pid}; ranks holding person {pid}: {correct_ranks or 'none'}")
        return 1
    print(f"  the top hit is the query person; person {pid} holds ranks {correct_ranks}")
    return 0


def _print_summary(out: Path, echo: Callable[[str], None]) -> None:
    rows = []
    for metrics_file in sorted(out.glob("*/*_metrics.json")):
        metrics = json.loads(metrics_file.read_text())
        rows.append((metrics_file.parent.name, metrics_file.stem.removesuffix("_metrics"), metrics))
    if not rows:
        return
    echo("\nresults (fractions in [0, 1]; CUHK-SYSU format at gallery size 50, PRW format all-gallery)")
    echo(f"{'model':<12}{'dataset':<12}{'mAP':>8}{'top-1':>8}{'top-5':>8}{'det AP':>8}")
    for model, dataset, m in rows:
        echo(f"{model:<12}{dataset:<12}{m['mAP']:>8.3f}{m['top1']:>8.3f}{m['top5']:>8.3f}{m['det_ap']:>8.3f}")
    echo(
        "baseline: colour histograms on ground-truth boxes; instant: trained here for 600 steps; "
        f"shipped: {SHIPPED_MODEL} (trainer/pretrained/seqnet_small_synthetic/README.md)"
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
    if out.exists() and not out.is_dir():
        raise DemoError(f"--out {out} is a file; the demo writes a folder of outputs: give a folder path")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    steps = list(steps if steps is not None else demo_steps(out, args.preset, args.seed))
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
    for picture in sorted(out.glob("query/hits.*g")) + sorted(out.glob("*/plots/*.png")):
        print(f"picture: {picture}")
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s; outputs in {out}/")
    return 0
