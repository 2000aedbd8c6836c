"""``swarmkeeper publish REV``: make a commit the cluster's desired revision.

Resolves REV in the state repository (``--repo``, default the current directory) to a full
commit sha, validates that commit's tree exactly as every agent will (a bad commit exits 1
listing every ``path:line:`` problem and publishes nothing), then hands it to the one
publish path (``reconciler.publishing``): the commit's ``cluster.yaml`` prefix must be the
``--prefix`` in use, and it must descend from the current desired revision unless
``--allow-rollback`` (which is recorded in etcd). The same transaction stores the commit's
artifact (its state/, units/ and files/ plus the raw commit object:
``<prefix>/revisions/<sha>/``), which agents render from without git. A commit that cannot
travel as an artifact is still published and agents fetch it from their git remote, so
push first.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from reconciler.commands._etcd import (
    add_etcd_options,
    operator,
    prefix_of,
    run_with_etcd,
    short,
)
from reconciler.errors import UsageError

if TYPE_CHECKING:
    from reconciler.etcd.client import Etcd

NAME = "publish"
HELP = "validate a commit of the state repo and publish it as the desired revision"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("rev", metavar="REV", help="commit, branch or tag of the state repository")
    p.add_argument(
        "--repo",
        default=os.environ.get("SWARMKEEPER_REPO", "."),
        help="the state repository (default: current directory)",
    )
    p.add_argument(
        "--allow-rollback",
        action="store_true",
        help="allow a commit that does not descend from the desired revision "
        "(recorded in etcd: who, when, from, to)",
    )
    p.add_argument(
        "--keep-artifacts",
        type=int,
        default=5,
        metavar="K",
        help="revision artifacts kept in etcd, this one included (0: store none)",
    )
    add_etcd_options(p, prefix_default=None)


def run(args: argparse.Namespace) -> int:
    from reconciler.desired import load_state
    from reconciler.publishing import publish_revision
    from reconciler.source import is_ancestor, read_tree

    if args.keep_artifacts < 0:
        raise UsageError(f"--keep-artifacts must be >= 0, not {args.keep_artifacts}")
    tree = read_tree(args.repo, args.rev)
    rev = tree.revision
    if len(rev) != 40:
        raise UsageError(f"{args.rev!r} did not resolve to a commit (got {rev!r})")
    load_state(tree)  # every problem before etcd is even asked (publish_revision checks too)
    prefix = prefix_of(args)  # the etcd prefix in use, never guessed from the commit

    async def body(etcd: Etcd) -> int:
        done = await publish_revision(
            etcd, prefix, tree, actor=operator(), allow_rollback=args.allow_rollback,
            repo=args.repo, keep=args.keep_artifacts,
            ancestry=lambda old, new: is_ancestor(args.repo, old, new),
        )  # fmt: skip
        if not done.changed:
            print(f"{short(rev)} was already the desired revision of {prefix} ({done.artifact})")
        else:
            was = short(done.previous) if done.previous else "none"
            back = ", a rollback, recorded" if done.rollback else ""
            print(f"published {rev} to {prefix} (was {was}{back}; {done.artifact})")
        return 0

    return run_with_etcd(args, body)
