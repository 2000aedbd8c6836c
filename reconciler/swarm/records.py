"""The swarm's records in etcd under ``<prefix>/swarm/``: key names, JSON codecs, and one
snapshot read of them all.

Keys (see docs/etcd-keys.md, "Swarm membership")::

    <prefix>/swarm/cluster          {"phase": "claimed", "by": NODE}  (lease-bound) or
                                    {"phase": "ready", "cluster_id": ID, "created_by": NODE}
    <prefix>/swarm/managers         ["10.0.0.1:2377", ...]  reachable managers, leader first
    <prefix>/swarm/tokens           {"worker": T, "manager": T}   SECRET: protect with auth/TLS
    <prefix>/swarm/nodes/<node>     {"id": ID, "addr": IP, "role": R, "state": S}
    <prefix>/swarm/drain/<node>     operator asked the node to leave (`swarmkeeper drain`)
    <prefix>/swarm/drained/<node>   {"id": ID}: the leader drained it; it may leave now

Writers compare before writing, so an unchanged swarm writes nothing (every write wakes
every agent's watch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from reconciler import keys
from reconciler.actuators.swarmnodes import JoinTokens
from reconciler.etcd.client import KV, Etcd
from reconciler.swarm.plan import ClusterRecord, Phase

# Key names come from the shared schema (reconciler.keys); short aliases for this module.
swarm_prefix = keys.swarm_prefix
swarm_cluster_key = keys.swarm_cluster
swarm_managers_key = keys.swarm_managers
swarm_tokens_key = keys.swarm_tokens
swarm_node_key = keys.swarm_node
swarm_drained_key = keys.swarm_drained


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _loads(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class NodeRecord:
    name: str
    id: str
    addr: str = ""
    role: str = ""
    state: str = ""

    def encode(self) -> str:
        return dumps({"id": self.id, "addr": self.addr, "role": self.role, "state": self.state})


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything under ``<prefix>/swarm/`` at one revision."""

    revision: int
    cluster: ClusterRecord
    cluster_kv: KV | None = None
    tokens: JoinTokens | None = None
    raw: dict[str, bytes] = field(default_factory=dict)  # key suffix -> value
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    drain: frozenset[str] = frozenset()
    drained: dict[str, str] = field(default_factory=dict)  # name -> node id acknowledged


async def read(etcd: Etcd, prefix: str) -> Snapshot:
    base = swarm_prefix(prefix)
    kvs, rev = await etcd.get_prefix(base)
    raw = {kv.key.decode().removeprefix(base): kv.value for kv in kvs}
    cluster_kv = next((kv for kv in kvs if kv.key.decode() == base + "cluster"), None)
    managers = _loads(raw.get("managers", b"[]"))
    managers_t = tuple(str(a) for a in managers) if isinstance(managers, list) else ()
    c = _loads(raw["cluster"]) if "cluster" in raw else None
    if not isinstance(c, dict):
        cluster = ClusterRecord(Phase.ABSENT, manager_addrs=managers_t)
    elif c.get("phase") == "ready":
        cluster = ClusterRecord(
            Phase.READY,
            cluster_id=str(c.get("cluster_id", "")),
            claimed_by=str(c.get("created_by", "")),
            manager_addrs=managers_t,
        )
    else:
        cluster = ClusterRecord(
            Phase.CLAIMED, claimed_by=str(c.get("by", "")), manager_addrs=managers_t
        )
    t = _loads(raw.get("tokens", b"{}"))
    tokens = (
        JoinTokens(worker=str(t.get("worker", "")), manager=str(t.get("manager", "")))
        if isinstance(t, dict) and t.get("worker")
        else None
    )
    nodes: dict[str, NodeRecord] = {}
    drain: set[str] = set()
    drained: dict[str, str] = {}
    for suffix, value in raw.items():
        kind, _, name = suffix.partition("/")
        v = _loads(value)
        if kind == "nodes" and isinstance(v, dict) and v.get("id"):
            nodes[name] = NodeRecord(
                name,
                str(v["id"]),
                str(v.get("addr", "")),
                str(v.get("role", "")),
                str(v.get("state", "")),
            )
        elif kind == "drain":
            drain.add(name)
        elif kind == "drained" and isinstance(v, dict):
            drained[name] = str(v.get("id", ""))
    return Snapshot(rev, cluster, cluster_kv, tokens, raw, nodes, frozenset(drain), drained)


async def put_if_changed(etcd: Etcd, snap: Snapshot, prefix: str, suffix: str, value: str) -> bool:
    """Write ``<prefix>/swarm/<suffix>`` unless it already holds exactly ``value``."""
    if snap.raw.get(suffix) == value.encode():
        return False
    await etcd.put(swarm_prefix(prefix) + suffix, value)
    return True


def encode_tokens(tokens: JoinTokens) -> str:
    return dumps({"worker": tokens.worker, "manager": tokens.manager})
