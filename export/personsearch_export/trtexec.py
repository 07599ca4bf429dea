"""trtexec integration: command lines per model and a parser for its JSON exports.

Flag facts follow the deployment digest (section 4, from TensorRT's ``sampleOptions.cpp``
of 10.16 and 11.1):

* TensorRT 11 removed ``--fp16/--int8/--best`` (unknown option -> exit failure); precision
  comes from the ONNX graph (strong typing). On 10.x we pass ``--stronglyTyped`` so both
  versions build the same network; we never pass precision flags.
* Benchmark defaults flipped in 11: CUDA graphs on, data transfers off, spin-wait on.
  10.x needs ``--useCudaGraph --noDataTransfers --useSpinWait --separateProfileRun`` to
  measure the same thing, so every command states the regime explicitly.
* ``--workspace`` is gone in 11; ``--memPoolSize=workspace:<N>M`` works in both.
* TF32 is on by default in both; builds pass ``--noTF32`` unless asked for TF32, so the
  engine timed is the one ``personsearch build-engine`` makes (it clears TF32 the same way).
* ``--exportTimes`` is a JSON array of per-query records with ``startEnqMs ... latencyMs``;
  ``--exportProfile`` is ``[{"count": N}, {"name", "timeMs", "averageMs", "medianMs",
  "percentage"}, ...]``. trtexec's percentile is the sorted value at index
  ``n - 1 - floor((1 - k/100) * n)``.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from personsearch_export.errors import TrtexecReportError

__all__ = [
    "TRT_MAJORS",
    "LatencyStats",
    "TrtexecCommands",
    "TrtexecReport",
    "format_report",
    "load_report",
    "shape_flag",
    "trtexec_commands",
    "trtexec_percentile",
]

#: TensorRT major versions whose flag sets we know.
TRT_MAJORS = (10, 11)

_TIME_KEYS = (
    "startEnqMs",
    "endEnqMs",
    "startH2dMs",
    "endH2dMs",
    "startComputeMs",
    "endComputeMs",
    "startD2hMs",
    "endD2hMs",
    "h2dMs",
    "computeMs",
    "d2hMs",
    "latencyMs",
)


def shape_flag(shapes: Mapping[str, Sequence[int]]) -> str:
    """Format ``{"images": (1, 3, 800, 1344)}`` as trtexec's ``images:1x3x800x1344``.

    Args:
        shapes: Input name -> concrete shape.

    Returns:
        Comma-separated ``name:AxBxC`` entries in the mapping's order.
    """
    return ",".join(f"{name}:{'x'.join(str(int(d)) for d in shape)}" for name, shape in shapes.items())


@dataclass(frozen=True)
class TrtexecCommands:
    """The two trtexec invocations for one model and one TensorRT major version.

    Attributes:
        role: Model role in the bundle, e.g. ``"detector"``.
        trt_major: 10 or 11.
        build: argv that parses the ONNX and writes the engine (no inference).
        benchmark: argv that loads the engine and times it at the opt shapes, exporting
            ``--exportTimes`` / ``--exportProfile`` JSON.
        batch: Images (or RoIs) per query at the opt shape; images/s = qps x batch.
        times_path: Where the benchmark writes ``--exportTimes``.
        profile_path: Where the benchmark writes ``--exportProfile``.
    """

    role: str
    trt_major: int
    build: tuple[str, ...]
    benchmark: tuple[str, ...]
    batch: int
    times_path: str = ""
    profile_path: str = ""

    def shell(self) -> str:
        """Return both commands as shell lines, quoted."""
        return f"{shlex.join(self.build)}\n{shlex.join(self.benchmark)}\n"


def trtexec_commands(
    *,
    role: str,
    onnx_path: str | Path,
    profile: Mapping[str, tuple[Sequence[int], Sequence[int], Sequence[int]]],
    trt_major: int,
    engine_path: str | Path,
    times_path: str | Path,
    profile_path: str | Path,
    timing_cache: str | Path | None = None,
    workspace_mb: int = 4096,
    version_compatible: bool = False,
    tf32: bool = False,
    include_transfers: bool = False,
    iterations: int = 200,
    warmup_ms: int = 500,
    duration_s: int = 10,
    trtexec: str = "trtexec",
) -> TrtexecCommands:
    """Return the build and benchmark trtexec command lines for one model.

    Args:
        role: Model role (used only for labelling).
        onnx_path: The ONNX file.
        profile: Input name -> (min, opt, max) concrete shapes (one optimization profile).
        trt_major: 10 or 11; selects the flag set.
        engine_path: Where the build writes the plan and the benchmark reads it.
        times_path: ``--exportTimes`` target.
        profile_path: ``--exportProfile`` target.
        timing_cache: ``--timingCacheFile`` (kept per GPU and TensorRT version), or None.
        workspace_mb: Workspace pool limit in MiB.
        version_compatible: Build a version-compatible plan (``--versionCompatible``).
        tf32: Allow TF32 for fp32 layers; False passes ``--noTF32``.
        include_transfers: Time host<->device copies too (off: GPU-resident timing).
        iterations: Minimum timed iterations.
        warmup_ms: Warm-up time.
        duration_s: Minimum timed wall time.
        trtexec: The trtexec executable.

    Returns:
        The commands.

    Raises:
        ValueError: For an unknown TensorRT major version or an empty profile.
    """
    if trt_major not in TRT_MAJORS:
        raise ValueError(
            f"unknown TensorRT major version {trt_major}; known: {', '.join(map(str, TRT_MAJORS))}"
        )
    if not profile:
        raise ValueError(f"{role}: the optimization profile has no inputs")
    mins = {k: v[0] for k, v in profile.items()}
    opts = {k: v[1] for k, v in profile.items()}
    maxs = {k: v[2] for k, v in profile.items()}
    build = [
        trtexec,
        f"--onnx={onnx_path}",
        f"--saveEngine={engine_path}",
        f"--minShapes={shape_flag(mins)}",
        f"--optShapes={shape_flag(opts)}",
        f"--maxShapes={shape_flag(maxs)}",
        f"--memPoolSize=workspace:{int(workspace_mb)}M",
    ]
    if trt_major == 10:
        # Precision lives in the graph; on 10.x strong typing is opt-in (11.x: always on).
        build.append("--stronglyTyped")
    if timing_cache is not None:
        build.append(f"--timingCacheFile={timing_cache}")
    if version_compatible:
        build.append("--versionCompatible")
    if not tf32:
        build.append("--noTF32")
    build.append("--skipInference")
    bench = [
        trtexec,
        f"--loadEngine={engine_path}",
        f"--shapes={shape_flag(opts)}",
        f"--iterations={int(iterations)}",
        f"--warmUp={int(warmup_ms)}",
        f"--duration={int(duration_s)}",
        "--percentile=90,95,99",
    ]
    if version_compatible:
        bench.append("--useRuntime=full")
    if trt_major == 10:
        # 10.x defaults differ from 11.x: state the 11.x regime explicitly.
        bench += ["--useCudaGraph", "--useSpinWait", "--separateProfileRun"]
        if not include_transfers:
            bench.append("--noDataTransfers")
    elif include_transfers:
        bench.append("--includeDataTransfers")
    bench += [
        f"--exportTimes={times_path}",
        f"--exportProfile={profile_path}",
        "--profilingVerbosity=detailed",
    ]
    first = next(iter(opts.values()))
    return TrtexecCommands(
        role=role,
        trt_major=trt_major,
        build=tuple(build),
        benchmark=tuple(bench),
        batch=int(first[0]) if first else 1,
        times_path=str(times_path),
        profile_path=str(profile_path),
    )


def trtexec_percentile(sorted_values: Sequence[float], percentile: float) -> float:
    """Return trtexec's percentile: the sorted value at ``n - 1 - floor((1 - p/100) * n)``.

    Args:
        sorted_values: Ascending values (non-empty).
        percentile: In (0, 100].

    Returns:
        The value trtexec would report.
    """
    n = len(sorted_values)
    # Exact rational arithmetic: in binary floating point 1 - 90/100 is just below 0.1,
    # which would move p90 of 10 samples to the max.
    index = n - 1 - math.floor((100 - Fraction(str(percentile))) * n / 100)
    return float(sorted_values[min(max(index, 0), n - 1)])


@dataclass(frozen=True)
class LatencyStats:
    """Summary of one per-query time series in milliseconds.

    Attributes:
        mean, median, min, max, p90, p95, p99: Statistics in ms (trtexec's definitions).
    """

    mean: float
    median: float
    min: float
    max: float
    p90: float
    p95: float
    p99: float

    @classmethod
    def of(cls, values: Sequence[float]) -> LatencyStats:
        """Compute the statistics of a non-empty series."""
        v = sorted(float(x) for x in values)
        n = len(v)
        median = v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])
        return cls(
            mean=sum(v) / n,
            median=median,
            min=v[0],
            max=v[-1],
            p90=trtexec_percentile(v, 90),
            p95=trtexec_percentile(v, 95),
            p99=trtexec_percentile(v, 99),
        )

    def to_json(self) -> dict[str, float]:
        """Return the JSON form."""
        return {k: getattr(self, k) for k in ("mean", "median", "min", "max", "p90", "p95", "p99")}


@dataclass(frozen=True)
class TrtexecReport:
    """What one benchmark run measured.

    Attributes:
        queries: Number of timed queries (engine executions).
        batch: Images (or RoIs) per query.
        latency: End-to-end latency per query (H2D + compute + D2H), ms.
        gpu_compute: GPU compute time per query, ms.
        enqueue: Host enqueue time per query, ms.
        walltime_s: First enqueue to last completion, seconds.
        throughput_qps: Queries per second (queries / walltime).
        images_per_s: ``throughput_qps * batch``.
        layers: Per-layer profile rows sorted by total time, when a profile was given.
    """

    queries: int
    batch: int
    latency: LatencyStats
    gpu_compute: LatencyStats
    enqueue: LatencyStats
    walltime_s: float
    throughput_qps: float
    images_per_s: float
    layers: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "queries": self.queries,
            "batch": self.batch,
            "latency_ms": self.latency.to_json(),
            "gpu_compute_ms": self.gpu_compute.to_json(),
            "enqueue_ms": self.enqueue.to_json(),
            "walltime_s": self.walltime_s,
            "throughput_qps": self.throughput_qps,
            "images_per_s": self.images_per_s,
            "layers": list(self.layers),
        }


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrtexecReportError(f"{what} file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrtexecReportError(
            f"{path} is not a JSON file ({exc}); pass trtexec's --{what} output"
        ) from None


def _parse_times(path: Path) -> list[dict[str, float]]:
    data = _read_json(path, "exportTimes")
    if not isinstance(data, list) or not data:
        raise TrtexecReportError(
            f"{path}: expected trtexec's --exportTimes format, a non-empty JSON array of per-query records"
        )
    records = []
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise TrtexecReportError(f"{path}: entry [{i}] is not an object")
        missing = [k for k in _TIME_KEYS if k not in rec]
        if missing:
            raise TrtexecReportError(
                f"{path}: entry [{i}] lacks {', '.join(missing)}; this is not trtexec --exportTimes output"
            )
        record = {k: _finite_number(rec[k], path, i, k) for k in _TIME_KEYS}
        records.append(record)
    return records


def _finite_number(value: Any, path: Path, index: int, key: str) -> float:
    """A time field as a finite float; a truncated or hand-edited file gets a message, not a traceback."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TrtexecReportError(
            f"{path}: entry [{index}] has a non-numeric {key} ({value!r}); this is not trtexec output"
        ) from None
    if not math.isfinite(number):
        raise TrtexecReportError(f"{path}: entry [{index}] has a non-finite {key} ({value!r}); rerun trtexec")
    return number


