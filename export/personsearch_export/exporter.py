"""Checkpoint -> bundle: graphs, manifest and measured parity, written atomically.

The bundle is assembled in a hidden temporary folder next to the target and swapped into
place only after the manifest validates and parity has run, so an interrupted export never
leaves a half-written bundle where the runtime would look, nor removes the bundle it was
replacing. ``--overwrite`` replaces only a folder that is a bundle holding nothing but what
the exporter writes (:mod:`personsearch_export.bundle_folder`).

With a text checkpoint (``--text-checkpoint``, a run of a text-to-image method such as
``irra`` or ``cfam``) the bundle also gets the sentence-search graphs ``text_encoder`` and
``crop_encoder`` and the tokenizer (:mod:`personsearch_export.text_graphs`), and the
parity report their rows (:mod:`personsearch_export.text_parity`).
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import onnx
import torch
from personsearch_runtime.bundle import Manifest, Provenance, write_manifest

from personsearch_export.bundle_folder import (
    PARITY_FILE,
    check_output_folder,
    install_bundle,
    new_bundle_folder,
    open_bundle,
)
from personsearch_export.checkpoint_io import LoadedCheckpoint, load_checkpoint
from personsearch_export.engine_build import write_json_atomic
from personsearch_export.errors import ExportError
from personsearch_export.families import ExportRequest, get_export_family
from personsearch_export.image_profile import ImageProfile, parse_image_size
from personsearch_export.onnx_export import check_opset
from personsearch_export.parity import load_scene_images
from personsearch_export.precision import convert_file_to_fp16
from personsearch_export.text_graphs import (
    TEXT_FAMILY,
    check_text_checkpoint,
    load_text_checkpoint,
    write_text_graphs,
)
from personsearch_export.text_parity import merge_text_parity, run_text_parity

__all__ = [
    "ImageProfile",
    "export_bundle",
    "export_graphs",
    "format_parity",
    "parse_image_size",
    "verify_bundle",
]

PRECISIONS = ("fp32", "fp16")


def _versions() -> dict[str, str]:
    import personsearch_train

    return {"trainer": personsearch_train.__version__, "torch": torch.__version__, "onnx": onnx.__version__}


def _check_sizes(max_detections: int | None, max_batch: int) -> None:
    # Checked before any tracing: a 0 would otherwise mean "the model's default" (top-K)
    # or surface as a manifest field error after minutes of work (batch).
    if max_detections is not None and max_detections < 1:
        raise ExportError(f"--max-detections must be >= 1, got {max_detections}")
    if max_batch < 1:
        raise ExportError(f"--max-batch must be >= 1, got {max_batch}")


def _check_parity_cases(parity_cases: int) -> None:
    if parity_cases < 0:
        raise ExportError(f"--parity-cases must be >= 0 (extra random-size cases), got {parity_cases}")


def export_graphs(
    loaded: LoadedCheckpoint,
    folder: Path,
    *,
    opset: int,
    precision: str,
    max_detections: int | None,
    profile: ImageProfile | None,
    max_batch: int = 4,
    rpn_pre_nms_top_n: int | None = None,
    text: LoadedCheckpoint | None = None,
    text_int8: bool = False,
) -> Manifest:
    """Write the graphs the checkpoint's method describes, and ``manifest.json``, into ``folder``.

    The method's export description names the family (``seqnet``) and its graphs; the
    family traces them (:mod:`personsearch_export.families`). A text checkpoint adds the
    sentence-search graphs, ``tokenizer.json`` and the manifest's ``tokenizer`` and
    ``text`` sections (:func:`personsearch_export.text_graphs.write_text_graphs`).

    Args:
        loaded: The checkpoint.
        folder: Existing (empty) folder.
        opset: ONNX opset (>= 16).
        precision: ``"fp32"`` or ``"fp16"`` (see :mod:`personsearch_export.precision`).
        max_detections: K; default the model's detections per image.
        profile: Fed image sizes; default from the model's resize settings.
        max_batch: Largest detector batch.
        rpn_pre_nms_top_n: Anchors the RPN keeps before NMS in the graphs; default the
            model's test-time value capped at 3839, TensorRT's largest TopK
            (:func:`personsearch_export.seqnet_family.resolve_rpn_pre_nms_top_n`). The
            manifest has no field for it: the graphs record it in their ONNX metadata
            and the parity report in ``rpn_pre_nms_top_n``.
        text: A text-to-image checkpoint (``--text-checkpoint``) whose towers become the
            ``text_encoder`` and ``crop_encoder`` graphs, at the same opset, precision
            and largest batch; None for a bundle without them.
        text_int8: Also write the text encoder's int8 CPU variant.

    Returns:
        The manifest written.

    Raises:
        ExportError: Bad options, a description the family cannot write, a text
            checkpoint as ``loaded`` or a detector checkpoint as ``text``.
    """
    check_opset(opset)
    if precision not in PRECISIONS:
        raise ExportError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")
    _check_sizes(max_detections, max_batch)
    description = loaded.method.export_description()
    if description.family == TEXT_FAMILY:
        raise ExportError(
            f"--checkpoint {loaded.weights_path} is a text-to-image checkpoint (method "
            f"{loaded.method.name!r}); its graphs go into a detector's bundle: pass it as --text-checkpoint "
            "beside a person-search --checkpoint"
        )
    if text is not None:
        # Before minutes of detector tracing: a wrong text checkpoint is a quick refusal.
        check_text_checkpoint(text)
    family = get_export_family(description.family)
    unknown = sorted(set(description.graphs) - set(family.roles))
    missing = sorted(set(family.required_roles) - set(description.graphs))
    if unknown or missing:
        raise ExportError(
            f"method {loaded.method.name!r} asks the {family.name!r} export family for graphs "
            f"{list(description.graphs)}; it writes {list(family.roles)} "
            f"and needs {list(family.required_roles)}"
        )
    family.check_model(loaded.model, str(loaded.weights_path))
    request = ExportRequest(
        roles=tuple(description.graphs),
        opset=opset,
        max_detections=max_detections,
        profile=profile,
        max_batch=max_batch,
        convert=convert_file_to_fp16 if precision == "fp16" else None,
        rpn_pre_nms_top_n=rpn_pre_nms_top_n,
    )
    graphs = family.write_graphs(loaded.model, folder, request)
    text_graphs = (
        write_text_graphs(text, folder, opset=opset, precision=precision, max_batch=max_batch, int8=text_int8)
        if text is not None
        else None
    )
    versions = _versions()
    manifest = Manifest(
        models={**graphs.models, **(text_graphs.models if text_graphs is not None else {})},
        precision=precision,
        opset=opset,
        preprocessing=graphs.preprocessing,
        postprocessing=graphs.postprocessing,
        split=graphs.split,
        embedding=graphs.embedding,
        provenance=Provenance(
            checkpoint_sha256=loaded.weights_sha256,
            model_name=loaded.model_name,
            trainer_version=str(loaded.metadata.get("versions", {}).get("personsearch", versions["trainer"])),
            torch_version=versions["torch"],
            onnx_version=versions["onnx"],
            exported_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        ),
        tokenizer=text_graphs.tokenizer if text_graphs is not None else None,
        text=text_graphs.text if text_graphs is not None else None,
    )
    write_manifest(folder, manifest)
    return manifest


def export_bundle(
    checkpoint: str | Path,
    out: str | Path,
    *,
    opset: int = 17,
    precision: str = "fp32",
    max_detections: int | None = None,
    image_size: str | None = None,
    max_batch: int = 4,
    scenes_dir: str | Path | None = None,
    parity_cases: int = 3,
    overwrite: bool = False,
    rpn_pre_nms_top_n: int | None = None,
    text_checkpoint: str | Path | None = None,
    text_int8: bool = False,
) -> dict[str, Any]:
    """Export a checkpoint to a bundle folder, with ``parity.json``.

    Args:
        checkpoint: Run folder or checkpoint file.
        out: Bundle folder to create.
        opset: ONNX opset (>= 16).
        precision: ``"fp32"`` or ``"fp16"`` (see :mod:`personsearch_export.precision`).
        max_detections: Fixed top-K.
        image_size: ``H,W`` or ``h,w/h,w/h,w`` fed-size profile.
        max_batch: Largest detector batch.
        scenes_dir: Images for the parity check (default: generate the tiny synthetic set).
        parity_cases: Random-size parity cases besides the opt-size one.
        overwrite: Replace the bundle at ``out``; only a folder holding a bundle and
            nothing but what the exporter writes is replaced (an empty folder needs no
            ``overwrite``).
        rpn_pre_nms_top_n: Anchors the RPN keeps before NMS (see :func:`export_graphs`);
            the parity reference runs with the same count.
        text_checkpoint: Run folder or checkpoint file of a text-to-image model (a run of
            ``method: irra`` or ``cfam``); adds ``text_encoder.onnx``,
            ``crop_encoder.onnx`` and ``tokenizer.json``, and their parity rows.
        text_int8: Also write ``text_encoder.int8.onnx``, the text encoder's int8 CPU
            variant (:func:`personsearch_export.text_graphs.write_int8_text_encoder`),
            checked against PyTorch in its own parity row.

    Returns:
        The parity report; its ``rpn_pre_nms_top_n`` says which count the graphs use.
        With a text checkpoint it also holds the text graphs' rows,
        ``compared_sentences``, ``compared_crops`` and ``text``
        (:func:`personsearch_export.text_parity.run_text_parity`).

    Raises:
        ExportError: Bad options, an ``out`` that may not be written (a file, a non-empty
            folder without ``overwrite``, a folder that is not a bundle or holds files the
            exporter did not write), or a checkpoint that cannot be exported (the message
            says which and why), including a text checkpoint that is not a dual encoder.
    """
    out = Path(out)
    if out.name in ("", ".", ".."):
        # "." or "..": the bundle folder needs a name of its own for its hidden siblings.
        out = Path(os.path.abspath(out))
    check_opset(opset)
    if precision not in PRECISIONS:
        raise ExportError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")
    profile = parse_image_size(image_size) if image_size else None
    if rpn_pre_nms_top_n is not None and rpn_pre_nms_top_n < 1:
        raise ExportError(f"--rpn-pre-nms-top-n must be >= 1, got {rpn_pre_nms_top_n}")
    _check_sizes(max_detections, max_batch)
    _check_parity_cases(parity_cases)
    if text_int8 and text_checkpoint is None:
        raise ExportError("--text-int8 quantises the text encoder: it needs --text-checkpoint")
    check_output_folder(out, overwrite=overwrite)
    loaded = load_checkpoint(checkpoint)
    text = load_text_checkpoint(text_checkpoint) if text_checkpoint is not None else None
    tmp = new_bundle_folder(out)
    try:
        export_graphs(
            loaded,
            tmp,
            opset=opset,
            precision=precision,
            max_detections=max_detections,
            profile=profile,
            max_batch=max_batch,
            rpn_pre_nms_top_n=rpn_pre_nms_top_n,
            text=text,
            text_int8=text_int8,
        )
        family = get_export_family(loaded.method.export_description().family)
        report = family.parity(
            tmp, loaded.model, scenes=load_scene_images(scenes_dir), random_cases=parity_cases
        )
        if text is not None:
            report = merge_text_parity(report, run_text_parity(tmp, text.model, random_cases=parity_cases))
        write_json_atomic(tmp / PARITY_FILE, report)
        install_bundle(tmp, out, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _check_text_verification(
    root: Path, manifest: Manifest, text_checkpoint: str | Path | None
) -> LoadedCheckpoint | None:
    """The text checkpoint to verify a bundle's text graphs with, or None when it has none.

    Raises:
        ExportError: Text graphs without a text checkpoint, a text checkpoint for a bundle
            without text graphs, a checkpoint that is not a dual encoder, or one other
            than the bundle's.
    """
    if manifest.text is None:
        if text_checkpoint is not None:
            raise ExportError(
                f"{root} has no text graphs, so there is nothing to verify --text-checkpoint "
                f"{text_checkpoint} against; drop the option (or re-export with it to add them)"
            )
        return None
    if text_checkpoint is None:
        raise ExportError(
            f"{root} has text graphs (text_encoder, crop_encoder, exported from a checkpoint of method "
            f"{manifest.text.method!r} with weights {manifest.text.checkpoint_sha256[:12]}...); pass "
            "--text-checkpoint with that text checkpoint, so they are verified as well"
        )
    text = load_text_checkpoint(text_checkpoint)
    if text.weights_sha256 != manifest.text.checkpoint_sha256:
        raise ExportError(
            f"--text-checkpoint {text.weights_path} is not the text checkpoint {root} was exported with "
            f"(weights hash {text.weights_sha256[:12]}..., bundle records "
            f"{manifest.text.checkpoint_sha256[:12]}...); pass that one"
        )
    return text


def verify_bundle(
    bundle: str | Path,
    checkpoint: str | Path,
    *,
    scenes_dir: str | Path | None = None,
    parity_cases: int = 3,
    text_checkpoint: str | Path | None = None,
) -> dict[str, Any]:
    """Re-run the parity check of an existing bundle and rewrite its ``parity.json``.

    Args:
        bundle: The bundle folder.
        checkpoint: The run folder or checkpoint file it was exported from.
        scenes_dir: Images for the check (default: generate the tiny synthetic set).
        parity_cases: Random-size parity cases besides the opt-size one (>= 0).
        text_checkpoint: The text checkpoint the bundle's text graphs were exported
            with; required exactly when the bundle has them.

    Returns:
        The parity report (also written to ``BUNDLE/parity.json``), with the text rows
        when the bundle has text graphs.

    Raises:
        ExportError: A bad ``parity_cases``, a checkpoint other than the one the bundle
            was exported from, text graphs without ``text_checkpoint`` (or the reverse),
            or a text checkpoint other than the bundle's. Text checks come first, as
            they need no detector checkpoint.
        BundleError: A path that is not a bundle folder, a missing or invalid manifest or
            graph file, or a corrupted graph.
    """
    _check_parity_cases(parity_cases)
    loaded_bundle = open_bundle(bundle)
    text = _check_text_verification(loaded_bundle.root, loaded_bundle.manifest, text_checkpoint)
    loaded = load_checkpoint(checkpoint)
    if loaded.weights_sha256 != loaded_bundle.model_hash:
        raise ExportError(
            f"{loaded.weights_path} is not the checkpoint {bundle} was exported from "
            f"(weights hash {loaded.weights_sha256[:12]}..., "
            f"bundle records {loaded_bundle.model_hash[:12]}...)"
        )
    family = get_export_family(loaded.method.export_description().family)
    report = family.parity(
        loaded_bundle.root, loaded.model, scenes=load_scene_images(scenes_dir), random_cases=parity_cases
    )
    if text is not None:
        text_report = run_text_parity(loaded_bundle.root, text.model, random_cases=parity_cases)
        report = merge_text_parity(report, text_report)
    write_json_atomic(loaded_bundle.root / PARITY_FILE, report)
    return report


def format_parity(report: dict[str, Any]) -> str:
    """One line per checked output: worst seen vs tolerance.

    Informational rows (the fp16 variants of an fp32 bundle's text graphs) end in
    ``ok (info)`` or ``over (info)``: they say whether an fp16 export would pass and do
    not count towards ``PASSED``.
    """
    lines = [
        f"parity ({report['precision']}, {report['backend']}): {'PASSED' if report['passed'] else 'FAILED'}"
    ]
    width = max([32, *(len(name) for name in report["outputs"])])
    for name, row in report["outputs"].items():
        if row.get("informational"):
            status = "ok (info)" if row["passed"] else "over (info)"
        else:
            status = "ok" if row["passed"] else "FAIL"
        lines.append(
            f"  {name:<{width}} worst {row['worst']:<12.6g} tolerance {row['tolerance']:<10g} {status}"
        )
    lines.append(
        f"  compared {report['compared_detections']} detections, {report['compared_queries']} query boxes"
    )
    if "compared_sentences" in report:
        lines.append(
            f"  compared {report['compared_sentences']} sentences (every token length, alone and in "
            f"padded batches), {report['compared_crops']} crops"
        )
    pre_nms = report.get("rpn_pre_nms_top_n")
    if pre_nms and pre_nms.get("graphs") is not None:
        lines.append(
            f"  RPN pre-NMS top-N {pre_nms['graphs']} in the graphs (model: {pre_nms['model']}), "
            f"reference run with {pre_nms['reference']}"
        )
    return "\n".join(lines)


def parity_summary_json(report: dict[str, Any]) -> str:
    """The report as indented JSON text."""
    return json.dumps(report, indent=2)
