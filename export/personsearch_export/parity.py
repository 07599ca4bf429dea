"""Measured parity: the bundle's graphs in ONNX Runtime against the PyTorch model.

The reference is the trained model's own ``predict`` / ``embed_boxes`` run at the fed
resolution (its resize step is made an identity for each case), so the comparison covers
the adapters as well as the exporter. Cases are synthetic scenes (real rendered
people) at the profile's opt size and at random sizes and batch sizes inside the
profile. Per output we record the worst error seen and compare it with a tolerance
table; ``parity.json`` states both, so a failing bundle says what tolerance it needed.

Where the exporter capped the RPN's pre-NMS top-N below the model's (TensorRT's TopK
limit, :func:`personsearch_export.seqnet_family.resolve_rpn_pre_nms_top_n`), the reference
runs with the graphs' count (read from the detector graph's metadata) for the duration of
the check, so parity measures the export and not the cap; ``parity.json`` records both
counts under ``rpn_pre_nms_top_n``.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from personsearch_export.bundle_folder import PARITY_FILE
from personsearch_export.errors import ExportError
from personsearch_export.onnx_export import read_rpn_pre_nms_top_n

__all__ = ["PARITY_FILE", "TOLERANCES", "OnnxSearchModel", "load_scene_images", "run_parity"]


#: Per-precision pass thresholds: boxes in pixels (max abs), scores (max abs), embeddings
#: (min cosine similarity between matched rows); fp32 detection counts must be equal,
#: fp16 may leave a share of detections unpaired (``unmatched_fraction``, see
#: :data:`IOU_PAIRED`). fp16 figures measured on the tiny synthetic model: boxes 0.03 px,
#: scores 4e-4, cosine 0.999999, about 1 % unpaired detections.
TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {"boxes_px": 0.01, "scores_abs": 1e-4, "embeddings_cosine": 0.99999},
    "fp16": {"boxes_px": 1.0, "scores_abs": 1e-2, "embeddings_cosine": 0.999, "unmatched_fraction": 0.05},
}

#: Precisions whose detections are paired by box overlap rather than by rank. Rounding
#: can swap two detections of near-equal score or flip one at the score / NMS threshold;
#: pairing by rank would then compare different people. Pairs need IoU >= 0.9 (Hungarian
#: assignment on IoU); the share of detections left unpaired is checked on its own.
IOU_PAIRED = ("fp16",)
_PAIR_IOU = 0.9


def load_scene_images(scenes_dir: str | Path | None, count: int = 6) -> list[np.ndarray]:
    """Return ``count`` synthetic scenes as ``[H, W, 3]`` float32 RGB in [0, 1].

    Args:
        scenes_dir: A folder of ``.jpg``/``.png`` images (e.g. a synthetic dataset made
            by ``personsearch synth``); None generates the ``tiny`` synthetic set (seed 0)
            in a temporary folder.
        count: How many images (the first ones in sorted path order).

    Raises:
        ExportError: When no images are found.
    """
    import cv2

    def read(folder: Path) -> list[np.ndarray]:
        paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:count]
        images = []
        for p in paths:
            bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if bgr is not None:
                images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0)
        return images

    if scenes_dir is not None:
        images = read(Path(scenes_dir))
    else:
        from personsearch_train.data.synthetic.generator import generate_dataset

        with tempfile.TemporaryDirectory(prefix="personsearch-parity-") as tmp:
            generate_dataset(Path(tmp) / "synthetic", preset="tiny", seed=0, workers=1)
            images = read(Path(tmp) / "synthetic")
    if not images:
        raise ExportError(f"no scene images found in {scenes_dir}; pass a folder of .jpg/.png images")
    return images


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    import cv2

    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


@contextlib.contextmanager
def _native_resolution(model: torch.nn.Module, height: int, width: int) -> Iterator[None]:
    """Make the model's resize step an identity for ``height x width`` inputs."""
    transform = model.transform
    saved = (transform.min_size, transform.max_size)
    transform.min_size = (min(height, width),)
    transform.max_size = max(height, width)
    try:
        yield
    finally:
        transform.min_size, transform.max_size = saved