def _parse_profile(path: Path) -> list[dict[str, Any]]:
    data = _read_json(path, "exportProfile")
    if not isinstance(data, list) or not data or not isinstance(data[0], dict) or "count" not in data[0]:
        raise TrtexecReportError(
            f'{path}: expected trtexec\'s --exportProfile format, a JSON array starting with {{"count": N}}'
        )
    rows = []
    for i, rec in enumerate(data[1:], start=1):
        if not isinstance(rec, dict) or not {"name", "timeMs", "averageMs", "percentage"} <= set(rec):
            raise TrtexecReportError(f"{path}: entry [{i}] lacks name/timeMs/averageMs/percentage")
        rows.append(
            {
                "name": str(rec["name"]),
                "time_ms": _finite_number(rec["timeMs"], path, i, "timeMs"),
                "average_ms": _finite_number(rec["averageMs"], path, i, "averageMs"),
                "median_ms": _finite_number(rec.get("medianMs", rec["averageMs"]), path, i, "medianMs"),
                "percentage": _finite_number(rec["percentage"], path, i, "percentage"),
            }
        )
    rows.sort(key=lambda r: r["time_ms"], reverse=True)
    return rows


def load_report(
    times_path: str | Path, profile_path: str | Path | None = None, *, batch: int = 1
) -> TrtexecReport:
    """Parse trtexec's ``--exportTimes`` (and optionally ``--exportProfile``) JSON.

    Args:
        times_path: The ``--exportTimes`` file.
        profile_path: The ``--exportProfile`` file, or None.
        batch: Images per query (the batch dimension of the benchmarked shape).

    Returns:
        The summary.

    Raises:
        TrtexecReportError: A file is missing or not in trtexec's format.
    """
    if batch < 1:
        raise TrtexecReportError(f"--batch must be >= 1, got {batch}")
    records = _parse_times(Path(times_path))
    start = min(r["startEnqMs"] for r in records)
    # With data transfers off trtexec still writes the D2H stamps (equal to compute end).
    end = max(max(r["endD2hMs"], r["endComputeMs"]) for r in records)
    walltime_s = (end - start) / 1000.0
    qps = len(records) / walltime_s if walltime_s > 0 else float("inf")
    layers = tuple(_parse_profile(Path(profile_path))) if profile_path is not None else ()
    return TrtexecReport(
        queries=len(records),
        batch=batch,
        latency=LatencyStats.of([r["latencyMs"] for r in records]),
        gpu_compute=LatencyStats.of([r["computeMs"] for r in records]),
        enqueue=LatencyStats.of([r["endEnqMs"] - r["startEnqMs"] for r in records]),
        walltime_s=walltime_s,
        throughput_qps=qps,
        images_per_s=qps * batch,
        layers=layers,
    )


