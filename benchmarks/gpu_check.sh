#!/usr/bin/env bash
# The one prepared GPU check (issue 21): on a CUDA machine, in this order,
#   env               versions, the GPU, nvcc (fails without a visible GPU)
#   build             the CUDA extension personsearch_ops._C built in place against this torch
#   cuda-tests        every needs_cuda test except the split-pipeline ones (pytest -m needs_cuda)
#   split-pipeline    the device split pipeline end to end against the CPU path (its two tests)
#   kernel-parity     NVRTC RoIAlign vs the compiled op vs torchvision at search-path sizes
#   nms-parity        the runtime's device NMS vs torchvision's (CUDA and CPU)
#   roi-align-bench   benchmarks/roi_align.py --device cuda
#   end-to-end-bench  benchmarks/gpu_end_to_end.py (runtime_vs_torch.py times the CPU only)
# Every step runs even when an earlier one failed, each under its own timeout and all within
# one time budget; the summary lists every step's result and the exit status is 1 if any
# step failed, timed out or was left out for lack of time.
#
# Usage: bash benchmarks/gpu_check.sh [--dry-run] [OUT_DIR]
#   OUT_DIR   where every output goes (default: $OUT, else ./gpu_check_out): summary.txt,
#             steps.log (all step output), cuda_tests.xml, split_pipeline.xml (JUnit),
#             kernel_parity.json, nms_parity.json, end_to_end.json. Seven files at most.
#   --dry-run on a machine without a GPU: check that the run would start (the Python of every
#             step imports, the paths exist, each script parses the exact arguments the run
#             passes, the CUDA tests are collected), report nvcc/CUDA_HOME without needing
#             them, and exit 0 when all that holds. Writes summary.txt and steps.log.
# Environment: PYTHON (default .venv/bin/python when it exists, else python3), CUDA_HOME
#   (default: CUDA_PATH, /usr/local/cuda or the toolkit of the nvcc on PATH, the first that
#   holds bin/nvcc and include/cuda_runtime.h), TORCH_CUDA_ARCH_LIST
#   (default 9.0, H100/H200), GPU_CHECK_BUDGET_S (default 450: the whole run stays under 8
#   minutes on one H100/H200 with 16 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

DRY_RUN=0
OUT_DIR=""
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "gpu_check: unknown option $arg (see --help)" >&2; exit 2 ;;
    *)
      if [[ -n "$OUT_DIR" ]]; then echo "gpu_check: one OUT_DIR only" >&2; exit 2; fi
      OUT_DIR=$arg
      ;;
  esac
done
OUT_DIR=${OUT_DIR:-${OUT:-./gpu_check_out}}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
# The first candidate that is a toolkit (nvcc and headers): nvcc on PATH can be a wrapper script.
if [[ -z "${CUDA_HOME:-}" ]]; then
  candidates=("${CUDA_PATH:-}" /usr/local/cuda)
  if command -v nvcc >/dev/null 2>&1; then
    candidates+=("$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")")
  fi
  CUDA_HOME=/usr/local/cuda
  for candidate in "${candidates[@]}"; do
    if [[ -n "$candidate" && -x "$candidate/bin/nvcc" && -f "$candidate/include/cuda_runtime.h" ]]; then
      CUDA_HOME=$candidate
      break
    fi
  done
fi
export CUDA_HOME
ARCHS=${TORCH_CUDA_ARCH_LIST:-9.0}
JOBS=${MAX_JOBS:-$(nproc)}
BUDGET_S=${GPU_CHECK_BUDGET_S:-450}
# The packages come from this checkout (no install needed): each repository folder holds one.
export PYTHONPATH="$ROOT/cpp_ext:$ROOT/runtime:$ROOT/trainer:$ROOT/export${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# The runtime's NVRTC kernel cache goes to the scratch folder, not to the user's home.
export PERSONSEARCH_CACHE="$WORK/cache"

STEPS=(env build cuda-tests split-pipeline kernel-parity nms-parity roi-align-bench end-to-end-bench)
declare -A TIMEOUT_S=(
  [env]=60 [build]=300 [cuda-tests]=240 [split-pipeline]=150
  [kernel-parity]=150 [nms-parity]=90 [roi-align-bench]=120 [end-to-end-bench]=240
)
# Steps whose output is a result worth reading in the summary, not only in steps.log.
REPORTED=(kernel-parity nms-parity roi-align-bench end-to-end-bench)

