"""Where desired state comes from: a directory, or a commit of a git repository.

``read_tree`` reads only ``state/``, ``units/`` and ``files/`` into a ``RepoTree``; a commit
is read straight from the object database (no working tree, no checkout), so the agent can
render any revision while the operator's clone stays untouched. ``GitSource`` keeps a bare
mirror of the remote under the agent's state dir and fetches only what it lacks. Everything
here blocks: async callers wrap it in ``asyncio.to_thread``.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from reconciler.desired.tree import TRACKED_DIRS, RepoTree
from reconciler.errors import SourceError, UsageError
from reconciler.models import WORKTREE, Revision

MAX_TREE_BYTES = 64 * 1024 * 1024  # a state repo is small; refuse to load a huge one


def read_tree(repo: str | Path, rev: str | None = None) -> RepoTree:
    """The tree of ``rev`` in the git repository ``repo``, or the directory itself when
    ``rev`` is None."""
    if rev is None:
        return read_dir(Path(repo))
    import git  # GitPython is heavy; only revision reads need it

    try:
        r = git.Repo(str(repo))
    except (git.NoSuchPathError, git.InvalidGitRepositoryError) as e:
        raise UsageError(f"{repo} is not a git repository: {e}") from None
    try:
        return read_commit(r, rev)
    finally:
        r.close()


def read_commit(r: object, rev: str) -> RepoTree:
    """Read ``rev`` from an open ``git.Repo``."""
    import git

    assert isinstance(r, git.Repo)
    try:
        commit = r.commit(rev)
    except (git.BadName, ValueError, git.GitCommandError) as e:
        raise SourceError(f"revision {rev!r} not found: {e}") from None
    files: dict[str, bytes] = {}
    links: dict[str, str] = {}
    total = 0
    for top in TRACKED_DIRS:
        try:
            sub = commit.tree / top
        except KeyError:
            continue
        for item in sub.traverse():
            if item.type != "blob":
                continue
            data = item.data_stream.read()
            total += len(data)
            if total > MAX_TREE_BYTES:
                raise SourceError(f"{rev}: state/units/files exceed {MAX_TREE_BYTES} bytes")
            if item.mode == 0o120000:
                links[item.path] = data.decode("utf-8", "replace")
            else:
                files[item.path] = data
    return RepoTree(files=files, links=links, revision=Revision(commit.hexsha))


def read_dir(root: Path) -> RepoTree:
    """The tracked dirs of a plain directory (symlinks kept as links, never followed)."""
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory")
    files: dict[str, bytes] = {}
    links: dict[str, str] = {}
    total = 0
    for top in TRACKED_DIRS:
        base = root / top
        if base.is_symlink():
            links[top] = os.readlink(base)
            continue
        if not base.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in [
                *sorted(filenames),
                *[d for d in dirnames if (Path(dirpath) / d).is_symlink()],
            ]:
                full = Path(dirpath) / name
                rel = full.relative_to(root).as_posix()
                st = full.lstat()
                if stat.S_ISLNK(st.st_mode):
                    links[rel] = os.readlink(full)
                elif stat.S_ISREG(st.st_mode):
                    total += st.st_size
                    if total > MAX_TREE_BYTES:
                        raise UsageError(f"{root}: state/units/files exceed {MAX_TREE_BYTES} bytes")
                    files[rel] = full.read_bytes()
    return RepoTree(files=files, links=links, revision=WORKTREE)


def head_revision(repo: str | Path) -> str | None:
    """The commit HEAD points at, or None outside a git repository (cheap: no GitPython)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--verify", "-q", "HEAD^{commit}"],
            capture_output=True, text=True, check=False, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None
