"""Measured parity of a bundle's text graphs: ONNX Runtime against the PyTorch dual encoder.

What is compared, and how:

* ``text_encoder``: one sentence of every token length from 2 (an empty sentence, its
  special tokens only) up to the tokenizer's ``max_length``, plus one sentence longer than
  that (truncated). Sentences are built from words the tokenizer keeps whole, so each
  has exactly its length. ONNX Runtime gets them the way the runtime feeds them: each
  sentence alone, unpadded, and all of them again in shuffled batches of up to the
  graph's largest batch, each padded to its longest sentence (mixed lengths, so padding
  and its mask are exercised). PyTorch gets them the way training fed them: padded to
  ``max_length``. Masked padding must not change an embedding, so one tolerance covers
  both.
* ``crop_encoder``: seeded random crops in [0, 1] at the graph's crop size, in a batch of
  one, a full batch and random batch sizes.
* ``tokenizer``: the bundle's ``tokenizer.json``, loaded with the ``tokenizers`` package
  and nothing else, must give exactly the ids and masks fed above (the trainer's
  tokenizer's), alone and batched; any sentence that differs is counted.

The metric is the cosine distance ``1 - cos`` between each ONNX and PyTorch embedding
(computed in float64, floored at 0), with the largest absolute difference of any
element beside it. For unit vectors ``|a - b|^2 = 2 (1 - cos)``, so the absolute
difference of one element cannot exceed ``sqrt(2 * tolerance)`` when the cosine passes;
that is the absolute tolerance, and what it catches on its own is an output that is not
normalised the way PyTorch's is.

fp16. An fp16 bundle is measured on ONNX Runtime with its fp16 rounding emulated
(:func:`personsearch_export.precision.emulate_fp16`, as for the detector) against
:data:`TOLERANCES` ``["fp16"]``. An fp32 bundle's graphs are also converted to fp16 in
memory, as ``--precision fp16`` would write them, and measured the same way: the rows
``text_encoder.embeddings fp16 (1-cos)`` and ``crop_encoder.embeddings fp16 (1-cos)``
tell whether an fp16 export of this model would pass. They are *informational*: marked
``"informational": true``, they never fail the fp32 bundle's ``passed``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from personsearch_export.errors import ExportError
from personsearch_export.precision import convert_to_fp16, emulate_fp16, holds_fp16
from personsearch_export.text_graphs import convert_text_encoder_to_fp16

__all__ = [
    "FP16_VARIANT_TOLERANCE",
    "TOLERANCES",
    "abs_tolerance",
    "merge_text_parity",
    "run_text_parity",
    "sentences_by_length",
]

#: Largest cosine distance ``1 - cos`` that passes, per bundle precision.
TOLERANCES: dict[str, float] = {"fp32": 1e-5, "fp16": 1e-3}
#: Tolerance shown beside the informational fp16 rows of an fp32 bundle.
FP16_VARIANT_TOLERANCE = TOLERANCES["fp16"]
#: 1 - cosine allowed for the int8 CPU variant of the text encoder (``--text-int8``): int8
#: weights and run-time-quantised activations keep cosine >= 0.95 to the float model on every
#: sentence length; what it costs a search is
#: measured on TBPS (README).
INT8_TOLERANCE = 5e-2

#: Words of person descriptions; the sentences are made of those the tokenizer keeps whole.
_WORDS = (
    "a woman in a red shirt and black trousers with white shoes carrying a blue bag on her "
    "left shoulder the man wears a grey coat over a green jacket with short dark hair and "
    "glasses he is walking with a brown backpack and holding a phone in his right hand"
).split()
#: Words past ``max_length`` in the sentence that checks truncation.
_OVERLONG_EXTRA = 8


def abs_tolerance(cosine_tolerance: float) -> float:
    """Largest element difference two unit vectors within ``cosine_tolerance`` can have: ``sqrt(2 t)``."""
    return math.sqrt(2.0 * cosine_tolerance)


def _raw_tokenizer(path: Path) -> Any:
    """The tokenizer file with neither padding nor truncation, for counting tokens."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def sentences_by_length(tokenizer_file: str | Path, lengths: Sequence[int]) -> dict[int, str]:
    """One sentence per token length, special tokens included.

    Args:
        tokenizer_file: The ``tokenizer.json`` that counts the tokens.
        lengths: Wanted lengths; each at least the number of special tokens an empty
            sentence gets.

    Returns:
        Length -> sentence, made of description words that are one token each.

    Raises:
        ExportError: The tokenizer splits every word of the list, or a sentence does not
            come out at its length (a tokenizer that merges tokens across spaces).
    """
    tokenizer = _raw_tokenizer(Path(tokenizer_file))
    specials = len(tokenizer.encode("").ids)
    pool = [w for w in _WORDS if len(tokenizer.encode(w).ids) == specials + 1]
    if not pool:
        raise ExportError(
            f"{tokenizer_file} splits every word of the parity sentences into several tokens; "
            "sentences of exact token lengths cannot be built from them"
        )
    out: dict[int, str] = {}
    for n in lengths:
        if n < specials:
            raise ExportError(f"no sentence has {n} tokens: {tokenizer_file} adds {specials} special tokens")
        text = " ".join(pool[i % len(pool)] for i in range(n - specials))
        got = len(tokenizer.encode(text).ids)
        if got != n:
            raise ExportError(
                f"a sentence of {n - specials} one-token words gives {got} tokens with {tokenizer_file}, "
                f"not {n}; the parity sentences cannot be built for this tokenizer"
            )
        out[n] = text
    return out


