"""End-to-end frames/s: the runtime (ONNX Runtime CPU) against PyTorch eager, as ratios in one run.

Both sides start from files on disk and end with boxes, scores and embeddings in
original-image pixels, one frame per call, with the same CPU thread count:

* runtime: ``PersonSearcher(backend="ort", device="cpu")`` over the runtime's
  ``FrameReader`` (OpenCV decoding in a background thread), i.e. what
  ``personsearch index`` does minus the gallery writes;
* PyTorch: OpenCV decoding in the loop, then the checkpoint model's own ``predict``
  (its ``GeneralizedRCNNTransform`` does the same resize: short side ``min_size``,
  long side at most ``max_size``).

Sources: still images of the tiny synthetic set (320x240 scenes) and a 768x576 MJPEG
video made here from synthetic scenes with OpenCV. The model is ``seqnet_r18`` with
random weights (seed 0; resize 900/1500, the model's defaults) exported with
``export_graphs``, or a trained checkpoint with ``--checkpoint``. Reported per source:
frames/s of each side over ``--frames`` frames after ``--warmup`` frames, and the
speed-up runtime / torch (target >= 1.3x). A last column counts frames where both sides
found the same number of people, to show they run the same model.

Usage::

    nice -n 10 .venv/bin/python benchmarks/runtime_vs_torch.py [--frames 6] [--threads 2]
        [--checkpoint RUN_DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

VIDEO_SIZE = (768, 576)  # (width, height), as OpenCV's VideoWriter takes it


def _make_checkpoint(folder: Path, model_name: str) -> Path:
    """Save a randomly initialised registered model as a trainer checkpoint."""
    from personsearch_train.engine.checkpoint import save_checkpoint
    from personsearch_train.models import create_model

    torch.manual_seed(0)
    model = create_model(model_name).eval()
    save_checkpoint(folder, "best", model=model, metadata={"model": {"name": model_name, "kwargs": {}}})
    return folder


def _export(checkpoint: Path, folder: Path) -> tuple[torch.nn.Module, str]:
    """Export ``checkpoint`` into ``folder`` (no parity run: the export tests cover it)."""
    from personsearch_export.checkpoint_io import load_checkpoint
    from personsearch_export.exporter import export_graphs

    loaded = load_checkpoint(checkpoint)
    export_graphs(loaded, folder, opset=17, precision="fp32", max_detections=None, profile=None, max_batch=4)
    return loaded.model, loaded.model_name


def _write_video(scenes: list[Path], path: Path, frames: int) -> Path:
    """Write ``frames`` 768x576 MJPEG frames: synthetic scenes resized, cycled."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, VIDEO_SIZE)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path} with MJPG")
    try:
        for i in range(frames):
            image = cv2.imread(str(scenes[i % len(scenes)]), cv2.IMREAD_COLOR)
            writer.write(cv2.resize(image, VIDEO_SIZE, interpolation=cv2.INTER_LINEAR))
    finally:
        writer.release()
    return path


def _torch_frames(paths: list[Path]):  # noqa: ANN202 - iterator of BGR frames
    """Decode images or a video serially, as a plain PyTorch loop would."""
    for path in paths:
        if path.suffix.lower() == ".avi":
            capture = cv2.VideoCapture(str(path))
            try:
                while True:
                    ok, frame = capture.read()
                    if not ok:
                        break
                    yield frame
            finally:
                capture.release()
        else:
            yield cv2.imread(str(path), cv2.IMREAD_COLOR)


def _run_torch(model: torch.nn.Module, paths: list[Path], warmup: int) -> tuple[float, list[int]]:
    """Seconds for the frames after ``warmup``, and the detection count of every frame."""
    counts: list[int] = []
    start = None
    with torch.no_grad():
        for i, bgr in enumerate(_torch_frames(paths)):
            if i == warmup:
                start = time.perf_counter()
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            tensor = torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0)
            det = model.predict([tensor])[0]
            boxes, _scores, _emb = det.boxes.numpy(), det.scores.numpy(), det.embeddings.numpy()
            counts.append(len(boxes))
    return time.perf_counter() - start, counts


