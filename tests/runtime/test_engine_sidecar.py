from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from personsearch_runtime.backends.engine_sidecar import (
    EngineSidecar,
    ProfileRange,
    build_engine_command,
    check_plan_bytes,
    check_sidecar,
    choose_profile,
    sidecar_path,
)
from personsearch_runtime.errors import EngineError


def _sidecar(**changes: object) -> EngineSidecar:
    obj = {
        "schema_version": 2,
        "role": "detector",
        "engine_file": "detector.plan",
        "engine_sha256": "e" * 64,
        "onnx_sha256": "a" * 64,
        "tensorrt_version": "10.16.1",
        "compute_capability": "9.0",
        "device_name": "NVIDIA H100 80GB HBM3",
        "precision": "fp32",
        "version_compatible": False,
        "tf32": False,
        "hardware_compatibility": "none",
        "profiles": [
            {"images": {"min": [1, 3, 320, 320], "opt": [1, 3, 800, 1088], "max": [1, 3, 1344, 1344]}},
            {"images": {"min": [1, 3, 320, 320], "opt": [4, 3, 800, 1088], "max": [8, 3, 1344, 1344]}},
            {"images": {"min": [2, 3, 320, 320], "opt": [2, 3, 800, 1088], "max": [4, 3, 1344, 1344]}},
        ],
        "built_at": "2026-01-01T00:00:00Z",
    }
    obj.update(changes)
    return EngineSidecar.from_json(obj)


def test_round_trip_and_path(tmp_path: Path) -> None:
    sc = _sidecar()
    assert EngineSidecar.from_json(json.loads(json.dumps(sc.to_json()))) == sc
    assert sidecar_path(tmp_path / "detector.plan") == tmp_path / "detector.plan.json"
    (tmp_path / "detector.plan.json").write_text(json.dumps(sc.to_json()))
    assert EngineSidecar.load(tmp_path / "detector.plan.json") == sc
    with pytest.raises(EngineError, match="missing"):
        EngineSidecar.load(tmp_path / "other.plan.json")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"schema_version": 3}, "schema_version"),
        ({"tf32": "no"}, "'tf32' must be true or false"),
        ({"hardware_compatibility": "any"}, "hardware_compatibility"),
        ({"compute_capability": "nine"}, "compute_capability"),
        ({"profiles": []}, "profiles"),
        ({"profiles": [{"images": {"min": [2], "opt": [1], "max": [4]}}]}, "min <= opt <= max"),
        ({"extra": 1}, "unknown key"),
    ],
)
def test_invalid_sidecars(changes: dict, message: str) -> None:
    with pytest.raises(EngineError, match=message):
        _sidecar(**changes)


def test_schema_1_sidecar_is_refused_with_rebuild_not_a_missing_key() -> None:
    # A schema-1 sidecar lacks "tf32"; the user must hear "rebuild", not "missing key".
    old = _sidecar().to_json()
    old["schema_version"] = 1
    del old["tf32"]
    with pytest.raises(EngineError, match=r"schema_version 1, this runtime reads 2; rebuild"):
        EngineSidecar.from_json(old)


def test_plan_hash_is_checked_against_the_sidecar(tmp_path: Path) -> None:
    plan = b"the plan that was built"
    engine = tmp_path / "detector.plan"
    good = _sidecar(engine_sha256=hashlib.sha256(plan).hexdigest())
    check_plan_bytes(good, plan, engine)  # the plan the sidecar was written with
    with pytest.raises(EngineError, match="is not the plan its sidecar") as info:
        check_plan_bytes(good, b"a plan copied over it later", engine)
    assert "rebuild the engine with 'personsearch build-engine BUNDLE --roles detector" in str(info.value)