def _session(model: onnx.ModelProto) -> Any:
    """A CPU session of ``model``; fp16 graphs run as their rounding emulation (see parity.py)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    graph = emulate_fp16(model) if holds_fp16(model) else model
    return ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _run(session: Any, what: str, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """``session.run`` with a failure reported as an :class:`ExportError` naming the shapes fed."""
    try:
        return session.run(None, feed)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        shapes = ", ".join(f"{name} {list(value.shape)}" for name, value in feed.items())
        reason = str(exc).strip().splitlines()[-1][:300]
        raise ExportError(
            f"ONNX Runtime cannot run {what} on {shapes} ({reason}); the graph does not take sizes its "
            "manifest promises (a size fixed when it was traced); re-export it, and report the model "
            "if that does not help"
        ) from None


def _distances(onnx_out: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Worst ``1 - cos`` (floored at 0) and worst absolute difference over matching rows."""
    a = np.asarray(onnx_out, np.float64)
    b = np.asarray(reference, np.float64)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return max(0.0, float((1.0 - cos).max())), float(np.abs(a - b).max())


def _row(worst: float, tolerance: float, *, informational: bool = False) -> dict[str, Any]:
    row: dict[str, Any] = {
        "worst": worst,
        "tolerance": tolerance,
        "tolerance_that_would_pass": worst,
        "passed": worst <= tolerance,
    }
    if informational:
        row["informational"] = True
    return row


