"""Getting this node into the swarm: the bootstrap claim, the wait for it, the join.

``membership.Membership`` decides (through ``swarm.plan``) which of these steps a pass takes;
this module carries them out against the engine and the ``<prefix>/swarm/`` records.

Bootstrap is race-free: a would-be manager claims ``<prefix>/swarm/cluster`` with
create-if-absent bound to a lease; only the winner runs ``swarm init`` and then publishes
tokens, manager addresses and the ready record (unbinding it from the lease). Everyone else
waits on a watch of that key; if the winner dies before publishing, its lease expires, the
key disappears, and the watchers claim again. A node that joined (or is a member) publishes
its own record, ``<prefix>/swarm/nodes/<node>``, which the leader maps swarm nodes by.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol

from reconciler import log
from reconciler.actuators.swarm import SwarmEngine, TokenRefused
from reconciler.actuators.swarmnodes import SWARM_PORT, LocalSwarm
from reconciler.errors import SwarmError
from reconciler.etcd.client import Etcd
from reconciler.models import Role
from reconciler.swarm import records as rec


class JoinSettings(Protocol):
    @property
    def heartbeat(self) -> float: ...
    @property
    def claim_ttl(self) -> int: ...
    @property
    def join_attempt(self) -> float: ...


class Membership(Protocol):
    """What getting into the swarm needs of ``membership.Membership`` (a protocol, so this
    module does not import it)."""

    @property
    def etcd(self) -> Etcd: ...
    @property
    def engine(self) -> SwarmEngine: ...
    @property
    def node(self) -> str: ...
    @property
    def address(self) -> str: ...
    @property
    def prefix(self) -> str: ...
    @property
    def settings(self) -> JoinSettings: ...


async def claim(m: Membership, *, init: bool) -> None:
    """Claim the bootstrap; if won, ``swarm init`` (unless ``init`` is False: the engine is
    already a swarm to adopt) and publish tokens, managers and the ready record."""
    lease = await m.etcd.lease(m.settings.claim_ttl)
    try:
        key = rec.swarm_cluster_key(m.prefix)
        claimed = rec.dumps({"phase": "claimed", "by": m.node})
        if not await m.etcd.create_if_absent(key, claimed, lease=lease):
            return  # somebody else won: the next round waits on the watch
        log.get("membership").info("won the swarm bootstrap claim", node=m.node, init=init)
        if init:
            await m.engine.init(m.address, heartbeat=m.settings.heartbeat)
        local = await m.engine.local()
        tokens = await m.engine.tokens()
        # Tokens and managers first: whoever sees "ready" can join at once.
        await m.etcd.put(rec.swarm_tokens_key(m.prefix), rec.encode_tokens(tokens))
        await m.etcd.put(rec.swarm_managers_key(m.prefix), rec.dumps([f"{m.address}:{SWARM_PORT}"]))
        # A put without the lease detaches the key from it: the record outlives us.
        await m.etcd.put(
            key,
            rec.dumps({"phase": "ready", "created_by": m.node, "cluster_id": local.cluster_id}),
        )
    finally:
        await m.etcd.revoke_lease(lease)


async def wait_cluster(m: Membership, revision: int, deadline: float) -> None:
    """Block on a watch of the cluster record until it changes (no polling)."""
    key = rec.swarm_cluster_key(m.prefix)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            watch = m.etcd.watch_prefix(key, start_revision=revision + 1)
            try:
                async for _ in watch:
                    return
            finally:
                await watch.aclose()  # type: ignore[attr-defined]


async def join(m: Membership, snap: rec.Snapshot, role: Role) -> None:
    """Join with the tokens and manager addresses of ``snap``. A token the swarm refuses
    (rotated since ``snap`` was read) is re-read from etcd and tried once more."""
    addrs = list(snap.cluster.manager_addrs)
    tokens = snap.tokens
    if tokens is None or not addrs:
        raise SwarmError("the swarm record is ready but tokens/managers are missing")
    for attempt in range(2):
        try:
            await m.engine.join(
                addrs, tokens.for_role(role), m.address, attempt_timeout=m.settings.join_attempt
            )
            break
        except TokenRefused:
            # Rotated since we read it: the current one is in etcd (the rotator writes it).
            fresh = (await rec.read(m.etcd, m.prefix)).tokens
            if attempt or fresh is None or fresh.for_role(role) == tokens.for_role(role):
                raise
            log.get("membership").info("join token was stale; retrying", node=m.node)
            tokens = fresh
    local = await m.engine.local()
    await publish_node(m, snap, local, "joined")


async def publish_node(m: Membership, snap: rec.Snapshot, local: LocalSwarm, state: str) -> None:
    """Write this node's record (engine node id, address, observed role, ``state``) if it
    changed since ``snap``; nothing while the engine has no node id, unless ``left``."""
    if not local.node_id and state != "left":
        return
    old = snap.nodes.get(m.node)
    node_id = local.node_id or (old.id if old else "")
    if not node_id:
        return
    role = local.role.value if local.role else ""
    r = rec.NodeRecord(m.node, node_id, m.address, role, state)
    await rec.put_if_changed(m.etcd, snap, m.prefix, f"nodes/{m.node}", r.encode())
