"""Which floating-point type a training step autocasts to on each device.

CUDA GPUs run bfloat16 (or float16 where bfloat16 is missing) on their tensor cores.
On a CPU, oneDNN's bfloat16 convolutions only pay off where the CPU multiplies
bfloat16 natively: x86 CPUs with AVX512-BF16 (Intel Cooper Lake and later, AMD Zen 4
and later) or AMX. Elsewhere oneDNN converts to float32 and back around every
convolution, which is slower than staying in float32. Measured on a 2-core AMD EPYC
with AVX512-BF16, channels-last (issue 3): bfloat16 autocast trains ``seqnet_small``
at 1.22x the float32 steps/s and ``seqnet_r50`` at 900/1500 at 2.0x.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from pathlib import Path

import torch

__all__ = ["autocast_context", "autocast_dtype", "cpu_has_native_bfloat16"]

# /proc/cpuinfo flags that mean the CPU multiplies bfloat16 in hardware.
_NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.cache
def cpu_has_native_bfloat16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this x86 Linux CPU has bfloat16 arithmetic (AVX512-BF16 or AMX-BF16).

    Args:
        cpuinfo: The kernel's CPU description; a parameter so tests can pass their own.

    Returns:
        True when the first processor's ``flags`` line lists ``avx512_bf16`` or
        ``amx_bf16``; False on other systems or when the file cannot be read.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        text = cpuinfo.read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return not _NATIVE_BF16_FLAGS.isdisjoint(value.split())
    return False


def autocast_dtype(device: torch.device, *, enabled: bool = True) -> torch.dtype | None:
    """The dtype a training step should autocast to on ``device``, or None for float32.

    Args:
        device: Where the model runs.
        enabled: The recipe's ``train.amp``; False always gives None.

    Returns:
        ``torch.bfloat16`` on CUDA devices that support it and on CPUs with native
        bfloat16 arithmetic, ``torch.float16`` on older CUDA devices (to be used with a
        gradient scaler), None otherwise.
    """
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bfloat16():
        return torch.bfloat16
    return None


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device``'s type, or a no-op when ``dtype`` is None.

    Args:
        device: Where the model runs.
        dtype: What :func:`autocast_dtype` returned.

    Returns:
        A context manager to run the forward pass (with its losses) under.
    """
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
