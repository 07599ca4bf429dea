"""``atomic_replace``: the target is either the old file or the whole new one, never a mix."""

from __future__ import annotations

from pathlib import Path

import pytest
from personsearch_train.atomic_files import atomic_replace, atomic_write_bytes


@pytest.mark.parametrize("sync_dir", [False, True])
def test_replace_writes_new_contents_and_leaves_no_temporary(tmp_path: Path, sync_dir: bool) -> None:
    target = tmp_path / "sub" / "file.bin"
    atomic_write_bytes(target, b"old")
    atomic_write_bytes(target, b"new contents", sync_dir=sync_dir)
    assert target.read_bytes() == b"new contents"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]


def test_failure_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="interrupted"), atomic_replace(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]
