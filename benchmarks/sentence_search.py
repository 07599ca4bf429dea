"""Sentence search speed: the text encoder, one query over 1,000,000 people, indexing with crops.

Run with ``nice python benchmarks/sentence_search.py --bundle BUNDLE --text-checkpoint T2I_RUN
--frames DATA/PRW/frames`` on a bundle exported with ``--text-checkpoint``. Three tables,
each a ratio against a baseline measured in the same run:

1. **Text encoder**: the bundle's ``text_encoder.onnx`` on ONNX Runtime against the same
   checkpoint's ``encode_texts`` in PyTorch eager, batch 1 and 32, the same token batch
   (real sentences, padded to the longest as the runtime does), the same thread count.
2. **One query over a 1,000,000-person gallery**, end to end through the runtime: a
   sentence (tokenise, encode, search the text space) against a crop (query encoder,
   search the re-id space; the CLI's is-there-a-person check left out), both on the same
   gallery. The gallery is a
   real ``GalleryIndex`` (SQLite + exact index) holding synthetic unit embeddings of
   both widths, built once into ``--cache`` and reused; queries run after one warm-up
   (the index is loaded from SQLite by then).
3. **Indexing frames/s**: ``PersonSearcher.index`` on ``--frames`` with the crop encoder
   (every detected person also cropped and embedded) against without it.

Reported: median wall seconds over ``--repeats``. Timings never enter pass/fail tests.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

SENTENCES = [
    "a woman in a red coat with a black backpack",
    "the man wears a short-sleeved blue shirt, grey trousers and white shoes",
    "a person with long black hair, a striped yellow and green top, dark trousers and a hat",
    "young man carrying a bag",
]


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall seconds of ``fn`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def text_encoder_table(bundle_dir: Path, checkpoint: str, threads: int, repeats: int) -> list[str]:
    """ORT text encoder vs PyTorch eager at batch 1 and 32."""
    import torch
    from personsearch_export.checkpoint_io import load_checkpoint
    from personsearch_runtime.bundle import Bundle
    from personsearch_runtime.searcher import PersonSearcher

    torch.set_num_threads(threads)
    # The float graph here; the int8 variant has its own columns.
    searcher = PersonSearcher(bundle=Bundle.load(bundle_dir), intra_op_threads=threads, text_int8=False)
    encoder = searcher.sentence_encoder
    model = load_checkpoint(checkpoint).model.eval()
    spec = searcher.manifest.models["text_encoder"]
    lines = [
        f"text encoder: {searcher.manifest.text.model_name} ({searcher.manifest.text.method}), "
        f"{threads} threads, median of {repeats} after 1 warm-up",
        "",
        "| batch | tokens | PyTorch eager ms (baseline) | ONNX Runtime float ms | speed-up | ORT int8 ms | "
        "speed-up | int8 cosine |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    feeds = {}
    for batch in (1, 32):
        tokens = encoder.tokenizer([SENTENCES[i % len(SENTENCES)] for i in range(batch)])
        feeds[batch] = (tokens.input_ids, tokens.attention_mask)
    # ONNX Runtime first, PyTorch after: once torch has run, its OpenMP workers keep
    # spinning between calls and would take the cores from ORT's threads in this process.
    ort_ms = {
        batch: median_seconds(
            lambda ids=ids, mask=mask: encoder._run(
                "text_encoder", {spec.inputs[0].name: ids, spec.inputs[1].name: mask}
            ),
            repeats,
        )
        for batch, (ids, mask) in feeds.items()
    }
    int8_ms, int8_cos = _int8_text_encoder(searcher.bundle, feeds, threads, repeats)
    for batch, (ids, mask) in feeds.items():
        ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)

        def run_torch(ids_t=ids_t, mask_t=mask_t) -> None:
            with torch.inference_mode():
                model.encode_texts(ids_t, mask_t)

        eager = median_seconds(run_torch, repeats)
        ort = ort_ms[batch]
        lines.append(
            f"| {batch} | {ids.shape[1]} | {eager * 1e3:.2f} | {ort * 1e3:.2f} | {eager / ort:.2f}x | "
            f"{int8_ms[batch] * 1e3:.2f} | {eager / int8_ms[batch]:.2f}x | {int8_cos[batch]:.5f} |"
        )
    lines += [
        "",
        "int8: the text encoder's int8 CPU variant (export --text-int8: MatMul weights int8 per channel, "
        "activations quantised at run time), the bundle's own when it has one; int8 cosine = smallest "
        "cosine to the float graph's embeddings on these batches.",
    ]
    return lines


def _int8_text_encoder(
    bundle: object, feeds: dict[int, tuple[np.ndarray, np.ndarray]], threads: int, repeats: int
) -> tuple[dict[int, float], dict[int, float]]:
    """Time the int8 text encoder (the bundle's, else quantised here); its worst cosine to the float one."""
    import onnxruntime as ort
    from personsearch_export.text_graphs import write_int8_text_encoder

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    path = bundle.model_path("text_encoder")
    with tempfile.TemporaryDirectory() as tmp:
        int8_file = bundle.manifest.text.int8_file
        quantized = (
            bundle.root / int8_file if int8_file else write_int8_text_encoder(path, Path(tmp) / "int8.onnx")
        )
        fp32 = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        int8 = ort.InferenceSession(str(quantized), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in fp32.get_inputs()]
    times, cosines = {}, {}
    for batch, (ids, mask) in feeds.items():
        feed = dict(zip(names, (ids, mask), strict=True))
        times[batch] = median_seconds(lambda feed=feed: int8.run(None, feed), repeats)
        a, b = fp32.run(None, feed)[0], int8.run(None, feed)[0]
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        cosines[batch] = float(cos.min())
    return times, cosines


def build_big_gallery(folder: Path, bundle: object, size: int, seed: int = 0) -> None:
    """A gallery of ``size`` people with random unit re-id and text embeddings (made once)."""
    from personsearch_runtime.gallery import GalleryIndex
    from personsearch_runtime.results import Detections

    manifest = bundle.manifest
    d, e = manifest.embedding.dim, manifest.text.embedding_dim
    rng = np.random.default_rng(seed)
    per_frame = 1000
    started = time.perf_counter()
    with GalleryIndex.open_for_bundle(folder, bundle, index_factory="numpy") as gallery:
        for frame in range(size // per_frame):
            reid = rng.standard_normal((per_frame, d), dtype=np.float32)
            text = rng.standard_normal((per_frame, e), dtype=np.float32)
            boxes = np.tile(np.array([[10, 20, 60, 170]], np.float32), (per_frame, 1))
            det = Detections(
                source="/synthetic/big_gallery",
                frame_index=frame,
                timestamp=None,
                image_size=(1080, 1920),
                boxes=boxes,
                scores=np.ones(per_frame, np.float32),
                embeddings=reid / np.linalg.norm(reid, axis=1, keepdims=True),
                text_embeddings=text / np.linalg.norm(text, axis=1, keepdims=True),
            )
            gallery.add([det])
        gallery.save()
    print(f"built a {size}-person gallery in {time.perf_counter() - started:.0f} s", file=sys.stderr)


def big_gallery_table(
    bundle_dir: Path, crop_file: Path, cache: Path, size: int, threads: int, repeats: int
) -> list[str]:
    """One sentence query against one crop query over the same ``size``-person gallery."""
    import cv2
    from personsearch_runtime.bundle import Bundle
    from personsearch_runtime.gallery import GalleryIndex
    from personsearch_runtime.searcher import PersonSearcher

    bundle = Bundle.load(bundle_dir)
    folder = cache / f"gallery_{size}_{bundle.model_hash[:8]}_{bundle.manifest.text.checkpoint_sha256[:8]}"
    if not (folder / "gallery.sqlite").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        build_big_gallery(folder, bundle, size)
    searcher = PersonSearcher(bundle=bundle, intra_op_threads=threads)
    crop = cv2.imread(str(crop_file))
    with GalleryIndex.open(folder, readonly=True) as gallery:
        loaded = time.perf_counter()
        gallery.refresh()
        load_s = time.perf_counter() - loaded
        sentence = median_seconds(lambda: searcher.search_text(gallery, SENTENCES[0], top_k=10), repeats)
        image = median_seconds(
            lambda: searcher.search_crop(gallery, crop, top_k=10, require_person=False), repeats
        )
        encode = median_seconds(lambda: searcher.encode_sentences(SENTENCES[0]), repeats)
        embed = median_seconds(lambda: searcher.embed_crop(crop, require_person=False), repeats)
        people = len(gallery)
        which = "int8" if searcher.text_int8_file is not None else "float"
    return [
        f"one query over {people} people (exact numpy index, re-id {bundle.embedding_dim}-d, text "
        f"{bundle.manifest.text.embedding_dim}-d; indexes loaded from SQLite in {load_s:.1f} s before "
        f"timing), median of {repeats}",
        "",
        "| query | end to end ms | encoding ms | the rest (search, rows) ms | time vs crop query |",
        "|---|---:|---:|---:|---:|",
        f"| crop (query encoder + search; baseline) | {image * 1e3:.1f} | {embed * 1e3:.1f} | "
        f"{(image - embed) * 1e3:.1f} | 1.00x |",
        f"| sentence (tokenise + {which} text encoder + search) | {sentence * 1e3:.1f} | "
        f"{encode * 1e3:.1f} | {(sentence - encode) * 1e3:.1f} | {sentence / image:.2f}x |",
    ]


def indexing_table(bundle_dir: Path, frames: Path, limit: int, threads: int, repeats: int) -> list[str]:
    """Frames/s of ``index`` with and without the crop encoder on the same frames."""
    from personsearch_runtime.bundle import Bundle
    from personsearch_runtime.gallery import GalleryIndex
    from personsearch_runtime.searcher import PersonSearcher

    bundle = Bundle.load(bundle_dir)
    files = sorted(frames.glob("*.jpg"))[:limit]
    work = Path(tempfile.mkdtemp(prefix="sentence_bench_"))
    for i, f in enumerate(files):
        os.symlink(f.resolve(), work / f"{i:05d}{f.suffix}")
    timings: dict[bool, float] = {}
    detections = 0
    try:
        for with_text in (False, True, False, True)[: 2 * max(1, repeats // 2)]:
            searcher = PersonSearcher(bundle=bundle, intra_op_threads=threads, text_embeddings=with_text)
            folder = Path(tempfile.mkdtemp(prefix="g_", dir=work))
            shutil.rmtree(folder)
            manifest = bundle.manifest
            with GalleryIndex.create(
                folder,
                embedding_dim=manifest.embedding.dim,
                model_hash=bundle.model_hash,
                text_embedding_dim=manifest.text.embedding_dim if with_text else None,
                text_model_hash=manifest.text.checkpoint_sha256 if with_text else "",
            ) as gallery:
                summary = searcher.index(gallery, [work / f"{i:05d}{f.suffix}" for i, f in enumerate(files)])
            detections = summary.detections
            rate = summary.frames / summary.seconds
            timings[with_text] = max(timings.get(with_text, 0.0), rate)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return [
        f"indexing {len(files)} frames of {frames} ({detections} detections), batch 4, best of "
        f"{max(1, repeats // 2)} per row",
        "",
        "| index run | frames/s | vs without |",
        "|---|---:|---:|",
        f"| detector + re-id only (baseline) | {timings[False]:.2f} | 1.00x |",
        f"| + crop encoder for every person | {timings[True]:.2f} | {timings[True] / timings[False]:.2f}x |",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="bundle exported with --text-checkpoint")
    parser.add_argument(
        "--text-checkpoint", required=True, help="the text checkpoint the bundle was exported from"
    )
    parser.add_argument("--frames", type=Path, required=True, help="folder of .jpg frames (e.g. PRW/frames)")
    parser.add_argument(
        "--crop", type=Path, default=None, help="query crop (default: cut from the first frame)"
    )
    parser.add_argument("--gallery-size", type=int, default=1_000_000)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "personsearch_bench")
    parser.add_argument("--index-frames", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.cache.mkdir(parents=True, exist_ok=True)
    crop = args.crop
    if crop is None:
        import cv2

        frame = cv2.imread(str(sorted(args.frames.glob("*.jpg"))[0]))
        crop = args.cache / "query_crop.png"
        h, w = frame.shape[:2]
        cv2.imwrite(str(crop), frame[h // 4 : 3 * h // 4, w // 3 : w // 2])
    load = os.getloadavg()
    print(f"$ python benchmarks/sentence_search.py {' '.join(sys.argv[1:])}")
    print(
        f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, {os.cpu_count()} CPU cores, "
        f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    # PyTorch runs last: once it has run, its OpenMP workers spin between calls and slow
    # every ONNX Runtime call that follows in this process.
    for table in (
        indexing_table(args.bundle, args.frames, args.index_frames, args.threads, args.repeats),
        big_gallery_table(args.bundle, crop, args.cache, args.gallery_size, args.threads, args.repeats),
        text_encoder_table(args.bundle, args.text_checkpoint, args.threads, args.repeats),
    ):
        print()
        print("\n".join(table), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
