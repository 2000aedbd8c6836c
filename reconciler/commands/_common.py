"""Options and helpers several commands share (reading the desired tree)."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from reconciler.desired.tree import RepoTree

_SCP_URL = re.compile(r"^[\w.-]+@[\w.-]+:")


def is_url(repo: str) -> bool:
    """A remote (``scheme://`` or scp-like ``user@host:path``), not a path on this machine."""
    return "://" in repo or bool(_SCP_URL.match(repo))


def add_source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--repo",
        help="state repository: a directory, a git work tree, a bare repo or a file:// URL "
        "(default: $SWARMKEEPER_REPO, the context's repo, or the current directory)",
    )
    p.set_defaults(_source_options=True)
    p.add_argument(
        "--rev",
        default=os.environ.get("SWARMKEEPER_REV"),
        help="git revision to read (default: the working tree as it is on disk)",
    )


def resolve(args: argparse.Namespace) -> None:
    """Fill ``--repo`` when not given: ``$SWARMKEEPER_REPO``, the context, ``.``."""
    from reconciler.commands._context import pick, selected

    _, ctx = selected(args)
    args.repo = pick(args.repo, "SWARMKEEPER_REPO", ctx, "repo", ".")


def load_tree(args: argparse.Namespace) -> RepoTree:
    return open_repo(args.repo, args.rev)


def open_repo(repo: str, rev: str | None, *, branch: str | None = None) -> RepoTree:
    """Read ``--repo`` the same way in every command.

    - a directory with ``state/`` (a plain directory or a git work tree): the files on disk,
      or the commit ``rev`` of its repository;
    - a bare repository: ``rev``, default ``HEAD``;
    - a URL (``file://``, ``https://``, ``git@host:``): ``rev``, default the head of
      ``branch`` (default ``main``, as the agent), fetched into a temporary mirror.

    A revision the repository lacks is the operator's typo (exit 1), not an outage."""
    from reconciler.errors import UnknownRevision, UsageError
    from reconciler.source import read_tree

    try:
        if is_url(repo):
            return _from_url(repo, rev, branch)
        path = Path(repo)
        if not path.exists():
            raise UsageError(f"--repo {repo}: no such directory")
        bare = (path / "HEAD").is_file() and (path / "objects").is_dir()
        if rev is None and bare:
            rev = "HEAD"
        if rev is None and not (path / "state").exists():
            raise UsageError(
                f"--repo {repo}: no state/ directory, so not a state repository "
                f"(`swarmkeeper init {repo}` makes one; give --rev to read a commit)"
            )
        return read_tree(path, rev)
    except UnknownRevision as e:
        raise UsageError(f"{e}: check the name with `git -C {repo} log --oneline`") from None


def _from_url(url: str, rev: str | None, branch: str | None) -> RepoTree:
    import tempfile

    from reconciler.source import GitSource

    with tempfile.TemporaryDirectory(prefix="swarmkeeper-repo-") as tmp:
        src = GitSource(url, branch or "main", Path(tmp) / "git")
        src.ensure()
        sha = src.ensure_commit(rev) if rev else src.branch_head()
        return src.tree(sha)
