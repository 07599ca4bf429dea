"""retain_freed_host_memory: freed multi-MiB blocks are reused instead of faulted in again."""

from __future__ import annotations

import subprocess
import sys

import pytest

# A training step's pattern: hold several multi-MiB blocks at once, then free them all.
# Report the minor page faults of the rounds after the first. Run in a child process:
# the setting is process-wide.
_CHILD = """
import ctypes, resource, sys
from personsearch_train.engine.host_memory import retain_freed_host_memory
applied = retain_freed_host_memory() if sys.argv[1] == "retain" else None
size = 16 * 1024 * 1024
def step():
    blocks = [ctypes.create_string_buffer(size) for _ in range(4)]  # every page is written
    del blocks
step()
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
"""


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, mode], check=True, capture_output=True, text=True
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_blocks_are_reused_without_page_faults() -> None:
    applied, retained = _faults("retain")
    _, default = _faults("default")
    assert applied == "True"
    pages = 5 * 4 * 16 * 1024 * 1024 // 4096
    # By default glibc hands the 64 MiB freed at the top of its heap back to the kernel
    # (its trim threshold follows the mmap threshold, at most 64 MiB), so the pages
    # fault in again every round.
    assert default > pages // 2, default
    assert retained < pages // 20, retained