# Test files that hold CUDA tests (grep the marker, so new ones are picked up).
mapfile -t CUDA_TEST_FILES < <(grep -rl --include='test_*.py' 'mark.needs_cuda' tests | sort)
SPLIT_TESTS=device_split_pipeline
PYTEST_COMMON=(-p no:cacheprovider -m needs_cuda -rfEs --continue-on-collection-errors)
CUDA_TESTS_ARGS=("${PYTEST_COMMON[@]}" -k "not $SPLIT_TESTS" --junitxml "$OUT_DIR/cuda_tests.xml")
SPLIT_ARGS=("${PYTEST_COMMON[@]}" -k "$SPLIT_TESTS" --junitxml "$OUT_DIR/split_pipeline.xml")
ROI_PARITY_ARGS=(--check roi_align --json "$OUT_DIR/kernel_parity.json")
NMS_PARITY_ARGS=(--check nms --json "$OUT_DIR/nms_parity.json")
ROI_BENCH_ARGS=(--device cuda --repeats 5)
E2E_ARGS=(--frames 3 --warmup 1 --json "$OUT_DIR/end_to_end.json")

# ---- the steps (each runs in its own bash under `timeout`) ----

step_env() {
  echo "python: $PYTHON"
  "$PYTHON" -c '
import importlib, sys
import torch, torchvision
print(f"Python {sys.version.split()[0]}; torch {torch.__version__} (CUDA {torch.version.cuda}); "
      f"torchvision {torchvision.__version__}")
for name in ("cupy", "cuda.bindings", "onnxruntime", "onnx", "tensorrt", "pytest"):
    try:
        module = importlib.import_module(name)
        version = getattr(module, "__version__", "(no version)")
        extra = f" providers {module.get_available_providers()}" if name == "onnxruntime" else ""
        print(f"{name} {version}{extra}")
    except ImportError as exc:
        print(f"{name}: not importable ({exc})")
if not torch.cuda.is_available():
    raise SystemExit("no CUDA GPU visible to torch")
p = torch.cuda.get_device_properties(0)
print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs")
'
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  fi
  if [[ -x "$CUDA_HOME/bin/nvcc" ]]; then
    "$CUDA_HOME/bin/nvcc" --version | tail -n 2
  else
    echo "no nvcc under CUDA_HOME=$CUDA_HOME"
  fi
  echo "cores: $(nproc)"
}

step_build() {
  if [[ ! -x "$CUDA_HOME/bin/nvcc" ]]; then
    echo "no nvcc under CUDA_HOME=$CUDA_HOME; set CUDA_HOME to the CUDA toolkit root" >&2
    return 1
  fi
  # In place: personsearch_ops/_C.<this Python's tag>.so next to the sources (setup.py maps
  # the package to cpp_ext/); objects go to the scratch folder.
  CUDA_HOME="$CUDA_HOME" PATH="$CUDA_HOME/bin:$PATH" FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCHS" \
    MAX_JOBS="$JOBS" "$PYTHON" setup.py -q build_ext --inplace --build-temp "$WORK/build"
  "$PYTHON" -c '
import torch, torchvision
import personsearch_ops
from personsearch_ops import extension

if not personsearch_ops.has_ops():
    raise SystemExit(f"personsearch_ops._C does not load: {extension._LOAD_ERROR}")
print("loaded", personsearch_ops._C.__file__)
for op in ("roi_align", "roi_align_backward", "multi_level_roi_align", "multi_level_roi_align_backward"):
    if not torch._C._dispatch_has_kernel_for_dispatch_key(f"personsearch_ops::{op}", "CUDA"):
        raise SystemExit(f"personsearch_ops::{op} has no CUDA kernel: the build was a CPU build")
x = torch.randn(1, 8, 16, 16, device="cuda")
rois = torch.tensor([[0.0, 1.5, 2.0, 12.0, 9.5]], device="cuda")
ours = personsearch_ops.roi_align(x, rois, 4, 1.0, 2, aligned=True)
ref = torchvision.ops.roi_align(x, rois, 4, 1.0, 2, True)
torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
print("smoke test: one CUDA RoIAlign call matches torchvision")
'
}

