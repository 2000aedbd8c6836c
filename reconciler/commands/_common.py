"""Options and helpers several commands share (reading the desired tree)."""

from __future__ import annotations

import argparse
import os

from reconciler.desired.tree import RepoTree


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
    from reconciler.source import read_tree

    return read_tree(args.repo, args.rev)
