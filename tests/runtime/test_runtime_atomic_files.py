"""The runtime's atomic writer: the target is the old file or the whole new one, never a mix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from personsearch_runtime.atomic_files import atomic_replace, atomic_write_bytes, fsync_dir


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("sync", [True, False])
@pytest.mark.parametrize("sync_dir", [False, True])
def test_the_target_is_replaced_whole(tmp_path: Path, sync: bool, sync_dir: bool) -> None:
    target = tmp_path / "manifest.json"
    target.write_bytes(b"x" * 10_000)  # longer than the new contents: no old tail may survive
    returned = atomic_write_bytes(target, b"new contents", sync=sync, sync_dir=sync_dir)
    assert returned == target
    assert target.read_bytes() == b"new contents"
    assert _names(tmp_path) == ["manifest.json"]


def test_the_with_block_writes_by_name_and_the_rename_happens_on_exit(tmp_path: Path) -> None:
    target = tmp_path / "index.npz"
    target.write_bytes(b"old")
    with atomic_replace(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".index.npz.") and tmp.name.endswith(".tmp")
        assert tmp.is_file() and tmp.stat().st_size == 0
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # nothing visible before the block ends
    assert target.read_bytes() == b"new"
    assert not tmp.exists()


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_exception_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, error: type[BaseException]
) -> None:
    target = tmp_path / "manifest.json"
    target.write_bytes(b"old")
    with pytest.raises(error), atomic_replace(target) as tmp:
        tmp.write_bytes(b"half of the new")
        raise error("interrupted")
    assert target.read_bytes() == b"old"
    assert _names(tmp_path) == ["manifest.json"]


def test_an_exception_before_any_target_existed_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_replace(tmp_path / "new.bin") as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError
    assert _names(tmp_path) == []


def test_missing_folders_are_created(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c" / "engine.plan"
    atomic_write_bytes(target, bytearray(b"\x00\x01"), sync_dir=True)
    assert target.read_bytes() == b"\x00\x01"
    assert _names(target.parent) == ["engine.plan"]


def test_memoryview_data_is_written(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "f", memoryview(b"abcdef")[2:])
    assert (tmp_path / "f").read_bytes() == b"cdef"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_new_files_get_the_permissions_the_umask_gives(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "manifest.json", b"{}")
    finally:
        os.umask(previous)
    # Not 0o600 (what tempfile.mkstemp would leave): other users must be able to read a bundle.
    assert (tmp_path / "manifest.json").stat().st_mode & 0o777 == 0o644


def test_bad_input_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="bytes-like data, got str"):
        atomic_write_bytes(tmp_path / "f", "text")  # type: ignore[arg-type]
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError, match="it is a folder"):
        atomic_write_bytes(tmp_path / "folder", b"x")
    target = tmp_path / "g"
    with (
        pytest.raises(FileNotFoundError, match="removed inside the with-block"),
        atomic_replace(target) as tmp,
    ):
        tmp.unlink()
    assert not target.exists()


def test_fsync_dir_tolerates_a_missing_folder(tmp_path: Path) -> None:
    fsync_dir(tmp_path)
    fsync_dir(tmp_path / "missing")  # nothing to flush; must not raise


def test_import_loads_neither_torch_nor_numpy() -> None:
    code = textwrap.dedent(
        """
        import json, sys
        import personsearch_runtime.atomic_files
        names = ("torch", "numpy", "personsearch_runtime.atomic_files")
        print(json.dumps({name: name in sys.modules for name in names}))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == {"torch": False, "numpy": False, "personsearch_runtime.atomic_files": True}