step_cuda-tests() { "$PYTHON" -m pytest "${CUDA_TESTS_ARGS[@]}" "${CUDA_TEST_FILES[@]}"; }
step_split-pipeline() { "$PYTHON" -m pytest "${SPLIT_ARGS[@]}" "${CUDA_TEST_FILES[@]}"; }
step_kernel-parity() { "$PYTHON" benchmarks/gpu_kernel_parity.py "${ROI_PARITY_ARGS[@]}"; }
step_nms-parity() { "$PYTHON" benchmarks/gpu_kernel_parity.py "${NMS_PARITY_ARGS[@]}"; }
step_roi-align-bench() { "$PYTHON" benchmarks/roi_align.py "${ROI_BENCH_ARGS[@]}"; }
step_end-to-end-bench() {
  echo "(benchmarks/runtime_vs_torch.py times ONNX Runtime and torch on the CPU only; this is its GPU counterpart)"
  "$PYTHON" benchmarks/gpu_end_to_end.py "${E2E_ARGS[@]}"
}

# ---- the dry run: one Python process checks every step's Python side ----

# Arguments: groups "STEP SCRIPT ARG..." separated by ";;" (a script "pytest" means a pytest
# collection of the CUDA test files). Prints "DRY <step> ok|FAIL: <detail>" per step.
dry_check_python() {
  "$PYTHON" - "$@" <<'PY'
import argparse
import contextlib
import importlib
import io
import runpy
import sys
from pathlib import Path

root = Path.cwd()
sys.path.insert(0, str(root / "benchmarks"))
groups, current = [], []
for arg in sys.argv[1:]:
    if arg == ";;":
        groups.append(current)
        current = []
    else:
        current.append(arg)
groups.append(current)


class Parsed(Exception):
    """Raised by the patched parse_args: the script parsed its real arguments; stop there."""


original_parse_args = argparse.ArgumentParser.parse_args


def parse_then_stop(self, args=None, namespace=None):
    raise Parsed(original_parse_args(self, args, namespace))


def imports(step, names, optional=()):
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - any import failure stops the real run
            missing.append(f"{name} ({type(exc).__name__}: {exc})")
    if missing:
        print(f"DRY {step} FAIL: cannot import {', '.join(missing)}")
        return False
    absent = [n for n in optional if importlib.util.find_spec(n.split(".")[0]) is None]
    note = f"; not installed here (needed on the GPU machine): {', '.join(absent)}" if absent else ""
    print(f"DRY {step} ok: imports {', '.join(names)}{note}")
    return True


def script_parses(step, script, args):
    path = root / script
    if not path.is_file():
        print(f"DRY {step} FAIL: {script} does not exist")
        return
    argparse.ArgumentParser.parse_args = parse_then_stop
    sys.argv = [str(path), *args]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            runpy.run_path(str(path), run_name="__main__")
        print(f"DRY {step} FAIL: {script} ran to the end instead of stopping after its arguments")
    except Parsed as parsed:
        print(f"DRY {step} ok: {script} imports and parses {' '.join(args)} -> {vars(parsed.args[0])}")
    except SystemExit as exc:
        print(f"DRY {step} FAIL: {script} {' '.join(args)} exited {exc.code}: {err.getvalue().strip()}")
    except Exception as exc:  # noqa: BLE001 - report whatever stops the script from starting
        print(f"DRY {step} FAIL: {script}: {type(exc).__name__}: {exc}")
    finally:
        argparse.ArgumentParser.parse_args = original_parse_args


def tests_collect(steps_and_args):
    import pytest

    class Collector:
        items = []

        def pytest_collection_finish(self, session):
            self.items = [item.nodeid for item in session.items]

    collector = Collector()
    files = steps_and_args[0][1]
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "-m", "needs_cuda", *files],
                           plugins=[collector])
    if code not in (0, 5):
        tail = "\n".join(out.getvalue().splitlines()[-15:])
        for step, _, _ in steps_and_args:
            print(f"DRY {step} FAIL: pytest collection failed (exit {code}):\n{tail}")
        return
    for step, _, keyword in steps_and_args:
        wanted = keyword.startswith("not ")
        word = keyword.removeprefix("not ")
        chosen = [n for n in collector.items if (word in n) != wanted]
        if chosen:
            print(f"DRY {step} ok: {len(chosen)} CUDA tests collected from {len(files)} files")
        else:
            print(f"DRY {step} FAIL: no CUDA test selected by -k {keyword!r}")


