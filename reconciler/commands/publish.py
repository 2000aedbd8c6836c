"""``swarmkeeper publish REV``: make a commit the cluster's desired revision.

Resolves REV in the state repository (``--repo``, default the current directory) to a full
commit sha, validates that commit's tree exactly as every agent will (a bad commit exits 1
listing every ``path:line:`` problem and publishes nothing), then writes it to
``<prefix>/desired/revision``, together with the commit's artifact (its state/, units/ and
files/ plus the raw commit object: ``<prefix>/revisions/<sha>/``), which agents render
from without git. A commit that cannot travel as an artifact is still published and agents
fetch it from their git remote, so push first. The prefix defaults to the one the commit's
``cluster.yaml`` declares.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from reconciler.commands._etcd import add_etcd_options, prefix_of, run_with_etcd, short
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
        "--keep-artifacts",
        type=int,
        default=5,
        metavar="K",
        help="revision artifacts kept in etcd, this one included (0: store none)",
    )
    add_etcd_options(p, prefix_default=None)


def run(args: argparse.Namespace) -> int:
    from reconciler import keys
    from reconciler.desired import load_state
    from reconciler.source import read_tree

    if args.keep_artifacts < 0:
        raise UsageError(f"--keep-artifacts must be >= 0, not {args.keep_artifacts}")
    tree = read_tree(args.repo, args.rev)
    rev = tree.revision
    if len(rev) != 40:
        raise UsageError(f"{args.rev!r} did not resolve to a commit (got {rev!r})")
    state = load_state(tree)  # raises InvalidDesiredState with every problem
    if args.prefix is None:
        args.prefix = state.cluster.prefix
    prefix = prefix_of(args)
    if keys.norm(state.cluster.prefix) != prefix:
        raise UsageError(
            f"commit {short(rev)} belongs to prefix {state.cluster.prefix} "
            f"(state/cluster.yaml), not {prefix}: refusing to publish it to another cluster"
        )

    async def body(etcd: Etcd) -> int:
        from reconciler.artifact_store import publish_commit

        key = keys.desired_revision(prefix)
        before = await etcd.get(key)
        _, note = await publish_commit(etcd, prefix, args.repo, rev, keep=args.keep_artifacts)
        old = before.value.decode() if before else ""
        if old == rev:
            print(f"{short(rev)} was already the desired revision of {prefix} ({note})")
        else:
            print(f"published {rev} to {prefix} (was {short(old) if old else 'none'}; {note})")
        return 0

    return run_with_etcd(args, body)
