"""The JSON sidecar written next to every TensorRT engine, and the checks made before loading it.

TensorRT plans only run on the TensorRT version and GPU architecture that built them
(unless built version- or hardware-compatible), and deserialising a mismatched plan fails
deep inside TensorRT with a version-tag assertion. So every engine ``X.plan`` has a
sidecar ``X.plan.json`` (this schema; the exporter's ``build-engine`` writes it), and the
runtime compares it with the machine *before* deserialising. The sidecar only speaks
for the plan it was written with, so the plan's SHA-256 is checked against it first: a
plan replaced after the build (with the old sidecar left in place) is refused. Nothing
here imports TensorRT.

Sidecar JSON (schema 2 added ``tf32``; schema-1 sidecars are refused with "rebuild")::

    {"schema_version": 2, "role": "detector", "engine_file": "detector.plan",
     "engine_sha256": "...", "onnx_sha256": "...", "tensorrt_version": "10.16.1",
     "compute_capability": "9.0", "device_name": "NVIDIA H100 80GB HBM3",
     "precision": "fp32", "version_compatible": false, "tf32": false,
     "hardware_compatibility": "none",
     "profiles": [{"images": {"min": [1,3,320,320], "opt": [4,3,800,1088], "max": [8,3,1344,1344]}}],
     "built_at": "2026-01-01T00:00:00Z"}
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personsearch_runtime.bundle import MANIFEST_NAME
from personsearch_runtime.errors import EngineError

__all__ = [
    "SIDECAR_SCHEMA_VERSION",
    "EngineSidecar",
    "ProfileRange",
    "build_engine_command",
    "check_plan_bytes",
    "check_sidecar",
    "check_sidecar_device",
    "check_sidecar_software",
    "choose_profile",
    "sidecar_path",
]

SIDECAR_SCHEMA_VERSION = 2
HARDWARE_LEVELS = ("none", "ampere_plus", "same_compute_capability")


def sidecar_path(engine_path: str | os.PathLike[str]) -> Path:
    """Return the sidecar file of an engine: ``X.plan`` -> ``X.plan.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def build_engine_command(engine_path: str | os.PathLike[str], role: str | None = None) -> str:
    """Return the ``personsearch build-engine`` command line that (re)builds one engine.

    The runtime looks for ``ROLE.plan`` in ``BUNDLE/engines`` unless told otherwise, so an
    engine folder named ``engines`` next to a bundle manifest gives the bundle's path and
    the default ``--out``; any other folder is passed as ``--out`` with ``BUNDLE`` left for
    the user to fill in.

    Args:
        engine_path: The plan file (``DIR/ROLE.plan``).
        role: The bundle role; by default the plan's file stem.

    Returns:
        A command line, e.g. ``personsearch build-engine bundles/r50 --roles query_encoder``.
    """
    engine_path = Path(engine_path)
    role = role or engine_path.stem
    engine_dir = engine_path.parent
    bundle_root = engine_dir.parent
    if engine_dir.name == "engines" and (bundle_root / MANIFEST_NAME).is_file():
        return f"personsearch build-engine {bundle_root} --roles {role}"
    return f"personsearch build-engine BUNDLE --roles {role} --out {engine_dir}"


@dataclass(frozen=True)
class ProfileRange:
    """One input's shape range in an optimization profile.

    Attributes:
        name: Input tensor name.
        min: Smallest shape.
        opt: Shape TensorRT tuned for.
        max: Largest shape.
    """

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def contains(self, shape: Sequence[int]) -> bool:
        """Return True when ``shape`` lies within [min, max] in every dimension."""
        return len(shape) == len(self.min) and all(
            lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max, strict=True)
        )


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