checks = {}
pytest_steps = []
for group in groups:
    step, script, *args = group
    if script == "pytest":
        keyword, files = args[0], args[1:]
        pytest_steps.append((step, files, keyword))
    else:
        checks.setdefault(step, []).append((script, args))

imports("env", ["torch", "torchvision"], optional=["cupy", "cuda.bindings", "onnxruntime"])
sys.path.insert(0, str(root / "cpp_ext"))
if imports("build", ["setuptools", "torch.utils.cpp_extension", "ops_build", "personsearch_ops"]):
    import ops_build

    if callable(getattr(ops_build, "make_extension", None)):
        print("DRY build ok: cpp_ext/ops_build.py has make_extension (what setup.py builds with)")
    else:
        print("DRY build FAIL: cpp_ext/ops_build.py has no make_extension")
imports("kernel-parity", ["personsearch_ops", "personsearch_runtime.gpu.roi_align_kernel"],
        optional=["cupy", "cuda.bindings"])
imports("nms-parity", ["personsearch_runtime.box_ops"], optional=["cupy"])
imports("end-to-end-bench", ["onnxruntime", "personsearch_export.exporter", "personsearch_train.models",
                             "personsearch_runtime.gpu.device_pipeline", "personsearch_runtime.searcher"],
        optional=["cupy"])
try:
    import personsearch_ops

    print(f"DRY kernel-parity ok: kernel source {personsearch_ops.kernel_source_path()}")
except Exception as exc:  # noqa: BLE001
    print(f"DRY kernel-parity FAIL: kernel source: {exc}")
for step, scripts in checks.items():
    for script, args in scripts:
        script_parses(step, script, args)
if pytest_steps:
    tests_collect(pytest_steps)
PY
}

