"""Which dtype training autocasts to: bfloat16 only where the hardware multiplies it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from personsearch_train.engine import precision


def _cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(
        f"processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: {flags}\nbogomips\t: 4800.00\n\n"
        f"processor\t: 1\nflags\t\t: {flags}\n"
    )
    return path


@pytest.mark.parametrize(
    ("flags", "native"),
    [
        ("fpu sse sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni", True),  # Zen 4, Cooper Lake
        ("fpu avx2 avx512f amx_bf16 amx_tile amx_int8", True),  # Sapphire Rapids
        ("fpu sse sse2 avx2 avx512f avx512bw avx512_vnni", False),  # Skylake/Cascade Lake: emulated
        ("fpu sse sse2 avx avx2 fma", False),
    ],
)
def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path: Path, flags: str, native: bool) -> None:
    assert precision.cpu_has_native_bfloat16(_cpuinfo(tmp_path, flags)) is native


def test_unreadable_or_flagless_cpuinfo_means_no_native_bfloat16(tmp_path: Path) -> None:
    assert precision.cpu_has_native_bfloat16(tmp_path / "missing") is False
    (tmp_path / "arm").write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")
    assert precision.cpu_has_native_bfloat16(tmp_path / "arm") is False


@pytest.mark.parametrize("native", [True, False])
def test_cpu_autocasts_to_bfloat16_only_when_native(monkeypatch, native: bool) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bfloat16", lambda: native)
    cpu = torch.device("cpu")
    assert precision.autocast_dtype(cpu) == (torch.bfloat16 if native else None)
    assert precision.autocast_dtype(cpu, enabled=False) is None
    assert precision.autocast_dtype(torch.device("meta")) is None


def test_autocast_context_casts_only_when_given_a_dtype() -> None:
    cpu = torch.device("cpu")
    weight, data = torch.randn(4, 4), torch.randn(2, 4)
    with precision.autocast_context(cpu, torch.bfloat16):
        assert (data @ weight).dtype == torch.bfloat16
    with precision.autocast_context(cpu, None):
        assert (data @ weight).dtype == torch.float32