def run_text_parity(
    bundle_root: str | Path,
    model: torch.nn.Module,
    *,
    random_cases: int = 3,
    seed: int = 0,
    fp16_variants: bool = True,
) -> dict[str, Any]:
    """Compare a bundle's ``text_encoder`` and ``crop_encoder`` with the PyTorch dual encoder.

    Args:
        bundle_root: Bundle folder with text graphs (may be the exporter's temporary folder).
        model: The ``DualEncoder`` of the text checkpoint, eval mode.
        random_cases: Crop batches of random size besides a single crop and a full batch.
        seed: Seed of the crops and of the sentences' batching.
        fp16_variants: For an fp32 bundle, also measure both graphs converted to fp16
            (the informational rows); False skips that conversion of each graph.

    Returns:
        The text part of the parity report: ``outputs`` (rows as in ``parity.json``),
        ``passed`` (informational rows excluded), ``compared_sentences``,
        ``compared_crops`` and ``text`` (what was fed, and each case's figures).

    Raises:
        ExportError: The bundle has no text graphs, or the sentences cannot be built.
        BundleError: The bundle does not load.
    """
    from personsearch_runtime.bundle import Bundle
    from tokenizers import Tokenizer

    bundle = Bundle.load(bundle_root)
    manifest = bundle.manifest
    if manifest.text is None or manifest.tokenizer is None:
        raise ExportError(f"bundle {bundle.root} has no text graphs to compare")
    precision = manifest.precision
    tolerance = TOLERANCES[precision]
    text_spec = manifest.models["text_encoder"]
    crop_spec = manifest.models["crop_encoder"]
    ids_name, mask_name = (t.name for t in text_spec.inputs)
    crops_name = crop_spec.inputs[0].name
    max_length = manifest.tokenizer.max_length
    text_batch = text_spec.dim(text_spec.inputs[0].shape[0]).max
    crop_batch = crop_spec.dim(crop_spec.inputs[0].shape[0]).max
    graphs = {role: onnx.load(str(bundle.model_path(role))) for role in ("text_encoder", "crop_encoder")}
    sessions = {role: _session(graph) for role, graph in graphs.items()}
    if manifest.text.int8_file is not None:
        sessions["text_encoder_int8"] = _session(onnx.load(str(bundle.root / manifest.text.int8_file)))
    variants: dict[str, Any] = {}
    if precision == "fp32" and fp16_variants:
        # What --precision fp16 would write, converted in memory and measured the same way.
        variants = {
            "text_encoder": _session(convert_text_encoder_to_fp16(graphs["text_encoder"])[0]),
            "crop_encoder": _session(convert_to_fp16(graphs["crop_encoder"])[0]),
        }

    # --- sentences -------------------------------------------------------------------------
    tokenizer = model.tokenizer
    lengths = list(range(2, max_length + 1))
    by_length = sentences_by_length(tokenizer.tokenizer_file, [*lengths, max_length + _OVERLONG_EXTRA])
    texts = [by_length[n] for n in lengths] + [by_length[max_length + _OVERLONG_EXTRA]]
    tokens = tokenizer(texts)  # training's tokenisation: padded (and cut) to max_length
    ids, mask = tokens.input_ids, tokens.attention_mask
    counts = mask.sum(1).astype(int)
    with torch.no_grad():
        reference = model.encode_texts(torch.from_numpy(ids), torch.from_numpy(mask)).float().numpy()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(texts))
    batches = [order[i : i + text_batch] for i in range(0, len(order), text_batch)]
    bundled = Tokenizer.from_file(str(bundle.root / manifest.tokenizer.file))
    mismatched: set[int] = set()
    cases: list[dict[str, Any]] = []
    worst = {"text": [0.0, 0.0], "crop": [0.0, 0.0], "text16": 0.0, "crop16": 0.0, "text8": 0.0}

    def measure(kind: str, feed: dict[str, np.ndarray], ref: np.ndarray, record: dict[str, Any]) -> None:
        role = f"{kind}_encoder"
        (out,) = _run(sessions[role], role, feed)
        cos, diff = _distances(out, ref)
        worst[kind][0], worst[kind][1] = max(worst[kind][0], cos), max(worst[kind][1], diff)
        record.update(cosine_distance=cos, max_abs=diff)
        if variants:
            (out16,) = _run(variants[role], f"{role} (fp16 variant)", feed)
            cos16 = _distances(out16, ref)[0]
            worst[f"{kind}16"] = max(worst[f"{kind}16"], cos16)
            record["fp16_cosine_distance"] = cos16
        if kind == "text" and "text_encoder_int8" in sessions:
            (out8,) = _run(sessions["text_encoder_int8"], "text_encoder (int8 variant)", feed)
            cos8 = _distances(out8, ref)[0]
            worst["text8"] = max(worst["text8"], cos8)
            record["int8_cosine_distance"] = cos8
        cases.append(record)

    for i, text in enumerate(texts):
        n = int(counts[i])
        encoding = bundled.encode(text)
        if encoding.ids != ids[i, :n].tolist() or encoding.attention_mask != [1] * n:
            mismatched.add(i)
        feed = {ids_name: ids[i : i + 1, :n], mask_name: mask[i : i + 1, :n]}
        case = "truncated" if i == len(texts) - 1 else "single"
        measure("text", feed, reference[i : i + 1], {"case": case, "tokens": n})
    for rows in batches:
        longest = int(counts[rows].max())
        encodings = bundled.encode_batch([texts[i] for i in rows])
        for i, encoding in zip(rows, encodings, strict=True):
            expected = (ids[i, :longest].tolist(), mask[i, :longest].tolist())
            if (encoding.ids, encoding.attention_mask) != expected:
                mismatched.add(int(i))
        feed = {ids_name: ids[rows, :longest], mask_name: mask[rows, :longest]}
        record = {"case": "padded_batch", "tokens": [int(counts[i]) for i in rows], "padded_to": longest}
        measure("text", feed, reference[rows], record)

    # --- crops -----------------------------------------------------------------------------
    crop_shape = tuple(int(d) for d in crop_spec.inputs[0].shape[1:])
    crop_dtype = np.float16 if crop_spec.inputs[0].dtype == "float16" else np.float32
    sizes = [1, crop_batch] + [int(rng.integers(1, crop_batch + 1)) for _ in range(random_cases)]
    all_crops = rng.random((sum(sizes), *crop_shape), dtype=np.float32)
    with torch.no_grad():
        # One call for every case: batch norm is frozen, so rows do not see each other.
        crop_reference = model.encode_images(torch.from_numpy(all_crops)).float().numpy()
    start = 0
    for size in sizes:
        rows = slice(start, start + size)
        feed = {crops_name: all_crops[rows].astype(crop_dtype)}
        measure("crop", feed, crop_reference[rows], {"case": "crops", "batch": size})
        start += size

    limit = abs_tolerance(tolerance)
    outputs = {
        "text_encoder.embeddings (1-cos)": _row(worst["text"][0], tolerance),
        "text_encoder.embeddings (max abs)": _row(worst["text"][1], limit),
        "crop_encoder.embeddings (1-cos)": _row(worst["crop"][0], tolerance),
        "crop_encoder.embeddings (max abs)": _row(worst["crop"][1], limit),
        "tokenizer.mismatched_sentences": _row(float(len(mismatched)), 0.0),
    }
    if "text_encoder_int8" in sessions:
        outputs["text_encoder.embeddings int8 (1-cos)"] = _row(worst["text8"], INT8_TOLERANCE)
    if variants:
        outputs["text_encoder.embeddings fp16 (1-cos)"] = _row(
            worst["text16"], FP16_VARIANT_TOLERANCE, informational=True
        )
        outputs["crop_encoder.embeddings fp16 (1-cos)"] = _row(
            worst["crop16"], FP16_VARIANT_TOLERANCE, informational=True
        )
    return {
        "outputs": outputs,
        "passed": all(row["passed"] for row in outputs.values() if not row.get("informational")),
        "compared_sentences": len(texts),
        "compared_crops": sum(sizes),
        "text": {
            "reference": (
                "PyTorch DualEncoder.encode_texts on sentences padded to max_length (as in training) "
                "and encode_images, CPU, float32"
            ),
            "fed": (
                f"ONNX Runtime: each sentence alone and unpadded, and in batches of up to {text_batch} "
                f"padded to their longest; token lengths 2..{max_length} plus one truncated sentence; "
                f"random crops {crop_shape[1]}x{crop_shape[2]} in batches of {sizes}"
            ),
            "fp16_variants": (
                "the fp32 graphs converted to fp16 as --precision fp16 would write them, rounding "
                "emulated; informational rows"
                if variants
                else None
            ),
            "mismatched_sentences": [texts[i] for i in sorted(mismatched)],
            "cases": cases,
        },
    }


def merge_text_parity(report: dict[str, Any], text_report: dict[str, Any]) -> dict[str, Any]:
    """The bundle's parity report with the text graphs' rows and figures added.

    Args:
        report: The detector family's report (:func:`personsearch_export.parity.run_parity`).
        text_report: :func:`run_text_parity`'s result.

    Returns:
        A new report: ``outputs`` holds both sets of rows, ``passed`` requires both (the
        informational rows aside), and ``compared_sentences``, ``compared_crops`` and
        ``text`` are added.
    """
    merged = dict(report)
    merged["outputs"] = {**report["outputs"], **text_report["outputs"]}
    merged["passed"] = bool(report["passed"]) and bool(text_report["passed"])
    for key in ("compared_sentences", "compared_crops", "text"):
        merged[key] = text_report[key]
    return merged
