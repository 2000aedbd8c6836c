"""What the swarm leader's agent does for the other nodes each pass.

Only the manager that is the raft leader acts (so two managers never promote or remove at
once): it publishes the reachable manager addresses and the join tokens when they differ
from etcd, maps swarm nodes to state node names through the records nodes publish, asks
``swarm.plan.leader_actions`` what to do and executes it (promote/demote wait for the
manager's view; drains are acknowledged in etcd so the departing node may leave; departed
nodes are removed after the grace period).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from reconciler import log
from reconciler.actuators.swarm import SwarmEngine
from reconciler.actuators.swarmnodes import Availability, LocalSwarm, SwarmNode, manager_addresses
from reconciler.errors import SwarmError
from reconciler.etcd.client import Etcd
from reconciler.models import Role
from reconciler.swarm import records as rec
from reconciler.swarm.plan import NodeView, Verb, leader_actions


class LeaderSettings(Protocol):
    @property
    def remove_grace(self) -> float: ...
    @property
    def role_wait(self) -> float: ...


class Membership(Protocol):
    """What the leader's work needs of ``membership.Membership`` (a protocol, so this module
    does not import it)."""

    @property
    def etcd(self) -> Etcd: ...
    @property
    def engine(self) -> SwarmEngine: ...
    @property
    def prefix(self) -> str: ...
    @property
    def settings(self) -> LeaderSettings: ...


@dataclass(frozen=True, slots=True)
class LeadResult:
    leader: bool
    managers: int
    reachable: int
    retry_in: float | None = None


def node_views(
    nodes: Sequence[SwarmNode], records: Mapping[str, rec.NodeRecord], now: float
) -> list[NodeView]:
    by_id = {r.id: name for name, r in records.items()}
    views = []
    for n in nodes:
        name, current = by_id.get(n.id, ""), True
        if not name and n.hostname in records:  # an older incarnation of a re-joined node
            name, current = n.hostname, False
        ready = n.state == "ready"
        views.append(
            NodeView(
                id=n.id,
                name=name,
                role=n.role,
                ready=ready,
                reachable=n.reachability == "reachable",
                leader=n.leader,
                drained=n.availability is Availability.DRAIN,
                down_for=0.0 if ready else max(0.0, now - n.updated_at),
                current=current,
            )
        )
    return views


async def lead(
    m: Membership,
    snap: rec.Snapshot,
    local: LocalSwarm,
    roles: Mapping[str, Role | None],
    managers_limit: int,
) -> LeadResult:
    nodes = await m.engine.nodes()
    mgrs = [n for n in nodes if n.role is Role.MANAGER]
    reachable = sum(1 for n in mgrs if n.reachability == "reachable")
    me = next((n for n in nodes if n.id == local.node_id), None)
    if me is None or not me.leader:
        return LeadResult(False, len(mgrs), reachable)
    await _publish(m, snap, nodes)
    views = node_views(nodes, snap.nodes, time.time())
    actions = leader_actions(
        views, roles, managers_limit, leaving=snap.drain, grace=m.settings.remove_grace
    )
    logger = log.get("membership")
    changed = False
    for a in actions:
        logger.info("swarm leader action", action=a.verb.value, target=a.name or a.node_id)
        try:
            if a.verb is Verb.PROMOTE or a.verb is Verb.DEMOTE:
                role = Role.MANAGER if a.verb is Verb.PROMOTE else Role.WORKER
                if a.node_id == local.node_id:  # demoting ourselves: nobody left to watch
                    await m.engine.set_role(a.node_id, role, wait=False)
                    # We can no longer list nodes; publishing the list without us wakes the
                    # new leader's agent, which then publishes its own view.
                    rest = [x for x in manager_addresses(nodes) if x != me.manager_addr]
                    await rec.put_if_changed(m.etcd, snap, m.prefix, "managers", rec.dumps(rest))
                    return LeadResult(True, len(mgrs), reachable, 1.0)
                await m.engine.set_role(a.node_id, role, within=m.settings.role_wait)
                changed = True
            elif a.verb is Verb.DRAIN:
                await m.engine.set_availability(a.node_id, Availability.DRAIN)
            elif a.verb is Verb.ACK_DRAINED:
                await rec.put_if_changed(
                    m.etcd, snap, m.prefix, f"drained/{a.name}", rec.dumps({"id": a.node_id})
                )
            elif a.verb is Verb.REMOVE:
                await m.engine.remove_node(a.node_id)
                r = snap.nodes.get(a.name)
                if r is not None and r.id == a.node_id:
                    await m.etcd.delete(rec.swarm_node_key(m.prefix, a.name))
                if snap.drained.get(a.name) == a.node_id:
                    await m.etcd.delete(rec.swarm_drained_key(m.prefix, a.name))
        except SwarmError as e:  # one node's trouble must not stop the others' changes
            logger.warning(
                "swarm leader action failed",
                action=a.verb.value,
                target=a.name or a.node_id,
                error=str(e),
            )
    await _forget_departed(m, snap, nodes, roles)
    if changed:
        nodes = await m.engine.nodes()
        await _publish(m, await rec.read(m.etcd, m.prefix), nodes)
        mgrs = [n for n in nodes if n.role is Role.MANAGER]
        reachable = sum(1 for n in mgrs if n.reachability == "reachable")
    # Departures progress without etcd events (a node going down): look again soon.
    departing = any(
        v.name and (v.name not in roles or v.name in snap.drain or not v.current) for v in views
    )
    return LeadResult(True, len(mgrs), reachable, 1.0 if departing or actions else None)


async def _forget_departed(
    m: Membership, snap: rec.Snapshot, nodes: Sequence[SwarmNode], roles: Mapping[str, Role | None]
) -> None:
    """Delete the records of nodes that are gone from the swarm and not wanted in it."""
    ids = {n.id for n in nodes}
    for name, r in snap.nodes.items():
        if r.id not in ids and (name not in roles or name in snap.drain):
            await m.etcd.delete(rec.swarm_node_key(m.prefix, name))
            if snap.drained.get(name) == r.id:
                await m.etcd.delete(rec.swarm_drained_key(m.prefix, name))


async def _publish(m: Membership, snap: rec.Snapshot, nodes: Sequence[SwarmNode]) -> None:
    addrs = manager_addresses(nodes)
    if addrs:
        await rec.put_if_changed(m.etcd, snap, m.prefix, "managers", rec.dumps(addrs))
    tokens = await m.engine.tokens()
    await rec.put_if_changed(m.etcd, snap, m.prefix, "tokens", rec.encode_tokens(tokens))
