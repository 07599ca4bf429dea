"""trtexec builds match build-engine's TF32 choice (off unless asked for)."""

from __future__ import annotations

import pytest
from personsearch_export.trtexec import trtexec_commands


@pytest.mark.parametrize("major", [10, 11])
def test_trtexec_builds_pass_no_tf32_unless_asked(major: int) -> None:
    common = {
        "role": "box_head",
        "onnx_path": "b/box_head.onnx",
        "profile": {"roi_features": ((1, 4, 7, 7), (8, 4, 7, 7), (64, 4, 7, 7))},
        "trt_major": major,
        "engine_path": "e/box_head.plan",
        "times_path": "t.json",
        "profile_path": "p.json",
    }
    default = trtexec_commands(**common)
    assert "--noTF32" in default.build
    assert "--noTF32" not in default.benchmark  # a build option; the benchmark loads the plan
    assert "--noTF32" not in trtexec_commands(**common, tf32=True).build
