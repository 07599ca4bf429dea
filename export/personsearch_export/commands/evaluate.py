"""``personsearch eval``: score a predictions file, a checkpoint's model, or a bundle through the runtime.

``--predictions`` and ``--checkpoint`` are the trainer's command unchanged
(:mod:`personsearch_train.commands.evaluate`). ``--bundle`` makes the predictions with
the torch-free runtime (:class:`~personsearch_runtime.searcher.PersonSearcher`: ONNX
Runtime or TensorRT) and scores them with the trainer's ``report_predictions``, so the
three sources are scored by one code path.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from personsearch_train.commands import evaluate as trainer_evaluate
from personsearch_train.errors import TrainerError

__all__ = ["add_arguments", "predictions_from_bundle", "run"]


class _GroupRecorder:
    """Forwards to a parser and keeps the mutually exclusive groups created through it.

    The trainer's ``add_arguments`` creates its source group (``--predictions`` /
    ``--checkpoint``) internally; recording it lets ``--bundle`` join that same group, so
    argparse itself enforces "exactly one source" with its usual message.
    """

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self._parser = parser
        self.groups: list[Any] = []

    def add_mutually_exclusive_group(self, **kwargs: Any) -> Any:
        group = self._parser.add_mutually_exclusive_group(**kwargs)
        self.groups.append(group)
        return group

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``personsearch eval`` (the trainer's, plus ``--bundle`` and ``--backend``).

    Args:
        parser: The subcommand's parser.
    """
    recorder = _GroupRecorder(parser)
    trainer_evaluate.add_arguments(recorder)  # type: ignore[arg-type]
    if len(recorder.groups) != 1:
        raise RuntimeError(
            "personsearch_train.commands.evaluate.add_arguments no longer declares exactly one mutually "
            f"exclusive source group (found {len(recorder.groups)}); update {__name__}"
        )
    recorder.groups[0].add_argument(
        "--bundle",
        type=Path,
        default=None,
        help="run this exported bundle with the torch-free runtime on the test split",
    )
    parser.add_argument(
        "--backend",
        choices=("ort", "trt"),
        default="ort",
        help="with --bundle: ONNX Runtime (default) or TensorRT engines in BUNDLE/engines",
    )


def _runtime_device(device: str, backend: str) -> str:
    if device != "auto":
        return device
    # TensorRT only runs on a GPU; ONNX Runtime defaults to the CPU, which is what the
    # runtime is measured and checked on.
    return "cuda" if backend == "trt" else "cpu"


def predictions_from_bundle(
    bundle: str | Path,
    split,  # noqa: ANN001 - PersonSearchSplit
    *,
    backend: str = "ort",
    device: str = "cpu",
    batch_size: int = 1,
    query_context: bool = False,
    progress: bool = True,
):  # noqa: ANN201 - SearchPredictions
    """Load a bundle into a ``PersonSearcher`` and predict on a test split.

    Args:
        bundle: The bundle folder.
        split: The test split.
        backend: ``"ort"`` or ``"trt"``.
        device: ``"cpu"`` or ``"cuda[:N]"``.
        batch_size: Gallery images per detector call (capped at the bundle's largest batch).
        query_context: Also record the CBGM query context.
        progress: Show progress bars.

    Returns:
        The ``SearchPredictions``.
    """
    from personsearch_runtime.searcher import PersonSearcher

    from personsearch_export.runtime_predictions import predict_split_with_runtime

    searcher = PersonSearcher(bundle=bundle, backend=backend, device=device, batch_size=batch_size)
    return predict_split_with_runtime(searcher, split, query_context=query_context, progress=progress)


def run(args: argparse.Namespace) -> int:
    """Score the chosen source and report.

    Args:
        args: Parsed options.

    Returns:
        Exit status 0.
    """
    if args.bundle is None:
        if args.backend != "ort":
            raise TrainerError("--backend is a --bundle option; the checkpoint path runs PyTorch")
        return trainer_evaluate.run(args)
    if args.dataset == "prw" and args.gallery_size != 100:
        raise TrainerError("--gallery-size is a CUHK-SYSU option; PRW uses all frames (or --multi-view)")
    if args.dataset == "cuhk_sysu" and args.multi_view:
        raise TrainerError("--multi-view is a PRW option; CUHK-SYSU uses --gallery-size")
    if args.batch_size < 1:
        raise TrainerError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.gt_boxes:
        raise TrainerError("--gt-boxes is a --checkpoint option; a bundle is evaluated on its own detections")
    split = trainer_evaluate.load_test_split(args.dataset, args.root)
    predictions = predictions_from_bundle(
        args.bundle,
        split,
        backend=args.backend,
        device=_runtime_device(args.device, args.backend),
        batch_size=args.batch_size,
        query_context=args.cbgm,
    )
    if args.save_predictions is not None:
        print(f"wrote {predictions.save(args.save_predictions)}")
    label = f"{Path(args.bundle).name} via runtime ({args.backend})"
    return trainer_evaluate.report_predictions(split, predictions, args, label=label)
