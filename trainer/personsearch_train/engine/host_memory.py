"""Keep freed host memory in the C heap during CPU training.

glibc's ``malloc`` serves every block above its mmap threshold (128 KiB at start,
raised on the fly up to 32 MiB) with a fresh ``mmap`` and hands it back with
``munmap`` on free, and it trims the top of the heap once 128 KiB or more lies
unused there. A training step allocates and frees the same feature maps and
gradients, several MiB each, every step, so without this each of them is
page-faulted in and zeroed by the kernel again: on a 2-core machine that made
element-wise kernels on ``seqnet_small``'s stem run at well under 1 GB/s. Raising both
thresholds lets the allocator reuse those blocks, as a caching allocator would.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["retain_freed_host_memory"]

# mallopt(3) parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: Largest block kept in the heap: glibc refuses mmap thresholds above 32 MiB on 64-bit.
DEFAULT_MAX_HEAP_BLOCK_BYTES = 32 * 1024 * 1024


def retain_freed_host_memory(
    max_heap_block_bytes: int = DEFAULT_MAX_HEAP_BLOCK_BYTES, trim_threshold_bytes: int = 1 << 30
) -> bool:
    """Tell glibc's allocator to keep freed blocks for reuse rather than unmap them.

    The setting is process-wide and lasts until exit; peak resident memory does not
    grow, but memory freed after the peak stays with the process (up to
    ``trim_threshold_bytes`` of it). Blocks larger than ``max_heap_block_bytes`` are
    still mapped and unmapped per use.

    Args:
        max_heap_block_bytes: New mmap threshold: blocks up to this size come from
            the heap.
        trim_threshold_bytes: Free memory at the top of the heap kept before trimming.

    Returns:
        True if both settings were applied; False where the C library is not glibc
        (macOS, Windows, musl), which leaves the allocator as it was.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = mallopt(_M_MMAP_THRESHOLD, int(max_heap_block_bytes)) == 1
    return mallopt(_M_TRIM_THRESHOLD, int(trim_threshold_bytes)) == 1 and applied