dry_run() {
  local log=$1
  {
    echo "== dry run: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), python $PYTHON"
    for tool in timeout tee nproc grep; do
      if command -v "$tool" >/dev/null 2>&1; then echo "DRY env ok: $tool found"; else echo "DRY env FAIL: no $tool"; fi
    done
    if [[ -x "$CUDA_HOME/bin/nvcc" ]]; then
      echo "DRY build ok: nvcc at $CUDA_HOME/bin/nvcc ($("$CUDA_HOME/bin/nvcc" --version | tail -n 1))"
    else
      echo "DRY build ok: no nvcc under CUDA_HOME=$CUDA_HOME here (the GPU machine needs one; not required for a dry run)"
    fi
    for path in setup.py cpp_ext/ops_build.py cpp_ext/personsearch_ops/csrc/cuda/roi_align_cuda.cu \
      cpp_ext/personsearch_ops/csrc/cuda/roi_align_kernels.cuh benchmarks/roi_align.py \
      benchmarks/gpu_kernel_parity.py benchmarks/gpu_end_to_end.py benchmarks/runtime_vs_torch.py; do
      if [[ -f "$path" ]]; then echo "DRY build ok: $path exists"; else echo "DRY build FAIL: $path is missing"; fi
    done
    if ((${#CUDA_TEST_FILES[@]} == 0)); then
      echo "DRY cuda-tests FAIL: no test file under tests/ has a needs_cuda test"
    fi
    dry_check_python \
      cuda-tests pytest "not $SPLIT_TESTS" "${CUDA_TEST_FILES[@]}" ";;" \
      split-pipeline pytest "$SPLIT_TESTS" "${CUDA_TEST_FILES[@]}" ";;" \
      kernel-parity benchmarks/gpu_kernel_parity.py "${ROI_PARITY_ARGS[@]}" ";;" \
      nms-parity benchmarks/gpu_kernel_parity.py "${NMS_PARITY_ARGS[@]}" ";;" \
      roi-align-bench benchmarks/roi_align.py "${ROI_BENCH_ARGS[@]}" ";;" \
      end-to-end-bench benchmarks/gpu_end_to_end.py "${E2E_ARGS[@]}" 2>&1 ||
      echo "DRY env FAIL: the Python checker exited $?"
  } | tee "$log"
}

# ---- run ----

LOG="$OUT_DIR/steps.log"
SUMMARY="$OUT_DIR/summary.txt"
declare -A STATUS SECONDS_TAKEN NOTE
start=$(date +%s)

if ((DRY_RUN)); then
  dry_run "$LOG"
  for step in "${STEPS[@]}"; do
    if grep -q "^DRY $step FAIL" "$LOG"; then
      STATUS[$step]=FAIL
    elif grep -q "^DRY $step ok" "$LOG"; then
      STATUS[$step]="DRY-OK"
    else
      STATUS[$step]=FAIL
      echo "DRY $step FAIL: nothing checked it" | tee -a "$LOG"
    fi
    SECONDS_TAKEN[$step]=-
    NOTE[$step]=$(grep "^DRY $step " "$LOG" | tail -n 1 | cut -c1-160)
  done
else
  state="$(declare -p PYTHON ROOT OUT_DIR WORK CUDA_HOME ARCHS JOBS CUDA_TEST_FILES CUDA_TESTS_ARGS SPLIT_ARGS \
    ROI_PARITY_ARGS NMS_PARITY_ARGS ROI_BENCH_ARGS E2E_ARGS)"
  functions="$(declare -f "${STEPS[@]/#/step_}")"
  : >"$LOG"
  for step in "${STEPS[@]}"; do
    left=$((BUDGET_S - ($(date +%s) - start)))
    if ((left < 15)); then
      STATUS[$step]="NOT-RUN"
      SECONDS_TAKEN[$step]=0
      NOTE[$step]="left out: the ${BUDGET_S} s budget was spent"
      echo "== $step: left out, the ${BUDGET_S} s budget is spent" | tee -a "$LOG"
      continue
    fi
    limit=${TIMEOUT_S[$step]}
    ((limit > left)) && limit=$left
    echo "== $step (timeout ${limit} s)" | tee -a "$LOG"
    t0=$(date +%s)
    set +e
    timeout --kill-after=10 "$limit" bash -c "set -euo pipefail; $state; $functions; step_$step" 2>&1 |
      tee "$WORK/$step.out" | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    set -e
    SECONDS_TAKEN[$step]=$(($(date +%s) - t0))
    case $rc in
      0) STATUS[$step]=PASS ;;
      124 | 137) STATUS[$step]=TIMEOUT ;;
      *) STATUS[$step]="FAIL($rc)" ;;
    esac
    NOTE[$step]=$(grep -v '^\s*$' "$WORK/$step.out" | tail -n 1 | cut -c1-160 || true)
    echo "== $step: ${STATUS[$step]} in ${SECONDS_TAKEN[$step]} s" | tee -a "$LOG"
  done
fi

failed=0
{
  mode=$([[ $DRY_RUN == 1 ]] && echo "dry run" || echo "run")
  echo "personsearch GPU check ($mode), $(date -u +%Y-%m-%dT%H:%M:%SZ), $(hostname), $(($(date +%s) - start)) s"
  echo "python $PYTHON; CUDA_HOME $CUDA_HOME; TORCH_CUDA_ARCH_LIST $ARCHS; outputs in $OUT_DIR"
  echo
  printf '%-18s %-9s %7s  %s\n' step status seconds "last line"
  for step in "${STEPS[@]}"; do
    printf '%-18s %-9s %7s  %s\n' "$step" "${STATUS[$step]}" "${SECONDS_TAKEN[$step]}" "${NOTE[$step]}"
  done
  if ((!DRY_RUN)); then
    for step in "${REPORTED[@]}"; do
      if [[ -s "$WORK/$step.out" ]]; then
        echo
        echo "---- $step ----"
        cat "$WORK/$step.out"
      fi
    done
  fi
} >"$SUMMARY"
for step in "${STEPS[@]}"; do
  [[ ${STATUS[$step]} == PASS || ${STATUS[$step]} == DRY-OK ]] || failed=$((failed + 1))
done
echo
head -n $((${#STEPS[@]} + 4)) "$SUMMARY"
if ((failed)); then
  echo "gpu_check: $failed of ${#STEPS[@]} steps did not pass (see $SUMMARY and $LOG)"
  exit 1
fi
echo "gpu_check: all ${#STEPS[@]} steps passed$([[ $DRY_RUN == 1 ]] && echo ' their dry-run checks')"