def format_report(report: TrtexecReport, *, top_layers: int = 10) -> str:
    """Render a report as a plain-text table.

    Args:
        report: What :func:`load_report` returned.
        top_layers: How many of the slowest layers to list.

    Returns:
        The table, newline-terminated.
    """
    lines = [
        f"queries {report.queries}, batch {report.batch}, walltime {report.walltime_s:.3f} s",
        f"throughput {report.throughput_qps:.2f} qps = {report.images_per_s:.2f} images/s",
        "",
        f"{'ms':<12}{'mean':>10}{'median':>10}{'p90':>10}{'p95':>10}{'p99':>10}{'min':>10}{'max':>10}",
    ]
    for label, s in (
        ("latency", report.latency),
        ("gpu compute", report.gpu_compute),
        ("enqueue", report.enqueue),
    ):
        lines.append(
            f"{label:<12}{s.mean:>10.3f}{s.median:>10.3f}{s.p90:>10.3f}{s.p95:>10.3f}{s.p99:>10.3f}"
            f"{s.min:>10.3f}{s.max:>10.3f}"
        )
    if report.layers:
        lines += ["", f"{'layer':<48}{'total ms':>10}{'avg ms':>10}{'%':>7}"]
        for row in report.layers[:top_layers]:
            name = row["name"] if len(row["name"]) <= 46 else row["name"][:43] + "..."
            lines.append(
                f"{name:<48}{row['time_ms']:>10.3f}{row['average_ms']:>10.4f}{row['percentage']:>7.1f}"
            )
    return "\n".join(lines) + "\n"
