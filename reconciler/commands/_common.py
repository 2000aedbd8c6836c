"""Options and helpers several commands share (reading the desired tree)."""

from __future__ import annotations

import argparse
import os

from reconciler.desired.tree import RepoTree


def add_source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--repo",
        default=os.environ.get("SWARMKEEPER_REPO", "."),
        help="state repository: a directory or git repo (default: current directory)",
    )
    p.add_argument(
        "--rev",
        default=os.environ.get("SWARMKEEPER_REV"),
        help="git revision to read (default: the working tree as it is on disk)",
    )


def load_tree(args: argparse.Namespace) -> RepoTree:
    from reconciler.source import read_tree

    return read_tree(args.repo, args.rev)