def _run_runtime(searcher, paths: list[Path], warmup: int) -> tuple[float, list[int]]:  # noqa: ANN001
    from personsearch_runtime.sources import FrameReader

    counts: list[int] = []
    start = None
    reader = FrameReader(paths)
    try:
        # The timer starts at the first frame after warm-up, so the reader thread has
        # had the same head start a long-running indexer's would have.
        for i, det in enumerate(searcher.detect_frames(reader)):
            counts.append(len(det))
            if i + 1 == warmup:
                start = time.perf_counter()
    finally:
        reader.close()
    return time.perf_counter() - start, counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="seqnet_r18", help="registered model (random weights)")
    parser.add_argument("--checkpoint", type=Path, help="a trained run folder / checkpoint instead")
    parser.add_argument("--frames", type=int, default=6, help="timed frames per source")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime CPU threads")
    args = parser.parse_args()

    import onnxruntime as ort
    from personsearch_runtime.searcher import PersonSearcher
    from personsearch_train.data.synthetic.generator import generate_dataset

    torch.set_num_threads(args.threads)
    total = args.warmup + args.frames
    with tempfile.TemporaryDirectory(prefix="runtime-vs-torch-") as tmp:
        root = Path(tmp)
        checkpoint = args.checkpoint or _make_checkpoint(root / "ckpt", args.model)
        (root / "bundle").mkdir()
        started = time.perf_counter()
        model, name = _export(checkpoint, root / "bundle")
        export_s = time.perf_counter() - started
        generate_dataset(root / "synth", preset="tiny", seed=0, workers=1)
        scenes = sorted((root / "synth" / "CUHK-SYSU").rglob("*.jpg"))
        if len(scenes) < total:
            raise RuntimeError(f"need {total} synthetic scenes, found {len(scenes)}")
        video = _write_video(scenes, root / "scenes_768x576.avi", total)
        height, width = cv2.imread(str(scenes[0])).shape[:2]
        sources = {
            f"images ({width}x{height} jpg)": scenes[:total],
            f"video ({VIDEO_SIZE[0]}x{VIDEO_SIZE[1]} MJPEG)": [video],
        }
        searcher = PersonSearcher(
            bundle=root / "bundle",
            backend="ort",
            device="cpu",
            batch_size=1,
            pipeline="detector",
            intra_op_threads=args.threads,
        )
        prep = searcher.manifest.preprocessing
        weights = f"trained {args.checkpoint}" if args.checkpoint else "random weights, seed 0"
        label = f"{name} ({weights})"
        print(f"model: {label}; resize short side {prep.min_size}, long side <= {prep.max_size}")
        print(
            f"onnxruntime {ort.__version__} CPU, torch {torch.__version__} eager CPU, "
            f"{args.threads} threads, batch 1, "
            f"{args.frames} timed frames after {args.warmup} warm-up; export took {export_s:.0f} s"
        )
        header = f"{'source':<26}{'torch fps':>11}{'runtime fps':>13}{'speed-up':>10}{'same counts':>13}"
        print(header)
        print("-" * len(header))
        ratios = []
        for source, paths in sources.items():
            rt_s, rt_counts = _run_runtime(searcher, paths, args.warmup)
            pt_s, pt_counts = _run_torch(model, paths, args.warmup)
            rt_fps, pt_fps = args.frames / rt_s, args.frames / pt_s
            ratios.append(rt_fps / pt_fps)
            same = sum(a == b for a, b in zip(rt_counts, pt_counts, strict=True))
            print(
                f"{source:<26}{pt_fps:>11.2f}{rt_fps:>13.2f}{rt_fps / pt_fps:>9.2f}x"
                f"{f'{same}/{len(rt_counts)}':>13}"
            )
        geo = float(np.exp(np.mean(np.log(ratios))))
        print(f"geometric-mean speed-up runtime vs torch: {geo:.2f}x (target >= 1.3x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
