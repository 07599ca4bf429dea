"""``personsearch build-engine``: one TensorRT engine (+ sidecar) per graph of a bundle."""

from __future__ import annotations

import argparse
from pathlib import Path

from personsearch_export.errors import ExportError


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
    parser.add_argument("--models", nargs="+", metavar="ROLE", help="default: the split graphs when present")
    parser.add_argument(
        "--timing-cache", metavar="DIR", help="timing-cache folder (default ~/.cache/personsearch/trt)"
    )
    parser.add_argument("--workspace-mb", type=int, default=4096)
    parser.add_argument("--version-compatible", action="store_true", help="build version-compatible plans")


def run(args: argparse.Namespace) -> int:
    """Build the engines; print one line per engine."""
    from personsearch_runtime.bundle import SPLIT_ROLES, Bundle

    from personsearch_export.engine_build import build_engine, current_gpu, model_profile, timing_cache_path

    bundle = Bundle.load(args.bundle)
    manifest = bundle.manifest
    if args.precision and args.precision != manifest.precision:
        raise ExportError(
            f"the bundle is {manifest.precision}; TensorRT takes precision from the graph (strong typing), "
            f"so export a {args.precision} bundle ('personsearch export --precision {args.precision}')"
        )
    roles = args.models or (list(SPLIT_ROLES) if manifest.has_split else list(manifest.models))
    try:
        import tensorrt as trt
    except ImportError:
        raise ExportError('TensorRT is not installed; pip install "personsearch[tensorrt]"') from None
    gpu = current_gpu()
    cache_dir = (
        Path(args.timing_cache) if args.timing_cache else Path.home() / ".cache" / "personsearch" / "trt"
    )
    cache = timing_cache_path(cache_dir, gpu, trt.__version__)
    out = Path(args.out) if args.out else bundle.root / "engines"
    for role in roles:
        spec = manifest.models.get(role)
        if spec is None:
            bundle.model_path(role)  # raises BundleError naming the present roles
        sidecar = build_engine(
            trt,
            role=role,
            onnx_path=bundle.model_path(role),
            engine_path=out / f"{role}.plan",
            profile=model_profile(spec),
            gpu=gpu,
            precision=manifest.precision,
            workspace_mb=args.workspace_mb,
            timing_cache=cache,
            version_compatible=args.version_compatible,
        )
        plan = out / f"{role}.plan"
        print(f"{plan}: TensorRT {sidecar.tensorrt_version}, sm {sidecar.compute_capability}")
    return 0
