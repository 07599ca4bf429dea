"""trtexec command lines (10.x vs 11.x flag sets) and the --exportTimes/--exportProfile parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from personsearch_export.errors import TrtexecReportError
from personsearch_export.trtexec import load_report, trtexec_commands, trtexec_percentile
from personsearch_runtime.cli import main

PROFILE = {"images": ((1, 3, 256, 256), (2, 3, 576, 768), (4, 3, 928, 1504))}


def _cmds(major, **kw):
    return trtexec_commands(
        role="detector",
        onnx_path="b/detector.onnx",
        profile=PROFILE,
        trt_major=major,
        engine_path="e/detector.plan",
        times_path="t.json",
        profile_path="p.json",
        timing_cache="cache/sm90.cache",
        **kw,
    )


def test_trt10_flags_state_the_benchmark_regime_and_strong_typing():
    c = _cmds(10)
    assert c.build[:2] == ("trtexec", "--onnx=b/detector.onnx")
    assert "--minShapes=images:1x3x256x256" in c.build
    assert "--optShapes=images:2x3x576x768" in c.build
    assert "--maxShapes=images:4x3x928x1504" in c.build
    assert "--stronglyTyped" in c.build
    assert "--memPoolSize=workspace:4096M" in c.build
    assert "--timingCacheFile=cache/sm90.cache" in c.build
    assert "--skipInference" in c.build
    for flag in ("--useCudaGraph", "--noDataTransfers", "--useSpinWait", "--separateProfileRun"):
        assert flag in c.benchmark
    assert "--shapes=images:2x3x576x768" in c.benchmark
    assert "--exportTimes=t.json" in c.benchmark and "--exportProfile=p.json" in c.benchmark
    assert c.batch == 2


def test_trt11_flags_omit_removed_and_noop_options():
    c = _cmds(11)
    everything = " ".join(c.build + c.benchmark)
    for flag in (
        "--fp16",
        "--int8",
        "--best",
        "--workspace=",
        "--stronglyTyped",
        "--useCudaGraph",
        "--noDataTransfers",
    ):
        assert flag not in everything
    assert "--includeDataTransfers" not in everything
    assert "--includeDataTransfers" in _cmds(11, include_transfers=True).benchmark
    assert "--noDataTransfers" not in _cmds(10, include_transfers=True).benchmark


def test_no_precision_flags_in_any_version():
    for major in (10, 11):
        c = _cmds(major, version_compatible=True)
        assert not any(a.startswith(("--fp16", "--bf16", "--int8", "--best")) for a in c.build + c.benchmark)
        assert "--versionCompatible" in c.build


def test_unknown_major_is_refused():
    with pytest.raises(ValueError, match="unknown TensorRT major"):
        _cmds(9)


def test_cli_writes_both_scripts_with_manifest_shapes(toy_bundle: Path, tmp_path):
    out = tmp_path / "scripts"
    assert main(["trtexec-cmd", str(toy_bundle), "--out", str(out)]) == 0
    s10 = (out / "trtexec_trt10.sh").read_text()
    s11 = (out / "trtexec_trt11.sh").read_text()
    # box_head R range from the toy manifest: 1 / 128 / 512; C=4, S=7.
    assert "--minShapes=roi_features:1x4x7x7" in s10 and "--maxShapes=roi_features:512x4x7x7" in s11
    assert "--stronglyTyped" in s10 and "--stronglyTyped" not in s11
    assert s10.count("--onnx=") == 5 and s11.count("--onnx=") == 5
    assert "personsearch trtexec-report" in s11


# --- report ---------------------------------------------------------------------------------------------


def _times_text(latencies, period=2.0):
    """exportTimes JSON in trtexec's own layout (``"key" : value`` records in an array)."""
    records = []
    for i, lat in enumerate(latencies):
        start = 100.0 + i * period
        compute = lat - 0.2
        records.append(
            "  { "
            + ", ".join(
                f'"{k}" : {v}'
                for k, v in (
                    ("startEnqMs", start),
                    ("endEnqMs", start + 0.05),
                    ("startH2dMs", start + 0.05),
                    ("endH2dMs", start + 0.15),
                    ("startComputeMs", start + 0.15),
                    ("endComputeMs", start + 0.15 + compute),
                    ("startD2hMs", start + 0.15 + compute),
                    ("endD2hMs", start + lat + 0.05),
                    ("h2dMs", 0.1),
                    ("computeMs", compute),
                    ("d2hMs", 0.1),
                    ("latencyMs", lat),
                )
            )
            + " }"
        )
    return "[\n" + ",\n".join(records) + "\n]\n"


