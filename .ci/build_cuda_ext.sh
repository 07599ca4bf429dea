#!/usr/bin/env bash
# Compile and link the CUDA build of personsearch_ops._C (no GPU needed; nothing is run).
#
# Usage: .ci/build_cuda_ext.sh            # the default architectures 8.0;8.6;8.9;9.0
#        TORCH_CUDA_ARCH_LIST=9.0 .ci/build_cuda_ext.sh   # one architecture, faster
# Builds into a throw-away folder so the editable CPU build in the tree is left alone, then
# checks that the shared library holds the CUDA kernels. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-.venv/bin/python}
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export FORCE_CUDA=1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-"8.0;8.6;8.9;9.0"}
export MAX_JOBS=${MAX_JOBS:-2}
if [[ ! -x "$CUDA_HOME/bin/nvcc" ]]; then
  echo "build_cuda_ext: no nvcc under CUDA_HOME=$CUDA_HOME; set CUDA_HOME to the CUDA toolkit root" >&2
  exit 1
fi
export PATH="$CUDA_HOME/bin:$PATH"

work=$(mktemp -d "${TMPDIR:-/tmp}/personsearch-cuda-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
"$python" setup.py -q build_ext --build-temp "$work/temp" --build-lib "$work/lib"

so=$(find "$work/lib" -name '_C*.so' | head -n 1)
if [[ -z "$so" ]]; then
  echo "build_cuda_ext: no personsearch_ops/_C*.so was produced" >&2
  exit 1
fi
# The kernels must be in the library (the dispatch code launches them) and it must carry device
# code. (Symbols are read into a variable first: `nm | grep -q` trips pipefail on SIGPIPE.)
symbols=$(nm --defined-only "$so" 2>/dev/null || true)
if ! grep -q 'ps_roi_align_fwd_nhwc_f32' <<<"$symbols" || ! grep -q 'ps_multi_level_roi_align_bwd_nchw_bf16' <<<"$symbols"; then
  echo "build_cuda_ext: $so lacks the CUDA entry points" >&2
  exit 1
fi
sections=$(readelf -S -W "$so" 2>/dev/null || true)
if ! grep -q '\.nv_fatbin' <<<"$sections"; then
  echo "build_cuda_ext: $so has no .nv_fatbin section (no device code)" >&2
  exit 1
fi
# Load it (no GPU needed) to prove every symbol resolves and the CUDA kernels are registered.
"$python" - "$so" <<'PY'
import sys

import torch

torch.ops.load_library(sys.argv[1])
for op in ("roi_align", "roi_align_backward", "multi_level_roi_align", "multi_level_roi_align_backward"):
    for key in ("CPU", "CUDA"):
        if not torch._C._dispatch_has_kernel_for_dispatch_key(f"personsearch_ops::{op}", key):
            raise SystemExit(f"build_cuda_ext: personsearch_ops::{op} has no {key} kernel")
print("build_cuda_ext: library loads; CPU and CUDA kernels registered")
PY
echo "build_cuda_ext: OK ($so, archs $TORCH_CUDA_ARCH_LIST, $(( $(date +%s) - start )) s)"