def test_build_engine_command_names_the_bundle_when_it_can(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "engines").mkdir(parents=True)
    (bundle / "manifest.json").write_text("{}")
    assert build_engine_command(bundle / "engines" / "query_encoder.plan") == (
        f"personsearch build-engine {bundle} --roles query_encoder"
    )
    # Engines elsewhere: the folder becomes --out and the bundle is left to the user.
    elsewhere = tmp_path / "plans" / "box_head.plan"
    assert build_engine_command(elsewhere) == (
        f"personsearch build-engine BUNDLE --roles box_head --out {tmp_path / 'plans'}"
    )
    # An "engines" folder without a manifest next to it is not taken for a bundle's.
    assert build_engine_command(tmp_path / "engines" / "detector.plan").startswith(
        "personsearch build-engine BUNDLE --roles detector --out"
    )


def test_check_sidecar_rules() -> None:
    here = {"tensorrt_version": "10.16.1", "compute_capability": (9, 0), "onnx_sha256": "a" * 64}
    check_sidecar(_sidecar(), **here)
    with pytest.raises(EngineError, match="different detector.onnx"):
        check_sidecar(_sidecar(), **{**here, "onnx_sha256": "b" * 64})
    with pytest.raises(EngineError, match="built with TensorRT 10.16.1"):
        check_sidecar(_sidecar(), **{**here, "tensorrt_version": "10.16.2"})
    with pytest.raises(EngineError, match="compute capability 9.0"):
        check_sidecar(_sidecar(), **{**here, "compute_capability": (8, 0)})
    # Version-compatible plans: newer same major, or 10 -> 11; never older or 11 -> 12.
    vc = _sidecar(version_compatible=True)
    check_sidecar(vc, **{**here, "tensorrt_version": "10.18.0"})
    check_sidecar(vc, **{**here, "tensorrt_version": "11.2.0"})
    with pytest.raises(EngineError, match="version-compatible"):
        check_sidecar(vc, **{**here, "tensorrt_version": "10.9.0"})
    with pytest.raises(EngineError, match="version-compatible"):
        check_sidecar(
            _sidecar(version_compatible=True, tensorrt_version="11.1.0"),
            **{**here, "tensorrt_version": "12.0.0"},
        )
    amp = _sidecar(hardware_compatibility="ampere_plus", compute_capability="8.0")
    check_sidecar(amp, **here)
    with pytest.raises(EngineError, match="Ampere"):
        check_sidecar(amp, **{**here, "compute_capability": (7, 5)})


def test_choose_profile_by_batch() -> None:
    profiles = _sidecar().profiles
    assert choose_profile(profiles, {"images": (1, 3, 800, 800)}) == 0
    assert choose_profile(profiles, {"images": (3, 3, 800, 800)}) == 2  # max batch 4 beats 8
    assert choose_profile(profiles, {"images": (6, 3, 800, 800)}) == 1
    with pytest.raises(EngineError, match="outside every optimization profile"):
        choose_profile(profiles, {"images": (9, 3, 800, 800)})
    with pytest.raises(EngineError, match="outside"):
        choose_profile(profiles, {"images": (1, 3, 2000, 800)})
    assert ProfileRange("x", (1, 2), (1, 2), (4, 2)).contains((3, 2))


@pytest.mark.needs_trt
def test_tensorrt_backend_refuses_mismatched_sidecar_before_deserialising(tmp_path: Path) -> None:
    # Needs TensorRT only: the version check runs before any CUDA call.
    from personsearch_runtime.backends.tensorrt_engine import TensorRTBackend

    engine = tmp_path / "detector.plan"
    plan = b"not a plan; must never reach the deserialiser"
    engine.write_bytes(plan)
    sidecar = _sidecar(tensorrt_version="1.0.0", engine_sha256=hashlib.sha256(plan).hexdigest())
    (tmp_path / "detector.plan.json").write_text(json.dumps(sidecar.to_json()))
    with pytest.raises(EngineError, match="TensorRT 1.0.0"):
        TensorRTBackend(model_path=engine, onnx_sha256="a" * 64)