PROFILE_TEXT = """[
  { "count" : 20 }
, { "name" : "conv1 + relu", "timeMs" : 4.0, "averageMs" : 0.2, "medianMs" : 0.19, "percentage" : 20.0 }
, { "name" : "res4 block", "timeMs" : 12.0, "averageMs" : 0.6, "medianMs" : 0.58, "percentage" : 60.0 }
, { "name" : "head", "timeMs" : 4.0, "averageMs" : 0.2, "medianMs" : 0.2, "percentage" : 20.0 }
]
"""


def test_percentile_matches_trtexec_definition():
    v = list(range(1, 11))  # 10 samples: p99 is the max, p90 index 10-1-floor(0.1*10)=8
    assert trtexec_percentile(v, 99) == 10
    assert trtexec_percentile(v, 90) == 9
    assert trtexec_percentile(v, 50) == 5


def test_report_statistics_hand_computed(tmp_path):
    latencies = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    times = tmp_path / "times.json"
    times.write_text(_times_text(latencies))
    prof = tmp_path / "profile.json"
    prof.write_text(PROFILE_TEXT)
    r = load_report(times, prof, batch=4)
    assert r.queries == 10
    assert r.latency.mean == pytest.approx(5.5)
    assert r.latency.median == pytest.approx(5.5)
    assert (r.latency.p90, r.latency.p95, r.latency.p99) == (9.0, 10.0, 10.0)
    assert r.gpu_compute.mean == pytest.approx(5.3)
    assert r.enqueue.mean == pytest.approx(0.05)
    # first enqueue at 100 ms, last query ends at 100 + 9*2 + 10 + 0.05 ms
    wall = (9 * 2.0 + 10.05) / 1000
    assert r.walltime_s == pytest.approx(wall)
    assert r.throughput_qps == pytest.approx(10 / wall)
    assert r.images_per_s == pytest.approx(4 * 10 / wall)
    assert [row["name"] for row in r.layers] == ["res4 block", "conv1 + relu", "head"]


def test_report_cli_table_and_json(tmp_path, capsys):
    times = tmp_path / "times.json"
    times.write_text(_times_text([2.0] * 5))
    prof = tmp_path / "profile.json"
    prof.write_text(PROFILE_TEXT)
    out = tmp_path / "summary.json"
    assert main(["trtexec-report", str(times), str(prof), "--batch", "2", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "images/s" in text and "res4 block" in text and "p99" in text
    data = json.loads(out.read_text())
    assert data["batch"] == 2
    assert data["images_per_s"] == pytest.approx(2 * data["throughput_qps"])
    assert data["latency_ms"]["p95"] == pytest.approx(2.0)


@pytest.mark.parametrize(
    "content, message",
    [
        ("not json", "not a JSON file"),
        ("[]", "non-empty JSON array"),
        ('[{"startEnqMs": 1}]', "lacks"),
        ('{"count": 3}', "non-empty JSON array"),
    ],
)
def test_report_rejects_other_formats(tmp_path, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(TrtexecReportError, match=message):
        load_report(bad)


def test_report_rejects_a_times_file_given_as_profile(tmp_path, capsys):
    times = tmp_path / "times.json"
    times.write_text(_times_text([1.0, 2.0]))
    assert main(["trtexec-report", str(times), str(times)]) == 2
    assert "exportProfile" in capsys.readouterr().err
