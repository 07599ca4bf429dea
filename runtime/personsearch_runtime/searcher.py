"""``PersonSearcher``: detect and embed people in images and videos, index them, query a gallery.

Typical use::

    searcher = PersonSearcher(bundle="model_bundle", backend="ort", device="cpu", batch_size=4)
    with GalleryIndex.open_for_bundle("my_gallery", searcher.bundle) as gallery:
        summary = searcher.index(gallery, ["cams/*.mp4", "stills/"], every_nth_frame=5)
        hits = searcher.search_crop(gallery, cv2.imread("suspect.jpg"), top_k=10)

Images go through the bundle's preprocessing (resize, normalise, pad), are detected in
batches, and every box comes back in the original image's pixels.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import warnings
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from personsearch_runtime.backends import create_backend
from personsearch_runtime.bundle import Bundle
from personsearch_runtime.detection import BatchDetections, OneGraphDetector, SplitDetector, l2_normalize
from personsearch_runtime.errors import PersonSearchError, SourceError
from personsearch_runtime.preprocess import (
    PreparedImage,
    batch_images,
    prepare_image,
    to_original,
    to_resized,
)
from personsearch_runtime.results import Detections, SearchHit
from personsearch_runtime.sources import Frame, FrameReader, expand_sources

__all__ = [
    "PIPELINES",
    "IndexSummary",
    "Installed",
    "NoPersonFoundError",
    "PersonSearcher",
    "PipelineChoice",
    "SlowPathWarning",
    "choose_pipeline",
    "pipeline_for_bundle",
]

PIPELINES = ("auto", "detector", "split")
#: The graphs (or engines) of the split path, in the order they run.
SPLIT_ROLES = ("backbone_rpn", "box_head", "reid_head")


class NoPersonFoundError(PersonSearchError):
    """The query image contains no detectable person."""


class SlowPathWarning(UserWarning):
    """A pipeline was asked for that copies every stage through the host on the GPU."""


@dataclass(frozen=True)
class Installed:
    """The optional packages the GPU split path needs.

    Attributes:
        cupy: CuPy (device arrays, NMS and box decoding between the stages).
        cuda_python: cuda-python (NVRTC compiles our RoIAlign kernel).
        roi_align_source: The kernel source that ``personsearch_ops`` ships.
    """

    cupy: bool
    cuda_python: bool
    roi_align_source: bool

    @classmethod
    def probe(cls) -> Installed:
        """Look the packages up without importing them (nothing loads CUDA)."""
        from personsearch_runtime.gpu.roi_align_kernel import KernelError, kernel_source_path

        try:
            kernel_source_path()
            source = True
        except KernelError:
            source = False
        return cls(
            cupy=_has_module("cupy"), cuda_python=_has_module("cuda.bindings"), roi_align_source=source
        )

    def missing_for_split(self) -> list[str]:
        """What the device split path lacks here, as phrases for a message (empty when nothing)."""
        missing = []
        if not self.cupy:
            missing.append("CuPy")
        if not self.cuda_python:
            missing.append("cuda-python")
        if not self.roi_align_source:
            missing.append("the RoIAlign kernel source from personsearch_ops")
        return missing


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is absent
        return False
    except ValueError:  # already imported without a spec (a stand-in module): it is there
        return name in sys.modules


def normalize_device(device: str) -> str:
    """Return ``"cpu"`` or ``"cuda:N"`` for a ``--device`` value.

    Raises:
        PersonSearchError: Anything else.
    """
    kind, _, index = device.partition(":")
    if kind == "cpu" and not index:
        return "cpu"
    if kind == "cuda" and (not index or index.isdigit()):
        return f"cuda:{int(index or 0)}"
    raise PersonSearchError(f"unknown device {device!r}; use cpu, cuda or cuda:N")


@dataclass(frozen=True)
class PipelineChoice:
    """Which detection path runs, and why.

    Attributes:
        path: ``"detector"`` (one graph) or ``"split"`` (backbone_rpn -> RoIAlign -> heads).
        reason: Why this path, as a phrase for the user.
        backend: ``"ort"`` or ``"trt"``.
        device: ``"cpu"`` or ``"cuda:N"``.
        warning: Set when the path is slow here and was only taken because it was asked for.
    """

    path: str
    reason: str
    backend: str
    device: str
    warning: str | None = None

    @property
    def io_binding(self) -> bool:
        """True when ONNX Runtime runs the one graph with inputs and outputs bound on the GPU."""
        return self.path == "detector" and self.backend == "ort" and self.device != "cpu"

    def line(self) -> str:
        """One line for ``bench`` and ``info``, e.g. ``pipeline: one-graph (detector.onnx) ...``."""
        ext = ".plan" if self.backend == "trt" else ".onnx"
        if self.path == "detector":
            what = f"one-graph (detector{ext})" + (" with IOBinding" if self.io_binding else "")
        else:
            pool = "our RoIAlign kernel" if self.device != "cpu" else "the numpy reference RoIAlign"
            what = f"split (backbone_rpn{ext} -> {pool} -> box_head{ext}, reid_head{ext})"
            if self.device != "cpu" and self.backend == "ort":
                what += " through the host"
        return f"pipeline: {what} on {self.device} - {self.reason}"

    def describe(self) -> list[str]:
        """The path line, and a ``warning:`` line when there is a warning."""
        return [self.line()] + ([f"warning: {self.warning}"] if self.warning else [])


def choose_pipeline(
    *,
    backend: str,
    device: str,
    requested: str = "auto",
    has_split_graphs: bool,
    engines: Collection[str] = (),
    installed: Installed,
) -> PipelineChoice:
    """Choose the detection path; pure, so it is testable without a GPU.

    The split path pays off only where every stage stays on the device: TensorRT engines
    reading and writing CuPy memory, with our RoIAlign kernel between them. ONNX Runtime
    has no such hand-off here, so its split path copies every stage's inputs and outputs
    through the host; on the GPU ONNX Runtime therefore runs the one graph with IOBinding.
    An explicit ``requested`` path is honoured (a slow one with a warning) or refused
    with the reason when it cannot run at all.

    Args:
        backend: ``"ort"`` or ``"trt"``.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        requested: ``"auto"``, ``"detector"`` or ``"split"`` (the user's ``--pipeline``).
        has_split_graphs: The bundle has ``backbone_rpn``, ``box_head`` and ``reid_head``.
        engines: Roles whose TensorRT engine (``ROLE.plan``) exists; used for ``trt`` only.
        installed: What the device split path needs and is installed.

    Returns:
        The path with its reason (and a warning for an explicit slow choice).

    Raises:
        PersonSearchError: Unknown backend, device or pipeline; TensorRT on the CPU; the
            split path asked for where it cannot run.
    """
    if backend not in ("ort", "trt"):
        raise PersonSearchError(f"unknown backend {backend!r}; use ort or trt")
    if requested not in PIPELINES:
        raise PersonSearchError(f"pipeline must be one of {', '.join(PIPELINES)}, got {requested!r}")
    device = normalize_device(device)
    on_gpu = device != "cpu"
    if backend == "trt" and not on_gpu:
        raise PersonSearchError("the TensorRT backend runs on --device cuda only")
    if requested == "detector":
        return PipelineChoice("detector", "asked for with --pipeline detector", backend, device)
    if requested == "split":
        if not has_split_graphs:
            raise PersonSearchError("the bundle has no split graphs; use --pipeline detector or auto")
        missing = installed.missing_for_split() if on_gpu else []
        if missing:
            raise PersonSearchError(
                f"--pipeline split on {device} needs {', '.join(missing)}, which "
                f'{"is" if len(missing) == 1 else "are"} not installed; pip install "personsearch[gpu]" '
                "(or use --pipeline detector)"
            )
        warning = None
        if on_gpu and backend == "ort":
            warning = (
                f"--pipeline split with ONNX Runtime on {device} copies every stage's inputs and outputs "
                "through the host; it is for checking the split graphs, not for speed - use --pipeline "
                "auto (one graph with IOBinding) or --backend trt"
            )
        return PipelineChoice("split", "asked for with --pipeline split", backend, device, warning)
    if not on_gpu:
        return PipelineChoice(
            "detector",
            "on the CPU one ONNX Runtime session runs the whole detector (the split path is for the GPU)",
            backend,
            device,
        )
    if backend == "ort":
        return PipelineChoice(
            "detector", "ORT's split path would copy each stage through the host", backend, device
        )
    blockers = []
    if not has_split_graphs:
        blockers.append("the bundle has no split graphs")
    else:
        absent = [f"{role}.plan" for role in SPLIT_ROLES if role not in engines]
        if absent:
            blockers.append(f"{', '.join(absent)} not built (personsearch build-engine)")
    missing = installed.missing_for_split()
    if missing:
        blockers.append(f"{', '.join(missing)} not installed")
    if blockers:
        return PipelineChoice(
            "detector", f"the all-device split path is unavailable: {'; '.join(blockers)}", backend, device
        )
    return PipelineChoice(
        "split",
        "every stage stays on the device (TensorRT engines and our kernel on one non-blocking stream)",
        backend,
        device,
    )


def pipeline_for_bundle(
    bundle: Bundle,
    *,
    backend: str,
    device: str,
    requested: str = "auto",
    engine_dir: str | os.PathLike[str] | None = None,
    installed: Installed | None = None,
) -> PipelineChoice:
    """``choose_pipeline`` for a bundle: looks up its split graphs and built engines.

    Args:
        bundle: The loaded bundle.
        backend: ``"ort"`` or ``"trt"``.
        device: ``"cpu"`` or ``"cuda[:N]"``.
        requested: The user's ``--pipeline``.
        engine_dir: Where ``ROLE.plan`` engines are (``BUNDLE/engines`` by default).
        installed: What is installed (probed when None).
    """
    folder = Path(engine_dir) if engine_dir else bundle.root / "engines"
    engines = {role for role in bundle.manifest.models if (folder / f"{role}.plan").is_file()}
    return choose_pipeline(
        backend=backend,
        device=device,
        requested=requested,
        has_split_graphs=bundle.manifest.has_split,
        engines=engines,
        installed=installed if installed is not None else Installed.probe(),
    )


@dataclass(frozen=True)
class IndexSummary:
    """What one indexing run did.

    Attributes:
        sources: Files given (after expanding folders and globs).
        already_done: Sources skipped because an earlier run finished them.
        frames: Frames detected and stored in this run.
        detections: Detections stored in this run.
        skipped: (path, reason) of unreadable files.
        seconds: Wall time of the run.
    """

    sources: int
    already_done: int
    frames: int
    detections: int
    skipped: tuple[tuple[str, str], ...] = field(default=())
    seconds: float = 0.0

    @property
    def frames_per_second(self) -> float:
        """Frames per wall-clock second."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class PersonSearcher:
    """Detection, embedding and search with one bundle.

    Args:
        bundle: A ``Bundle`` or its directory.
        backend: ``"ort"`` (ONNX Runtime) or ``"trt"`` (TensorRT engines in ``engine_dir``).
        device: ``"cpu"`` or ``"cuda[:N]"``.
        batch_size: Frames per detector call.
        pipeline: ``"detector"`` (one graph), ``"split"`` (backbone_rpn -> RoIAlign -> heads)
            or ``"auto"`` (see ``choose_pipeline``: split only with TensorRT engines on the
            GPU, where every stage stays on the device; the one graph otherwise, with
            IOBinding for ONNX Runtime on the GPU). ``pipeline_choice`` says which and why.
        engine_dir: Where TensorRT engines ``ROLE.plan`` (+ ``ROLE.plan.json``) are;
            ``BUNDLE/engines`` by default.
        intra_op_threads: ONNX Runtime threads per session (0 = ORT default).
    """

    def __init__(
        self,
        *,
        bundle: Bundle | str | os.PathLike[str],
        backend: str = "ort",
        device: str = "cpu",
        batch_size: int = 4,
        pipeline: str = "auto",
        engine_dir: str | os.PathLike[str] | None = None,
        intra_op_threads: int = 0,
    ) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        if batch_size < 1:
            raise PersonSearchError(f"--batch must be >= 1, got {batch_size}")
        self.manifest = self.bundle.manifest
        self.backend = backend
        self.device = device
        self.engine_dir = Path(engine_dir) if engine_dir else self.bundle.root / "engines"
        self.intra_op_threads = intra_op_threads
        # Never exceed the largest batch the bundle declares (an engine profile's max).
        detector = self.manifest.models["detector"]
        batch_dim = detector.inputs[0].shape[0]
        max_batch = detector.dim(batch_dim).max if isinstance(batch_dim, str) else int(batch_dim)
        self.batch_size = min(batch_size, max_batch)
        self.pipeline_choice = pipeline_for_bundle(
            self.bundle, backend=backend, device=device, requested=pipeline, engine_dir=self.engine_dir
        )
        if self.pipeline_choice.warning:
            warnings.warn(self.pipeline_choice.warning, SlowPathWarning, stacklevel=2)
        self.pipeline = self.pipeline_choice.path
        self._detector = self._make_detector()
        self._query_encoder: Any = None

    # ---- construction ---------------------------------------------------------------------------

    def _stage(self, role: str) -> Any:
        if self.backend == "trt":
            return create_backend(
                "trt",
                self.engine_dir / f"{role}.plan",
                onnx_sha256=self.manifest.models[role].sha256,
                device=self.device,
            )
        if self.backend != "ort":
            raise PersonSearchError(f"unknown backend {self.backend!r}; use ort or trt")
        return create_backend(
            "ort", self.bundle.model_path(role), device=self.device, intra_op_threads=self.intra_op_threads
        )

    def _make_detector(self) -> Any:
        if self.pipeline == "detector":
            return OneGraphDetector(manifest=self.manifest, stage=self._stage("detector"))
        stages = {role: self._stage(role) for role in SPLIT_ROLES}
        if self.device.startswith("cuda"):
            from personsearch_runtime.gpu.device_pipeline import device_split_detector

            return device_split_detector(manifest=self.manifest, stages=stages, device=self.device)
        return SplitDetector(manifest=self.manifest, stages=stages)

    # ---- detection --------------------------------------------------------------------------------

    def detect_prepared(self, prepared: Sequence[PreparedImage]) -> list[BatchDetections]:
        """Detect in already prepared images (one padded batch); boxes in fed-image pixels."""
        batch = batch_images(prepared, self.manifest.preprocessing)
        # Clip boxes to each image inside the padding, as the trainer's model does.
        image_sizes = np.array([p.size for p in prepared], dtype=np.float32)
        return self._detector(batch, image_sizes)

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Detect people in decoded images.

        Args:
            images: [H, W, 3] uint8 BGR images (any sizes; batched ``batch_size`` at a time).

        Returns:
            One ``Detections`` per image (source ``"<memory>"``, frame index = position).
        """
        frames = [Frame("<memory>", i, None, image) for i, image in enumerate(images)]
        return list(self.detect_frames(frames))

    def detect_frames(self, frames: Iterable[Frame]) -> Iterator[Detections]:
        """Detect people in a stream of frames, ``batch_size`` frames per call, in order."""
        for chunk in _chunks(frames, self.batch_size):
            yield from self._detect_chunk(chunk)

    def _detect_chunk(self, chunk: Sequence[Frame]) -> list[Detections]:
        spec = self.manifest.preprocessing
        prepared = [prepare_image(f.image, spec) for f in chunk]
        raw = self.detect_prepared(prepared)
        out = []
        for frame, image, det in zip(chunk, prepared, raw, strict=True):
            out.append(
                Detections(
                    source=frame.source,
                    frame_index=frame.frame_index,
                    timestamp=frame.timestamp,
                    image_size=image.original_size,
                    boxes=to_original(det.boxes, image),
                    scores=det.scores.astype(np.float32),
                    embeddings=det.embeddings.astype(np.float32),
                )
            )
        return out

    # ---- query embeddings -------------------------------------------------------------------------

    def embed_boxes(self, image_bgr: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Embed given boxes of one image with the query encoder.

        Args:
            image_bgr: [H, W, 3] uint8 BGR image.
            boxes: [M, 4] float32 xyxy in the image's pixels.

        Returns:
            [M, D] float32 L2-normalised embeddings.
        """
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        height, width = image_bgr.shape[:2]
        bad = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
        outside = (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0) | (boxes[:, 0] >= width) | (boxes[:, 1] >= height)
        if np.any(bad | outside):
            i = int(np.nonzero(bad | outside)[0][0])
            raise PersonSearchError(
                f"box {boxes[i].tolist()} is empty or outside the {width}x{height} image; give "
                "x1,y1,x2,y2 with "
                "x1 < x2 and y1 < y2 inside the image"
            )
        if self._query_encoder is None:
            self._query_encoder = self._stage("query_encoder")
        spec = self.manifest.models["query_encoder"]
        image = prepare_image(image_bgr, self.manifest.preprocessing)
        tensor = batch_images([image], self.manifest.preprocessing).astype(spec.inputs[0].dtype)
        resized = to_resized(boxes, image)
        m_symbol = spec.inputs[1].shape[0]
        cap = spec.dim(m_symbol).max if isinstance(m_symbol, str) else int(m_symbol)
        parts = []
        for start in range(0, len(resized), cap):
            out = self._query_encoder.run(
                {spec.inputs[0].name: tensor, spec.inputs[1].name: resized[start : start + cap]}
            )
            parts.append(np.asarray(out[spec.outputs[0].name], np.float32))
        return l2_normalize(np.concatenate(parts))

    def embed_crop(self, crop_bgr: np.ndarray, *, require_person: bool = True) -> np.ndarray:
        """Embed a person crop (the whole crop is the box).

        Args:
            crop_bgr: [H, W, 3] uint8 BGR crop of one person.
            require_person: First check with the detector that the crop shows a person.

        Returns:
            [1, D] float32.

        Raises:
            NoPersonFoundError: ``require_person`` and the detector finds nobody.
        """
        if require_person and not len(self.detect([crop_bgr])[0]):
            raise NoPersonFoundError(
                "no person was found in the query image; give a crop that shows one person, or a full frame "
                "with --frame F --box x1,y1,x2,y2"
            )
        height, width = crop_bgr.shape[:2]
        return self.embed_boxes(crop_bgr, np.array([[0, 0, width, height]], np.float32))

    # ---- gallery ------------------------------------------------------------------------------------

    def index(
        self,
        gallery: Any,
        sources: Sequence[str | os.PathLike[str]],
        *,
        every_nth_frame: int = 1,
        progress: bool = False,
    ) -> IndexSummary:
        """Detect, embed and store every frame of ``sources`` in ``gallery``; resumable.

        Each batch of frames is committed in one transaction together with the resume
        point of its sources, so an interrupted run keeps everything committed and the
        next run with the same sources continues after the last committed frame.

        Args:
            gallery: A writable ``GalleryIndex`` built for this bundle.
            sources: Files, folders and globs.
            every_nth_frame: Keep every n-th frame of videos.
            progress: Show a tqdm progress bar (frames and frames/s) on stderr.

        Returns:
            What was done.
        """
        gallery.check_bundle(self.bundle)
        files = expand_sources(sources)
        resume = {str(f): gallery.resume_point(str(f)) for f in files}
        already = sum(1 for v in resume.values() if v < 0)
        reader = FrameReader(files, every_nth_frame=every_nth_frame, start_frame=lambda s: resume.get(s, 0))
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(unit="frame", desc="indexing", dynamic_ncols=True)
        started = time.perf_counter()
        frames = detections = 0
        try:
            for chunk in _chunks(reader, self.batch_size):
                dets = self._detect_chunk(chunk)
                gallery.add(dets, finished=[f.source for f in chunk if f.is_last])
                frames += len(chunk)
                detections += sum(len(d) for d in dets)
                if bar is not None:
                    bar.update(len(chunk))
                    bar.set_postfix(detections=detections)
        finally:
            if bar is not None:
                bar.close()
            reader.close()
        gallery.save()
        if not frames and reader.stats.skipped and len(reader.stats.skipped) == len(files) - already:
            raise SourceError(
                f"none of the {len(files)} source(s) could be read ({reader.stats.skipped[0][0]}: "
                f"{reader.stats.skipped[0][1]}, ...)"
            )
        return IndexSummary(
            sources=len(files),
            already_done=already,
            frames=frames,
            detections=detections,
            skipped=tuple(reader.stats.skipped),
            seconds=time.perf_counter() - started,
        )

    def search_crop(
        self,
        gallery: Any,
        crop_bgr: np.ndarray,
        *,
        top_k: int = 10,
        score_weighted: bool = False,
        require_person: bool = True,
    ) -> list[SearchHit]:
        """Search ``gallery`` for the person in a crop; best hit first."""
        gallery.check_bundle(self.bundle)
        query = self.embed_crop(crop_bgr, require_person=require_person)
        return gallery.search(query, top_k=top_k, score_weighted=score_weighted)[0]

    def search_box(
        self,
        gallery: Any,
        frame_bgr: np.ndarray,
        box: Sequence[float],
        *,
        top_k: int = 10,
        score_weighted: bool = False,
    ) -> list[SearchHit]:
        """Search ``gallery`` for the person inside ``box`` (x1, y1, x2, y2 pixels) of a frame."""
        gallery.check_bundle(self.bundle)
        query = self.embed_boxes(frame_bgr, np.asarray([box], np.float32))
        return gallery.search(query, top_k=top_k, score_weighted=score_weighted)[0]


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
