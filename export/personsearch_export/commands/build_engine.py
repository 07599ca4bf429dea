"""``personsearch build-engine``: one TensorRT engine (+ sidecar) per graph of a bundle.

By default it builds every engine the runtime's ``--backend trt`` can load: ``detector``
(the one-graph pipeline), the split graphs ``backbone_rpn``, ``box_head`` and
``reid_head`` when the bundle has them (the split pipeline, which ``auto`` picks on a GPU
with CuPy), and ``query_encoder`` (the box embeddings of ``query``). ``index``, ``query``
and ``bench`` all construct the detector of the pipeline in use, so with the defaults
every command and pipeline finds its engines. A bundle with sentence search also gets
``text_encoder`` and ``crop_encoder`` engines, their profiles from the manifest like the
others' (token length ``L`` from 2 to the tokenizer's ``max_length``). ``--roles``
builds a subset.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from personsearch_export.errors import ExportError

if TYPE_CHECKING:
    from personsearch_runtime.bundle import Manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's options."""
    parser.add_argument("bundle", metavar="BUNDLE", help="bundle directory")
    parser.add_argument("--out", metavar="DIR", help="engine folder (default BUNDLE/engines)")
    parser.add_argument(
        "--precision",
        choices=["fp32", "fp16", "bf16"],
        help="must match the bundle: precision is decided by the graph (strong typing); "
        "export with --precision fp16 for an fp16 engine",
    )
    parser.add_argument(
        "--roles",
        "--models",
        dest="roles",
        nargs="+",
        metavar="ROLE",
        help="build only these bundle roles (default: detector, query_encoder and, when present, "
        "backbone_rpn, box_head, reid_head, text_encoder, crop_encoder)",
    )
    parser.add_argument(
        "--timing-cache", metavar="DIR", help="timing-cache folder (default ~/.cache/personsearch/trt)"
    )
    parser.add_argument("--workspace-mb", type=int, default=4096)
    parser.add_argument("--version-compatible", action="store_true", help="build version-compatible plans")
    parser.add_argument(
        "--tf32",
        action="store_true",
        help="let TensorRT run fp32 convolutions and matrix products in TF32 (faster on Ampere and "
        "newer, ~3 significant digits); off by default so fp32 engines compute in fp32",
    )


def default_roles(manifest: Manifest) -> list[str]:
    """Return the roles whose engines the runtime's TensorRT backend can load, in build order.

    Args:
        manifest: The bundle manifest.

    Returns:
        ``detector`` and ``query_encoder`` (every bundle has both), then the split graphs
        and the text graphs (``text_encoder``, ``crop_encoder``) when the bundle has them.
    """
    from personsearch_runtime.bundle import REQUIRED_ROLES, SPLIT_ROLES, TEXT_ROLES

    roles = [r for r in REQUIRED_ROLES if r in manifest.models]
    if manifest.has_split:
        roles += list(SPLIT_ROLES)
    if manifest.has_text:
        roles += list(TEXT_ROLES)
    return roles


def run(args: argparse.Namespace) -> int:
    """Build the engines; print one line per engine."""
    from personsearch_export.bundle_folder import ENGINE_DIR, open_bundle
    from personsearch_export.engine_build import build_engine, current_gpu, model_profile, timing_cache_path

    if args.workspace_mb < 1:
        raise ExportError(f"--workspace-mb must be >= 1, got {args.workspace_mb}")
    bundle = open_bundle(args.bundle)
    manifest = bundle.manifest
    if args.precision and args.precision != manifest.precision:
        raise ExportError(
            f"the bundle is {manifest.precision}; TensorRT takes precision from the graph (strong typing), "
            f"so export a {args.precision} bundle ('personsearch export --precision {args.precision}')"
        )
    roles = list(dict.fromkeys(args.roles)) if args.roles else default_roles(manifest)
    for role in roles:
        if role not in manifest.models:
            bundle.model_path(role)  # raises BundleError naming the present roles
    out = Path(args.out) if args.out else bundle.root / ENGINE_DIR
    # Checked before TensorRT is even imported: a wrong path should not cost a build.
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file; give a folder for the engines")
    if args.timing_cache and Path(args.timing_cache).exists() and not Path(args.timing_cache).is_dir():
        raise ExportError(f"--timing-cache {args.timing_cache} is a file; give a folder")
    try:
        import tensorrt as trt
    except ImportError:
        raise ExportError('TensorRT is not installed; pip install "personsearch[tensorrt]"') from None
    gpu = current_gpu()
    cache_dir = (
        Path(args.timing_cache) if args.timing_cache else Path.home() / ".cache" / "personsearch" / "trt"
    )
    cache = timing_cache_path(cache_dir, gpu, trt.__version__)
    for role in roles:
        plan = out / f"{role}.plan"
        sidecar = build_engine(
            trt,
            role=role,
            onnx_path=bundle.model_path(role),
            engine_path=plan,
            profile=model_profile(manifest.models[role]),
            gpu=gpu,
            precision=manifest.precision,
            workspace_mb=args.workspace_mb,
            timing_cache=cache,
            version_compatible=args.version_compatible,
            tf32=args.tf32,
        )
        tf32 = "TF32 allowed" if sidecar.tf32 else "no TF32"
        print(f"{plan}: TensorRT {sidecar.tensorrt_version}, sm {sidecar.compute_capability}, {tf32}")
    return 0
