"""Moving the desired revision: the one code path of ``swarmkeeper publish`` and the webhook.

``publish_revision`` is the only writer of ``<prefix>/desired/revision``. Before it writes it
checks, in this order, what every caller must get the same way:

1. the commit's ``state/cluster.yaml`` prefix is the etcd prefix in use (a commit for one
   cluster is never published to another one, and an agent rejects it the same way);
2. the desired revision only moves forward: the commit must descend from the current one,
   unless the operator says ``allow_rollback``, which is recorded under
   ``<prefix>/desired/rollbacks/<when>`` (who, when, from, to) in the same transaction;
3. the write is one transaction that compares the revision it read (two publishers racing
   cannot silently overwrite each other), stores the commit's revision artifact
   (``reconciler.revisions.store``: nodes render from it without git) and moves
   ``desired/revision``.

Before all of that the tree is validated exactly as every agent will (``load_state``: a bad
commit raises ``InvalidDesiredState`` with every problem). A webhook delivery id is claimed
(on a lease, so ids expire) right before the write: a replayed delivery is refused even when
its commit would still be a descendant.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aetcd import rpc

from reconciler import keys
from reconciler.errors import SwarmkeeperError
from reconciler.revisions.store import DEFAULT_KEEP, publish_commit
from reconciler.status import utcnow

if TYPE_CHECKING:
    from reconciler.desired.tree import RepoTree
    from reconciler.desired.validate import State
    from reconciler.etcd import Etcd

# (current desired sha, new sha) -> new descends from current; None: current is unknown
Ancestry = Callable[[str, str], bool | None]
DELIVERY_TTL = 7 * 24 * 3600  # GitHub redelivers for days; an older replay is not a descendant


class PublishRefused(SwarmkeeperError):
    """The commit may not become the desired revision (wrong cluster, a rollback, a replay)."""

    def __init__(self, message: str, *, replay: bool = False) -> None:
        super().__init__(message)
        self.replay = replay


@dataclass(frozen=True, slots=True)
class Published:
    revision: str
    previous: str  # "" when nothing was published before
    rollback: bool = False  # moved backwards, with allow_rollback
    artifact: str = ""  # what happened to the revision artifact, in words

    @property
    def changed(self) -> bool:
        return self.previous != self.revision


def prefix_mismatch(state: State, prefix: str) -> str:
    """Why ``state`` does not belong under the etcd ``prefix`` in use; "" when it does."""
    declared = keys.norm(state.cluster.prefix)
    if declared == keys.norm(prefix):
        return ""
    return (
        f"state/cluster.yaml: prefix is {declared}, but the etcd prefix in use is "
        f"{keys.norm(prefix)}: use --prefix {declared} or change prefix: in cluster.yaml"
    )


async def publish_revision(
    etcd: Etcd,
    prefix: str,
    tree: RepoTree,
    *,
    ancestry: Ancestry,
    actor: str,
    repo: str | Path,
    keep: int = DEFAULT_KEEP,
    allow_rollback: bool = False,
    delivery: str = "",
) -> Published:
    """Validate ``tree`` and make its commit the desired revision; see the module doc."""
    from reconciler.desired import load_state

    state = await asyncio.to_thread(load_state, tree)  # InvalidDesiredState: every problem
    rev = str(tree.revision)
    why = prefix_mismatch(state, prefix)
    if why:
        raise PublishRefused(why)
    key = keys.desired_revision(prefix)
    current = await etcd.get(key)
    old = current.value.decode(errors="replace") if current else ""
    rollback = False
    if old and old != rev:
        forward = ancestry(old, rev)
        if not forward:
            if not allow_rollback:
                what = "does not descend from" if forward is False else "cannot be compared with"
                raise PublishRefused(
                    f"{rev[:12]} {what} the desired revision {old[:12]}"
                    + ("" if forward is False else " (it is not in this repository: fetch)")
                    + ": the desired revision only moves forward; pass --allow-rollback "
                    "to go back on purpose"
                )
            rollback = True
    if delivery:
        lease = await etcd.lease(DELIVERY_TTL, keep_alive=False)
        claim = json.dumps({"revision": rev, "at": utcnow()})
        if not await etcd.create_if_absent(
            keys.webhook_delivery(prefix, delivery), claim, lease=lease
        ):
            raise PublishRefused(f"delivery {delivery} was already handled", replay=True)
    also: dict[str, str] = {}
    if rollback:
        at = utcnow()
        record = {"by": actor, "at": at, "from": old, "to": rev}
        also[keys.desired_rollback(prefix, at)] = json.dumps(record)
    unchanged = rpc.Compare(key=key.encode(), target=rpc.Compare.MOD, result=rpc.Compare.EQUAL,
                            mod_revision=current.mod_revision if current else 0)  # fmt: skip
    written, note = await publish_commit(
        etcd, prefix, repo, rev, keep=keep, compare=[unchanged], also=also
    )
    if not written:
        now = await etcd.get(key)
        if now is None or now.value.decode(errors="replace") != rev:  # not a lost answer
            raise PublishRefused(
                f"the desired revision of {keys.norm(prefix)} changed while publishing: run again"
            )
    return Published(rev, old, rollback, note)