@dataclass(frozen=True)
class EngineSidecar:
    """What an engine was built for.

    Attributes:
        role: Bundle model role the engine implements (e.g. ``"detector"``).
        engine_file: Engine file name (next to the sidecar).
        engine_sha256: SHA-256 of the engine file.
        onnx_sha256: SHA-256 of the ONNX file it was built from (the bundle's ``models.ROLE.sha256``).
        tensorrt_version: ``tensorrt.__version__`` at build time.
        compute_capability: ``"MAJOR.MINOR"`` of the build GPU.
        device_name: Build GPU's name (informational).
        precision: Bundle precision of the graph.
        version_compatible: Built with ``BuilderFlag.VERSION_COMPATIBLE``.
        tf32: TensorRT was allowed to run fp32 convolutions and matrix products in TF32
            (``BuilderFlag.TF32`` left set; ``build-engine --tf32``).
        hardware_compatibility: ``"none"``, ``"ampere_plus"`` or ``"same_compute_capability"``.
        profiles: One entry per optimization profile, in profile-index order; each maps
            every dynamic input to its range.
        built_at: ISO-8601 UTC build time.
    """

    role: str
    engine_file: str
    engine_sha256: str
    onnx_sha256: str
    tensorrt_version: str
    compute_capability: str
    device_name: str
    precision: str
    version_compatible: bool
    tf32: bool
    hardware_compatibility: str
    profiles: tuple[tuple[ProfileRange, ...], ...]
    built_at: str
    schema_version: int = SIDECAR_SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        """Return the JSON object."""
        return {
            "schema_version": self.schema_version,
            "role": self.role,
            "engine_file": self.engine_file,
            "engine_sha256": self.engine_sha256,
            "onnx_sha256": self.onnx_sha256,
            "tensorrt_version": self.tensorrt_version,
            "compute_capability": self.compute_capability,
            "device_name": self.device_name,
            "precision": self.precision,
            "version_compatible": self.version_compatible,
            "tf32": self.tf32,
            "hardware_compatibility": self.hardware_compatibility,
            "profiles": [
                {r.name: {"min": list(r.min), "opt": list(r.opt), "max": list(r.max)} for r in profile}
                for profile in self.profiles
            ],
            "built_at": self.built_at,
        }

    @classmethod
    def from_json(cls, obj: Any, source: str = "sidecar") -> EngineSidecar:
        """Parse and validate a sidecar object.

        Raises:
            EngineError: Naming the bad field.
        """
        if not isinstance(obj, Mapping):
            raise EngineError(f"{source}: expected a JSON object")
        # The version decides which keys are valid, so it is checked before the keys.
        if obj.get("schema_version") != SIDECAR_SCHEMA_VERSION:
            raise EngineError(
                f"{source}: schema_version {obj.get('schema_version')!r}, this runtime reads "
                f"{SIDECAR_SCHEMA_VERSION}; "
                "rebuild the engine with 'personsearch build-engine'"
            )
        fields = (
            "schema_version",
            "role",
            "engine_file",
            "engine_sha256",
            "onnx_sha256",
            "tensorrt_version",
            "compute_capability",
            "device_name",
            "precision",
            "version_compatible",
            "tf32",
            "hardware_compatibility",
            "profiles",
            "built_at",
        )
        unknown = sorted(set(obj) - set(fields))
        if unknown:
            raise EngineError(f"{source}: unknown key {unknown[0]!r}")
        missing = [f for f in fields if f not in obj]
        if missing:
            raise EngineError(f"{source}: missing key {missing[0]!r}")
        not_text = ("schema_version", "version_compatible", "tf32", "profiles")
        for key in (f for f in fields if f not in not_text):
            if not isinstance(obj[key], str):
                raise EngineError(f"{source}: '{key}' must be a string")
        for key in ("version_compatible", "tf32"):
            if not isinstance(obj[key], bool):
                raise EngineError(f"{source}: '{key}' must be true or false")
        if obj["hardware_compatibility"] not in HARDWARE_LEVELS:
            raise EngineError(
                f"{source}: 'hardware_compatibility' must be one of {', '.join(HARDWARE_LEVELS)}"
            )
        if (
            not _version_tuple(obj["compute_capability"])
            or len(_version_tuple(obj["compute_capability"])) != 2
        ):
            raise EngineError(f"{source}: 'compute_capability' must look like '9.0'")
        profiles_obj = obj["profiles"]
        if not isinstance(profiles_obj, list) or not profiles_obj:
            raise EngineError(f"{source}: 'profiles' must be a non-empty list")
        profiles = []
        for i, profile in enumerate(profiles_obj):
            if not isinstance(profile, Mapping):
                raise EngineError(f"{source}: profiles[{i}] must be an object of input ranges")
            ranges = []
            for name, rng in profile.items():
                where = f"{source}: profiles[{i}].{name}"
                if not isinstance(rng, Mapping) or set(rng) != {"min", "opt", "max"}:
                    raise EngineError(f"{where} must have exactly min, opt and max")
                shapes = []
                for key in ("min", "opt", "max"):
                    value = rng[key]
                    if not isinstance(value, list) or not all(isinstance(v, int) and v >= 0 for v in value):
                        raise EngineError(f"{where}.{key} must be a list of sizes")
                    shapes.append(tuple(value))
                if not len(shapes[0]) == len(shapes[1]) == len(shapes[2]) or not all(
                    a <= b <= c for a, b, c in zip(*shapes, strict=True)
                ):
                    raise EngineError(f"{where}: needs min <= opt <= max in every dimension")
                ranges.append(ProfileRange(name, shapes[0], shapes[1], shapes[2]))
            profiles.append(tuple(ranges))
        return cls(
            role=obj["role"],
            engine_file=obj["engine_file"],
            engine_sha256=obj["engine_sha256"],
            onnx_sha256=obj["onnx_sha256"],
            tensorrt_version=obj["tensorrt_version"],
            compute_capability=obj["compute_capability"],
            device_name=obj["device_name"],
            precision=obj["precision"],
            version_compatible=obj["version_compatible"],
            tf32=obj["tf32"],
            hardware_compatibility=obj["hardware_compatibility"],
            profiles=tuple(profiles),
            built_at=obj["built_at"],
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EngineSidecar:
        """Read a sidecar file.

        Raises:
            EngineError: Missing, unreadable or invalid file.
        """
        path = Path(path)
        if not path.is_file():
            raise EngineError(
                f"engine sidecar {path} is missing; an engine without one cannot be checked "
                "against this machine. "
                "Rebuild it with 'personsearch build-engine'"
            )
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise EngineError(f"cannot read engine sidecar {path}: {exc}") from None
        return cls.from_json(obj, str(path))


def check_plan_bytes(sidecar: EngineSidecar, plan: bytes, engine_path: str | os.PathLike[str]) -> None:
    """Refuse a plan that is not the one its sidecar describes.

    Everything else the sidecar says (TensorRT version, GPU, ONNX hash, profiles) is only
    true of the plan that was written with it, so this runs before the other checks. The
    caller hashes the very bytes it will deserialise, so the plan cannot change in between.

    Args:
        sidecar: The engine's sidecar.
        plan: The plan file's contents.
        engine_path: The plan file (for the message).

    Raises:
        EngineError: The plan's SHA-256 differs from the sidecar's ``engine_sha256``.
    """
    digest = hashlib.sha256(plan).hexdigest()
    if digest != sidecar.engine_sha256:
        raise EngineError(
            f"engine {engine_path} is not the plan its sidecar {sidecar_path(engine_path)} describes "
            f"(SHA-256 {digest[:12]}, sidecar records {sidecar.engine_sha256[:12]}): the plan was "
            "replaced or the sidecar is stale, so neither can be trusted; rebuild the engine with "
            f"'{build_engine_command(engine_path, sidecar.role)}'"
        )


def check_sidecar_software(sidecar: EngineSidecar, *, tensorrt_version: str, onnx_sha256: str | None) -> None:
    """The checks that need no GPU: the ONNX hash and the TensorRT version.

    Rules: the ONNX hash must equal the bundle's (the engine belongs to this model); a
    normal plan needs the exact TensorRT version (major.minor.patch) that built it, a
    version-compatible plan runs on the same major at an equal or newer version, or on
    the next major when built with 10 (TensorRT supports 10 -> 11 only).

    Args:
        sidecar: The engine's sidecar.
        tensorrt_version: ``tensorrt.__version__`` here.
        onnx_sha256: The bundle's hash of the model's ONNX file (None skips the check).

    Raises:
        EngineError: Saying what differs and what to do (rebuild on this machine).
    """
    rebuild = "rebuild it here with 'personsearch build-engine BUNDLE'"
    if onnx_sha256 is not None and sidecar.onnx_sha256 != onnx_sha256:
        raise EngineError(
            f"engine {sidecar.engine_file} was built from a different {sidecar.role}.onnx than this bundle's "
            f"(hash {sidecar.onnx_sha256[:12]} vs {onnx_sha256[:12]}); {rebuild}"
        )
    built, here = _version_tuple(sidecar.tensorrt_version), _version_tuple(tensorrt_version)
    if sidecar.version_compatible:
        same_major_ok = here[:1] == built[:1] and here >= built
        next_major_ok = built[:1] == (10,) and here[:1] == (11,)
        if not (same_major_ok or next_major_ok):
            raise EngineError(
                f"engine {sidecar.engine_file} is version-compatible from TensorRT "
                f"{sidecar.tensorrt_version}, "
                f"which TensorRT {tensorrt_version} cannot load; {rebuild}"
            )
    elif built[:3] != here[:3]:
        raise EngineError(
            f"engine {sidecar.engine_file} was built with TensorRT {sidecar.tensorrt_version}, "
            "this machine has "
            f"{tensorrt_version}; plans only load on the version that built them - {rebuild}"
        )


def check_sidecar_device(sidecar: EngineSidecar, *, compute_capability: tuple[int, int]) -> None:
    """The GPU check: equal compute capability, or 8.0 and newer for ``ampere_plus`` plans.

    Args:
        sidecar: The engine's sidecar.
        compute_capability: (major, minor) of the GPU here.

    Raises:
        EngineError: Saying what differs and what to do (rebuild on this machine).
    """
    rebuild = "rebuild it here with 'personsearch build-engine BUNDLE'"
    built_cc = _version_tuple(sidecar.compute_capability)
    if sidecar.hardware_compatibility == "ampere_plus":
        if tuple(compute_capability) < (8, 0):
            raise EngineError(
                f"engine {sidecar.engine_file} needs an Ampere or newer GPU (compute capability >= 8.0), "
                f"this GPU is {compute_capability[0]}.{compute_capability[1]}"
            )
    elif tuple(built_cc) != tuple(compute_capability):
        raise EngineError(
            f"engine {sidecar.engine_file} was built for compute capability {sidecar.compute_capability} "
            f"({sidecar.device_name}), this GPU is {compute_capability[0]}.{compute_capability[1]}; {rebuild}"
        )


def check_sidecar(
    sidecar: EngineSidecar,
    *,
    tensorrt_version: str,
    compute_capability: tuple[int, int],
    onnx_sha256: str | None,
) -> None:
    """Refuse an engine that will not run here, before anything is deserialised.

    ``check_sidecar_software`` then ``check_sidecar_device``; the plan's own hash is
    ``check_plan_bytes``, which callers run first, on the bytes they deserialise.

    Args:
        sidecar: The engine's sidecar.
        tensorrt_version: ``tensorrt.__version__`` here.
        compute_capability: (major, minor) of the GPU here.
        onnx_sha256: The bundle's hash of the model's ONNX file (None skips the check).

    Raises:
        EngineError: Saying what differs and what to do (rebuild on this machine).
    """
    check_sidecar_software(sidecar, tensorrt_version=tensorrt_version, onnx_sha256=onnx_sha256)
    check_sidecar_device(sidecar, compute_capability=compute_capability)


def choose_profile(profiles: Sequence[Sequence[ProfileRange]], shapes: Mapping[str, Sequence[int]]) -> int:
    """Pick the optimization profile for one call.

    Among the profiles whose ranges contain every given input shape, the one with the
    smallest maximum batch (dimension 0) wins - its kernels were tuned closest to this
    batch size - and ties go to the lower index.

    Args:
        profiles: Profiles in index order (``EngineSidecar.profiles``).
        shapes: Input name -> concrete shape of this call.

    Returns:
        The profile index.

    Raises:
        EngineError: No profile covers the shapes (the message lists the ranges).
    """
    best: tuple[int, int] | None = None
    for index, profile in enumerate(profiles):
        ranges = {r.name: r for r in profile}
        if all(name not in ranges or ranges[name].contains(shape) for name, shape in shapes.items()):
            batch_cap = min((r.max[0] for r in profile if r.max), default=0)
            if best is None or batch_cap < best[0]:
                best = (batch_cap, index)
    if best is None:
        described = "; ".join(
            ", ".join(f"{r.name} {list(r.min)}..{list(r.max)}" for r in profile) for profile in profiles
        )
        given = ", ".join(f"{k} {list(v)}" for k, v in shapes.items())
        raise EngineError(
            f"input shapes ({given}) are outside every optimization profile of the engine ({described}); "
            "use a smaller batch or image size, or rebuild the engine with wider --image-size / batch ranges"
        )
    return best[1]
