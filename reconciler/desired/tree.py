"""A repository tree as plain data: the input of validation and rendering.

``RepoTree`` holds the bytes of every regular file under ``state/``, ``units/`` and
``files/`` of one revision, and symlinks as their targets. It is built by
``reconciler.source`` (from a git commit or a directory); everything here is pure.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field

from reconciler.models import WORKTREE, Revision

TRACKED_DIRS = ("state", "units", "files")
MAX_LINK_HOPS = 8
MAX_TREE_BYTES = 64 * 1024 * 1024  # a state repo is small; refuse to load a huge one
MAX_TREE_FILES = 10_000


@dataclass(frozen=True, slots=True)
class RepoTree:
    """Files (path -> bytes) and symlinks (path -> target) of one revision, repo-relative."""

    files: Mapping[str, bytes]
    links: Mapping[str, str] = field(default_factory=dict)
    revision: Revision = WORKTREE

    def resolve(self, path: str) -> tuple[str | None, str]:
        """Follow symlinks inside the tree. Returns (real path, "") or (None, why not)."""
        current = path
        for _ in range(MAX_LINK_HOPS):
            if current in self.files:
                return current, ""
            # a link may sit on any parent directory too
            parts = current.split("/")
            for i in range(len(parts), 0, -1):
                head = "/".join(parts[:i])
                if head in self.links:
                    target = self.links[head]
                    if target.startswith("/"):
                        return None, f"{path} is a symlink to an absolute path ({target})"
                    joined = posixpath.normpath(
                        posixpath.join(posixpath.dirname(head), target, *parts[i:])
                    )
                    if joined == ".." or joined.startswith("../"):
                        return None, f"{path} is a symlink that leaves the repository"
                    current = joined
                    break
            else:
                return None, f"{path} does not exist"
        return None, f"{path}: too many levels of symlinks"

    def read(self, path: str) -> bytes | None:
        real, _ = self.resolve(path)
        return None if real is None else self.files[real]

    def listdir(self, directory: str) -> list[str]:
        """Names directly inside ``directory`` (files and links), sorted."""
        prefix = directory.rstrip("/") + "/"
        names = {
            p[len(prefix) :].split("/", 1)[0]
            for p in (*self.files, *self.links)
            if p.startswith(prefix)
        }
        return sorted(names)
