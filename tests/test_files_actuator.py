"""The files actuator on a real filesystem: results, modes, no-op writes, atomicity."""

from __future__ import annotations

import hashlib
import os
import stat
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.actuators import files
from reconciler.actuators.files import WriteResult, digest, remove, write_atomic


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_create_update_unchanged(tmp_path: Path) -> None:
    target = tmp_path / "etc/swarmkeeper/node.env"
    assert write_atomic(target, b"A=1\n", 0o640) is WriteResult.CREATED
    assert target.read_bytes() == b"A=1\n"
    assert _mode(target) == 0o640
    assert write_atomic(target, b"A=1\n", 0o640) is WriteResult.UNCHANGED
    assert write_atomic(target, b"A=2\n", 0o640) is WriteResult.UPDATED
    assert target.read_bytes() == b"A=2\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["node.env"]  # no temp left


def test_a_staged_write_is_invisible_until_committed_and_discard_leaves_nothing(
    tmp_path: Path,
) -> None:
    target = tmp_path / "inventory.json"
    write_atomic(target, b"old", 0o600)
    staged = files.stage(target, b"new", 0o600)
    assert staged.result is WriteResult.UPDATED
    assert target.read_bytes() == b"old"  # written and fsynced, but not in place
    assert staged.commit() is WriteResult.UPDATED
    assert target.read_bytes() == b"new" and _mode(target) == 0o600
    dropped = files.stage(target, b"never", 0o600)
    dropped.discard()
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inventory.json"]  # no temp left
    assert files.stage(target, b"new", 0o600).commit() is WriteResult.UNCHANGED


def test_unchanged_does_not_touch_the_file(tmp_path: Path) -> None:
    target = tmp_path / "u.service"
    write_atomic(target, b"[Service]\n", 0o644)
    os.utime(target, ns=(1_000_000_000, 1_000_000_000))
    before = target.stat()
    assert write_atomic(target, b"[Service]\n", 0o644) is WriteResult.UNCHANGED
    after = target.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@pytest.mark.parametrize(
    ("old", "old_mode", "new", "new_mode", "expected"),
    [
        (b"x", 0o644, b"x", 0o600, WriteResult.UPDATED),  # mode only
        (b"x", 0o644, b"y", 0o644, WriteResult.UPDATED),  # same size, other bytes
        (b"x", 0o644, b"xx", 0o644, WriteResult.UPDATED),  # longer
        (b"", 0o644, b"", 0o644, WriteResult.UNCHANGED),  # empty file
        (b"x", 0o755, b"x", 0o100755, WriteResult.UNCHANGED),  # file-type bits ignored
    ],
)
def test_write_result_table(
    tmp_path: Path, old: bytes, old_mode: int, new: bytes, new_mode: int, expected: WriteResult
) -> None:
    target = tmp_path / "f"
    write_atomic(target, old, old_mode)
    assert write_atomic(target, new, new_mode) is expected
    assert target.read_bytes() == new
    assert _mode(target) == stat.S_IMODE(new_mode)


def test_mode_is_exact_regardless_of_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_atomic(tmp_path / "f", b"x", 0o755)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "f") == 0o755


def test_symlink_is_replaced_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"keep")
    link = tmp_path / "link"
    link.symlink_to(elsewhere)
    assert write_atomic(link, b"keep", 0o644) is WriteResult.UPDATED
    assert not link.is_symlink()
    assert elsewhere.read_bytes() == b"keep"


def test_failed_write_leaves_old_content_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f"
    write_atomic(target, b"old", 0o644)

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(files.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        write_atomic(target, b"new", 0o644)
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_remove_and_digest(tmp_path: Path) -> None:
    target = tmp_path / "f"
    assert digest(target) is None
    write_atomic(target, b"hello", 0o600)
    assert digest(target) == hashlib.sha256(b"hello").hexdigest()
    assert remove(target) is True
    assert not target.exists()
    assert remove(target) is False
    assert digest(target) is None


@settings(max_examples=25, deadline=None)
@given(
    contents=st.lists(
        st.tuples(st.binary(max_size=300), st.sampled_from([0o600, 0o640, 0o644, 0o755])),
        min_size=1,
        max_size=6,
    )
)
def test_any_sequence_of_writes_ends_with_the_last(
    tmp_path_factory: pytest.TempPathFactory, contents: list[tuple[bytes, int]]
) -> None:
    target = tmp_path_factory.mktemp("h") / "d/f"
    previous: tuple[bytes, int] | None = None
    for data, mode in contents:
        result = write_atomic(target, data, mode)
        if previous is None:
            assert result is WriteResult.CREATED
        elif previous == (data, mode):
            assert result is WriteResult.UNCHANGED
        else:
            assert result is WriteResult.UPDATED
        previous = (data, mode)
    assert target.read_bytes() == contents[-1][0]
    assert _mode(target) == contents[-1][1]
    assert digest(target) == hashlib.sha256(contents[-1][0]).hexdigest()
    assert [p.name for p in target.parent.iterdir()] == ["f"]


def test_digests_hash_a_file_again_only_when_its_stat_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "u.service"
    target.write_bytes(b"AAAA")
    seen = files.Digests()
    # just written: within the racy window it is hashed on every read, so a same-size edit
    # in the same timestamp tick is still seen
    assert seen.read(target) == (hashlib.sha256(b"AAAA").hexdigest(), 0o644)
    target.write_bytes(b"BBBB")
    assert seen.read(target)[0] == hashlib.sha256(b"BBBB").hexdigest()
    monkeypatch.setattr(files, "_RACY_NS", 0)  # as if it had been written long ago
    assert seen.read(target)[0] == hashlib.sha256(b"BBBB").hexdigest()

    def no_open(*_: object, **__: object) -> None:
        raise AssertionError("hashed again although nothing changed")

    with monkeypatch.context() as m:
        m.setattr(Path, "open", no_open)
        assert seen.read(target)[0] == hashlib.sha256(b"BBBB").hexdigest()
    time.sleep(0.05)  # the racy window shrunk to 0 above: leave the timestamp tick
    with target.open("r+b") as f:  # in place, same size: ctime moves on
        f.write(b"CCCC")
    assert seen.read(target)[0] == hashlib.sha256(b"CCCC").hexdigest()
    replacement = tmp_path / "new"
    replacement.write_bytes(b"DDDD")
    os.replace(replacement, target)  # renamed over it: another inode
    assert seen.read(target)[0] == hashlib.sha256(b"DDDD").hexdigest()
    target.chmod(0o600)
    assert seen.read(target)[1] == 0o600
    target.unlink()
    with pytest.raises(FileNotFoundError):
        seen.read(target)
