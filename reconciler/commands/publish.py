"""``swarmkeeper publish REV``: make a commit the cluster's desired revision.

Resolves REV in the state repository (``--repo``, default the current directory) to a full
commit sha, validates that commit's tree exactly as every agent will (a bad commit exits 1
listing every ``path:line:`` problem and publishes nothing), then hands it to the one
publish path (``reconciler.revisions.publish``): the commit's ``cluster.yaml`` prefix must be the
``--prefix`` in use, and it must descend from the current desired revision unless
``--allow-rollback`` (which is recorded in etcd). The same transaction stores the commit's
artifact (its state/, units/ and files/ plus the raw commit object:
``<prefix>/revisions/<sha>/``), which agents render from without git. A commit that cannot
travel as an artifact is still published and agents fetch it from their git remote, so
push first.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import TYPE_CHECKING

from reconciler.commands._etcd import (
    add_etcd_options,
    operator,
    prefix_of,
    run_with_etcd,
    short,
)
from reconciler.commands._output import print_json, wants_json
from reconciler.errors import UsageError

if TYPE_CHECKING:
    from reconciler.etcd.client import Etcd

NAME = "publish"
HELP = "validate a commit of the state repo and publish it as the desired revision"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("rev", metavar="REV", help="commit, branch or tag of the state repository")
    p.add_argument(
        "--repo",
        help="the state repository: a git work tree, a bare repo or a URL "
        "(default: $SWARMKEEPER_REPO, the context's repo, or .)",
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
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(_source_options=True)
    add_etcd_options(p, prefix_default=None)


def run(args: argparse.Namespace) -> int:
    from reconciler.commands._common import open_repo
    from reconciler.desired import load_state

    if args.keep_artifacts < 0:
        raise UsageError(f"--keep-artifacts must be >= 0, not {args.keep_artifacts}")
    tree = open_repo(args.repo, args.rev)
    rev = tree.revision
    if len(rev) != 40:
        raise UsageError(f"{args.rev!r} did not resolve to a commit (got {rev!r})")
    load_state(tree)  # every problem before etcd is even asked (publish_revision checks too)
    prefix = prefix_of(args)  # the etcd prefix in use, never guessed from the commit

    with contextlib.ExitStack() as stack:
        local = _local_repo(args.repo, rev, stack)

        async def body(etcd: Etcd) -> int:
            from reconciler.revisions.publish import publish_revision
            from reconciler.source import is_ancestor

            done = await publish_revision(
                etcd, prefix, tree, actor=operator(), allow_rollback=args.allow_rollback,
                repo=local, keep=args.keep_artifacts,
                ancestry=lambda old, new: is_ancestor(local, old, new),
            )  # fmt: skip
            if wants_json(args):
                print_json("Publish", {"prefix": prefix, "revision": rev,
                                       "previous": done.previous, "changed": done.changed,
                                       "rollback": done.rollback, "artifact": done.artifact})  # fmt: skip
            elif not done.changed:
                print(
                    f"{short(rev)} was already the desired revision of {prefix} ({done.artifact})"
                )
            else:
                was = short(done.previous) if done.previous else "none"
                back = ", a rollback, recorded" if done.rollback else ""
                print(f"published {rev} to {prefix} (was {was}{back}; {done.artifact})")
            return 0

        return run_with_etcd(args, body)


def _local_repo(repo: str, rev: str, stack: contextlib.ExitStack) -> str:
    """A local repository holding ``rev``: ``repo`` itself, or for a URL a temporary mirror
    (the ancestry check and the artifact both need one)."""
    from reconciler.commands._common import is_url

    if not is_url(repo):
        return repo
    import tempfile
    from pathlib import Path

    from reconciler.source import GitSource

    tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="swarmkeeper-repo-"))
    src = GitSource(repo, "main", Path(tmp) / "git")
    src.ensure()
    src.ensure_commit(rev)
    return str(src.dir)
