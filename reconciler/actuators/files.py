"""The files actuator: atomic writes, removals and digests of managed files and unit files.

A write lands either completely or not at all, also across a power cut: the bytes go to a
temp file in the same directory, are fsynced, renamed over the target, and the directory is
fsynced so the rename itself is durable. A file that already holds the desired bytes and mode
is not written at all (no mtime change, nothing for inotify watchers to react to).
Blocking calls: run them in ``asyncio.to_thread`` from async code.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path

from reconciler.errors import NodeFault
from reconciler.models import sha256

__all__ = [
    "Digests", "Staged", "WriteResult", "digest", "node_fault", "remove", "stage", "write_atomic",
]  # fmt: skip

# What the node, not the revision, is to blame for: a full or read-only disk, an I/O error,
# permissions taken away. Retrying later can succeed; rolling back would hit the same wall.
NODE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOMEM}
)


def node_fault(e: OSError, what: str) -> NodeFault | None:
    """A ``NodeFault`` for an OSError the node is to blame for, else None."""
    if e.errno in NODE_ERRNOS:
        return NodeFault(
            f"{what}: {e.strerror or e} (errno {errno.errorcode.get(e.errno or 0, e.errno)})"
        )
    return None


# A file changed this shortly before we hashed it may change again within the same
# timestamp tick, unseen; 2 s covers filesystems with one-second timestamps.
_RACY_NS = 2_000_000_000


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


class Staged:
    """A write prepared by ``stage``: the bytes are durable in a temp file next to ``path``;
    ``commit`` renames it into place (and makes that durable), ``discard`` drops it."""

    __slots__ = ("_tmp", "path", "result")

    def __init__(self, path: Path, result: WriteResult, tmp: str | None) -> None:
        self.path = path
        self.result = result
        self._tmp = tmp

    def commit(self) -> WriteResult:
        if self._tmp is not None:
            try:
                os.replace(self._tmp, self.path)
            except BaseException:
                self.discard()
                raise
            self._tmp = None
            _fsync_dir(self.path.parent)
        return self.result

    def discard(self) -> None:
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
            self._tmp = None


def stage(path: Path, content: bytes, mode: int) -> Staged:
    """The slow half of ``write_atomic`` (write and fsync), with nothing visible at ``path``.

    Lets a caller do it while it waits anyway and commit only once it knows it should.
    """
    mode = stat.S_IMODE(mode)
    same = _same(path, content, mode)
    if same:
        return Staged(path, WriteResult.UNCHANGED, None)
    _makedirs(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fchmod(f.fileno(), mode)  # after mkstemp's 0600, and regardless of umask
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return Staged(path, WriteResult.CREATED if same is None else WriteResult.UPDATED, tmp)


def write_atomic(path: Path, content: bytes, mode: int) -> WriteResult:
    """Make ``path`` hold ``content`` with permission bits ``mode``, atomically."""
    return stage(path, content, mode).commit()


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
    except (FileNotFoundError, ValueError):
        return None
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            return None
        raise
    return sha256(data)


def _key(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@contextlib.contextmanager
def _no_such_file(path: Path) -> Iterator[None]:
    """FileNotFoundError for a path no file can have (a NUL byte, a name past NAME_MAX)."""
    try:
        yield
    except ValueError:  # an embedded NUL: os.stat refuses it before asking the kernel
        raise FileNotFoundError(errno.ENOENT, "no such file", str(path)) from None
    except OSError as e:
        if e.errno in (errno.ENAMETOOLONG, errno.ELOOP):
            raise FileNotFoundError(errno.ENOENT, "no such file", str(path)) from None
        raise


class Digests:
    """sha256 and mode of files, hashed again only when their stat changed.

    A file whose device, inode, size, mtime and ctime are those seen when it was hashed
    holds the same bytes: every write changes mtime and ctime, a rename over it changes the
    inode, and user space cannot set ctime. Only within one timestamp tick could a change
    go unseen (git's "racy clean" files), so a file is remembered only if its ctime was
    already ``_RACY_NS`` old when it was hashed; one written since is simply hashed again.
    An observe of 50 unit files: 50 stats (0.6 ms) instead of 50 reads (2.3 ms).
    """

    def __init__(self) -> None:
        self._seen: dict[Path, tuple[tuple[int, ...], str]] = {}

    def read(self, path: Path) -> tuple[str, int]:
        """(sha256 hex, permission bits) of ``path``; raises OSError as ``open`` would, and
        FileNotFoundError for a path no file can have (a NUL byte, a name past NAME_MAX)."""
        seen, st = self.lookup(path)
        return seen if seen is not None else self.hash(path, st)

    def lookup(self, path: Path) -> tuple[tuple[str, int] | None, os.stat_result]:
        """``path``'s stat, with its (sha256 hex, permission bits) if they are known for that
        stat (None: ``hash`` it). Raises as ``read`` does."""
        with _no_such_file(path):
            st = os.stat(path)
        hit = self._seen.get(path)
        if hit is not None and hit[0] == _key(st):
            return (hit[1], stat.S_IMODE(st.st_mode)), st
        return None, st

    def hash(self, path: Path, st: os.stat_result) -> tuple[str, int]:
        """Hash ``path``, whose stat ``lookup`` just returned, and remember it for that stat."""
        now = time.time_ns()
        with _no_such_file(path), path.open("rb") as f:
            d = sha256(f.read())
        if stat.S_ISREG(st.st_mode) and st.st_ctime_ns < now - _RACY_NS:
            self._seen[path] = (_key(st), d)
        else:
            self._seen.pop(path, None)
        return d, stat.S_IMODE(st.st_mode)

    def keep(self, paths: set[Path]) -> None:
        """Forget every other path (units and files no longer looked at)."""
        for p in [p for p in self._seen if p not in paths]:
            self._seen.pop(p, None)
