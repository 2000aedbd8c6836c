"""The files actuator: atomic writes, removals and digests of managed files and unit files.

A write lands either completely or not at all, also across a power cut: the bytes go to a
temp file in the same directory, are fsynced, renamed over the target, and the directory is
fsynced so the rename itself is durable. A file that already holds the desired bytes and mode
is not written at all (no mtime change, nothing for inotify watchers to react to).
Blocking calls: run them in ``asyncio.to_thread`` from async code.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from enum import StrEnum
from pathlib import Path

from reconciler.models import sha256

__all__ = ["WriteResult", "digest", "remove", "write_atomic"]


class WriteResult(StrEnum):
    UNCHANGED = "unchanged"
    CREATED = "created"
    UPDATED = "updated"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _same(path: Path, content: bytes, mode: int) -> bool | None:
    """True when ``path`` holds exactly ``content`` with ``mode``; None when it does not exist."""
    try:
        st = path.stat(follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return False
    if stat.S_IMODE(st.st_mode) != mode or st.st_size != len(content):
        return False
    with path.open("rb") as f:
        return f.read() == content


def _makedirs(directory: Path) -> None:
    """Create missing parents, fsyncing each new directory's parent so the entries persist."""
    missing: list[Path] = []
    d = directory
    while not d.exists():
        missing.append(d)
        d = d.parent
    for new in reversed(missing):
        with contextlib.suppress(FileExistsError):
            new.mkdir(mode=0o755)
        _fsync_dir(new.parent)


def write_atomic(path: Path, content: bytes, mode: int) -> WriteResult:
    """Make ``path`` hold ``content`` with permission bits ``mode``, atomically."""
    mode = stat.S_IMODE(mode)
    same = _same(path, content, mode)
    if same:
        return WriteResult.UNCHANGED
    _makedirs(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fchmod(f.fileno(), mode)  # after mkstemp's 0600, and regardless of umask
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return WriteResult.CREATED if same is None else WriteResult.UPDATED


def remove(path: Path) -> bool:
    """Delete ``path`` durably; False when it was already gone."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    _fsync_dir(path.parent)
    return True


def digest(path: Path) -> str | None:
    """sha256 hex of the file's bytes (``models.sha256``), None when it does not exist."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return sha256(data)