@contextlib.contextmanager
def _rpn_pre_nms_top_n(model: torch.nn.Module, count: int) -> Iterator[None]:
    """Make the model's RPN keep ``count`` anchors before NMS at test time; restored on exit."""
    table = model.rpn._pre_nms_top_n
    saved = table["testing"]
    table["testing"] = int(count)
    try:
        yield
    finally:
        table["testing"] = saved


@dataclass
class _Worst:
    boxes_px: float = 0.0
    scores_abs: float = 0.0
    embeddings_cosine: float = 1.0
    count_mismatches: int = 0
    compared_detections: int = 0
    unmatched: int = 0
    candidates: int = 0

    def update(self, boxes: float, scores: float, cosine: float) -> None:
        self.boxes_px = max(self.boxes_px, boxes)
        self.scores_abs = max(self.scores_abs, scores)
        self.embeddings_cosine = min(self.embeddings_cosine, cosine)


def _pair_by_iou(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of paired rows of ``a`` ``[N, 4]`` and ``b`` ``[M, 4]`` xyxy (IoU >= ``_PAIR_IOU``)."""
    from scipy.optimize import linear_sum_assignment
    from torchvision.ops import box_iou

    if len(a) == 0 or len(b) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    iou = box_iou(torch.from_numpy(np.ascontiguousarray(a, np.float32)), torch.from_numpy(b)).numpy()
    rows, cols = linear_sum_assignment(-iou)
    good = iou[rows, cols] >= _PAIR_IOU
    return rows[good], cols[good]


def _cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) == 0:
        return 1.0
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    cos = (a * b).sum(1) / np.maximum(na * nb, 1e-12)
    return float(cos.min())


def _profile_sizes(spec: Any, divisor: int) -> tuple[int, int, int, int, int, int]:
    def rng(name: str) -> tuple[int, int, int]:
        d = spec.dim(name)
        lo = -(-d.min // divisor) * divisor
        hi = d.max // divisor * divisor
        opt = min(max(-(-d.opt // divisor) * divisor, lo), hi)
        return lo, opt, hi

    return (*rng("H"), *rng("W"))


def _parity_graph(path: Path) -> bytes:
    """The graph parity runs: the file itself, or for fp16 graphs its rounding emulation.

    ONNX Runtime's CPU provider drops the activation rounding of fp16 graphs (see
    :func:`personsearch_export.precision.emulate_fp16`), so fp16 errors are measured on
    the emulation, which rounds every fp16 tensor as the graph specifies.
    """
    import onnx

    from personsearch_export.precision import emulate_fp16, holds_fp16

    model = onnx.load(str(path))
    return (emulate_fp16(model) if holds_fp16(model) else model).SerializeToString()


def run_parity(
    bundle_root: str | Path,
    model: torch.nn.Module,
    *,
    scenes: Sequence[np.ndarray],
    random_cases: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare the bundle's detector and query encoder with the PyTorch model.

    Args:
        bundle_root: Bundle folder (may be a temporary folder whose manifest is written).
        model: The SeqNet the bundle was exported from, eval mode.
        scenes: ``[H, W, 3]`` float32 RGB images in [0, 1] (see :func:`load_scene_images`).
        random_cases: Extra cases at random sizes and batch sizes inside the profile.
        seed: Seed of the random cases.

    Returns:
        The parity report (also what ``parity.json`` holds). ``rpn_pre_nms_top_n`` holds
        ``graphs`` (the count recorded in the detector graph, None for bundles written
        before it was recorded), ``model`` (the model's own test-time count) and
        ``reference`` (the count the PyTorch reference ran with).
    """
    import onnxruntime as ort
    from personsearch_runtime.bundle import Bundle

    bundle = Bundle.load(bundle_root)
    manifest = bundle.manifest
    det_spec = manifest.models["detector"]
    qe_spec = manifest.models["query_encoder"]
    k = manifest.postprocessing.max_detections
    tolerances = TOLERANCES[manifest.precision]
    by_iou = manifest.precision in IOU_PAIRED
    options = ort.SessionOptions()
    options.log_severity_level = 3
    detector = ort.InferenceSession(
        _parity_graph(bundle.model_path("detector")), options, providers=["CPUExecutionProvider"]
    )
    encoder = ort.InferenceSession(
        _parity_graph(bundle.model_path("query_encoder")), options, providers=["CPUExecutionProvider"]
    )
    det_in = det_spec.inputs[0].name
    qe_image, qe_boxes = (t.name for t in qe_spec.inputs)
    input_dtype = np.float16 if det_spec.inputs[0].dtype == "float16" else np.float32
    prep = manifest.preprocessing
    mean = np.asarray(prep.mean, np.float32)[None, :, None, None]
    std = np.asarray(prep.std, np.float32)[None, :, None, None]

    h_lo, h_opt, h_hi, w_lo, w_opt, w_hi = _profile_sizes(det_spec, manifest.preprocessing.pad_divisor)
    max_batch = det_spec.dim("B").max
    rng = np.random.default_rng(seed)
    cases: list[tuple[str, int, int, int]] = [("synthetic@opt", h_opt, w_opt, min(2, max_batch, len(scenes)))]
    for _ in range(random_cases):
        cases.append(
            (
                "synthetic@random",
                int(rng.integers(h_lo // 32, h_hi // 32 + 1)) * 32 if h_hi >= 32 else h_lo,
                int(rng.integers(w_lo // 32, w_hi // 32 + 1)) * 32 if w_hi >= 32 else w_lo,
                int(rng.integers(1, min(max_batch, len(scenes)) + 1)),
            )
        )

    model_pre_nms = int(model.rpn._pre_nms_top_n["testing"])
    recorded = read_rpn_pre_nms_top_n(bundle.model_path("detector"))
    graphs_pre_nms = None if recorded is None else recorded[0]
    reference_pre_nms = model_pre_nms if graphs_pre_nms is None else graphs_pre_nms

    det_worst, qe_worst = _Worst(), _Worst()
    records = []
    start = 0
    for source, height, width, batch in cases:
        picked = [scenes[(start + i) % len(scenes)] for i in range(batch)]
        start += batch
        fed = np.stack([_resize(im, height, width).transpose(2, 0, 1) for im in picked]).astype(np.float32)
        graph_in = fed if prep.normalize_in_graph else (fed - mean) / std
        feed = {det_in: graph_in.astype(input_dtype)}
        if len(det_spec.inputs) == 2:  # fed at native size: the images fill the tensor
            feed[det_spec.inputs[1].name] = np.tile(np.array([[height, width]], np.float32), (batch, 1))
        boxes, scores, embeddings, counts = detector.run(None, feed)
        with (
            torch.no_grad(),
            _native_resolution(model, height, width),
            _rpn_pre_nms_top_n(model, reference_pre_nms),
        ):
            reference = model.predict([torch.from_numpy(x) for x in fed])
        case = {
            "source": source,
            "size": [height, width],
            "batch": batch,
            "counts_onnx": [],
            "counts_torch": [],
        }
        for b, ref in enumerate(reference):
            n_ref = min(int(ref.boxes.shape[0]), k)
            n_onnx = int(counts[b])
            case["counts_onnx"].append(n_onnx)
            case["counts_torch"].append(n_ref)
            if n_ref != n_onnx:
                det_worst.count_mismatches += 1
            if by_iou:
                ia, ib = _pair_by_iou(boxes[b, :n_onnx], ref.boxes[:n_ref].numpy().astype(np.float32))
                det_worst.unmatched += n_onnx + n_ref - 2 * len(ia)
                det_worst.candidates += n_onnx + n_ref
            else:
                ia = ib = np.arange(min(n_ref, n_onnx))
            if len(ia):
                det_worst.update(
                    float(np.abs(boxes[b, ia] - ref.boxes[ib].numpy()).max()),
                    float(np.abs(scores[b, ia].astype(np.float32) - ref.scores[ib].numpy()).max()),
                    _cosine_min(embeddings[b, ia].astype(np.float32), ref.embeddings[ib].numpy()),
                )
                det_worst.compared_detections += len(ia)
        # Query path: embed the reference detections of the first image (or a fixed box).
        query_boxes = reference[0].boxes[:8].numpy().astype(np.float32)
        if len(query_boxes) == 0:
            query_boxes = np.array([[0.1 * width, 0.1 * height, 0.5 * width, 0.9 * height]], np.float32)
        (q_onnx,) = encoder.run(None, {qe_image: graph_in[:1].astype(input_dtype), qe_boxes: query_boxes})
        with torch.no_grad(), _native_resolution(model, height, width):
            (q_ref,) = model.embed_boxes([torch.from_numpy(fed[0])], [torch.from_numpy(query_boxes)])
        qe_worst.update(0.0, 0.0, _cosine_min(q_onnx.astype(np.float32), q_ref.numpy()))
        qe_worst.compared_detections += len(query_boxes)
        records.append(case)

    checks = {
        "detector.boxes_px": (
            det_worst.boxes_px,
            tolerances["boxes_px"],
            det_worst.boxes_px <= tolerances["boxes_px"],
        ),
        "detector.scores_abs": (
            det_worst.scores_abs,
            tolerances["scores_abs"],
            det_worst.scores_abs <= tolerances["scores_abs"],
        ),
        "detector.embeddings_cosine": (
            det_worst.embeddings_cosine,
            tolerances["embeddings_cosine"],
            det_worst.embeddings_cosine >= tolerances["embeddings_cosine"],
        ),
    }
    if by_iou:
        unmatched = det_worst.unmatched / max(det_worst.candidates, 1)
        tol = tolerances["unmatched_fraction"]
        checks["detector.unmatched_fraction"] = (unmatched, tol, unmatched <= tol)
    else:
        checks["detector.count_mismatches"] = (det_worst.count_mismatches, 0, det_worst.count_mismatches == 0)
    checks |= {
        "query_encoder.embeddings_cosine": (
            qe_worst.embeddings_cosine,
            tolerances["embeddings_cosine"],
            qe_worst.embeddings_cosine >= tolerances["embeddings_cosine"],
        ),
    }
    reference_text = "PyTorch SeqNet.predict / embed_boxes at the fed resolution, CPU, float32"
    if reference_pre_nms != model_pre_nms:
        reference_text += (
            f", RPN pre-NMS top-N {reference_pre_nms} as in the graphs (the model's own: {model_pre_nms})"
        )
    return {
        "precision": manifest.precision,
        "reference": reference_text,
        "rpn_pre_nms_top_n": {
            "graphs": graphs_pre_nms,
            "model": model_pre_nms,
            "reference": reference_pre_nms,
        },
        "backend": f"onnxruntime {ort.__version__} CPUExecutionProvider"
        + (
            ", fp16 rounding emulated (fp16 weights and tensors, float32 arithmetic)"
            if manifest.precision == "fp16"
            else ""
        ),
        "outputs": {
            name: {"worst": worst, "tolerance": tol, "tolerance_that_would_pass": worst, "passed": ok}
            for name, (worst, tol, ok) in checks.items()
        },
        "compared_detections": det_worst.compared_detections,
        "compared_queries": qe_worst.compared_detections,
        "cases": records,
        "passed": all(ok for _, _, ok in checks.values()),
    }


class OnnxSearchModel(torch.nn.Module):
    """A bundle's ``detector`` / ``query_encoder`` in ONNX Runtime behind the trainer's model API.

    ``predict(images)`` and ``embed_boxes(images, boxes)`` take and return what
    ``SeqNet`` does, so the trainer's evaluation (``predict_split`` + ``evaluate_search``)
    can score ONNX Runtime outputs exactly as it scores the PyTorch model. Preprocessing is
    torchvision's ``GeneralizedRCNNTransform`` built from the manifest (resize, normalise,
    zero-pad to the divisor), i.e. what the PyTorch model does itself.

    Args:
        bundle_root: The bundle folder.
    """

    def __init__(self, bundle_root: str | Path) -> None:
        super().__init__()
        import onnxruntime as ort
        from personsearch_runtime.bundle import Bundle
        from torchvision.models.detection.transform import GeneralizedRCNNTransform

        bundle = Bundle.load(bundle_root)
        self.manifest = bundle.manifest
        prep = self.manifest.preprocessing
        identity = prep.normalize_in_graph
        self.transform = GeneralizedRCNNTransform(
            min_size=prep.min_size,
            max_size=prep.max_size,
            image_mean=[0.0, 0.0, 0.0] if identity else list(prep.mean),
            image_std=[1.0, 1.0, 1.0] if identity else list(prep.std),
            size_divisible=prep.pad_divisor,
        )
        options = ort.SessionOptions()
        options.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        self.detector = ort.InferenceSession(str(bundle.model_path("detector")), options, providers=providers)
        self.encoder = ort.InferenceSession(
            str(bundle.model_path("query_encoder")), options, providers=providers
        )
        self.max_batch = self.manifest.models["detector"].dim("B").max
        self.detector_input = self.manifest.models["detector"].inputs[0].name
        det_inputs = self.manifest.models["detector"].inputs
        self.sizes_input = det_inputs[1].name if len(det_inputs) == 2 else None
        self.encoder_inputs = tuple(t.name for t in self.manifest.models["query_encoder"].inputs)
        self.embedding_dim = self.manifest.embedding.dim

    @torch.no_grad()
    def predict(self, images: Sequence[torch.Tensor]) -> list[Any]:
        """Detect in ``B`` images ``[3, H, W]`` float32 RGB in [0, 1]; boxes in original pixels."""
        from personsearch_train.models import Detections

        results = []
        # With image_sizes the graph clips to each unpadded image, so a call can batch
        # images exactly as SeqNet.predict pads them together (the RPN's top-N runs over
        # the padded map, so the batch composition matters). Without it boxes are clipped
        # to the padded tensor and could reach into padding: one image per call.
        step = self.max_batch if self.sizes_input is not None else 1
        for start in range(0, len(images), step):
            chunk = list(images[start : start + step])
            image_list, _ = self.transform(chunk)
            feed = {self.detector_input: image_list.tensors.numpy()}
            if self.sizes_input is not None:
                # Clip to the unpadded image, as SeqNet does.
                feed[self.sizes_input] = np.asarray(image_list.image_sizes, np.float32).reshape(-1, 2)
            boxes, scores, embeddings, counts = self.detector.run(None, feed)
            for b, (image, (h, w)) in enumerate(zip(chunk, image_list.image_sizes, strict=True)):
                n = int(counts[b])
                ratio = np.array([image.shape[2] / w, image.shape[1] / h] * 2, np.float32)
                results.append(
                    Detections(
                        torch.from_numpy(boxes[b, :n] * ratio),
                        torch.from_numpy(scores[b, :n].astype(np.float32)),
                        torch.from_numpy(embeddings[b, :n].astype(np.float32)),
                    )
                )
        return results

    @torch.no_grad()
    def embed_boxes(
        self, images: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor]
    ) -> list[torch.Tensor]:
        """Embed ``[M_b, 4]`` original-pixel boxes of each image -> ``[M_b, D]`` float32."""
        out = []
        for image, image_boxes in zip(images, boxes, strict=True):
            image_list, targets = self.transform(
                [image], [{"boxes": image_boxes.to(torch.float32).reshape(-1, 4)}]
            )
            resized = targets[0]["boxes"].numpy().astype(np.float32)
            if len(resized) == 0:
                out.append(torch.zeros((0, self.embedding_dim)))
                continue
            image_name, boxes_name = self.encoder_inputs
            (emb,) = self.encoder.run(None, {image_name: image_list.tensors.numpy(), boxes_name: resized})
            out.append(torch.from_numpy(emb.astype(np.float32)))
        return out
