"""The etcd key schema, as functions: the only place key strings are spelled out.

Every key lives under the cluster prefix (``cluster.yaml`` ``prefix``, default
``/swarmkeeper``). ``docs/etcd-keys.md`` documents each key's value, writer and lease. Pure:
no I/O. Parsers (``node_of_*``) return None for keys that are not theirs, so a watch on the
whole prefix can route events with them.
"""

from __future__ import annotations

from reconciler.models import Role

DEFAULT_PREFIX = "/swarmkeeper"


def norm(prefix: str) -> str:
    """``/swarmkeeper/`` and ``/swarmkeeper`` are the same prefix; refuse nonsense."""
    p = prefix.rstrip("/")
    if not p.startswith("/") or "//" in p or " " in p:
        raise ValueError(f"invalid etcd prefix {prefix!r}: must look like /name[/name...]")
    return p


def _node(node: str) -> str:
    if not node or "/" in node or node.strip() != node:
        raise ValueError(f"invalid node name {node!r}")
    return node


# -- desired state -------------------------------------------------------------------


def desired_revision(prefix: str) -> str:
    """The commit every node should run (a full sha, plain text)."""
    return f"{norm(prefix)}/desired/revision"


def desired_rollback(prefix: str, at: str) -> str:
    """One ``publish --allow-rollback`` that moved the desired revision backwards (JSON)."""
    return f"{norm(prefix)}/desired/rollbacks/{at}"


def webhook_delivery(prefix: str, delivery: str) -> str:
    """A push-webhook delivery id already handled; on a lease, so old ids expire."""
    if not delivery or "/" in delivery or len(delivery) > 200:
        raise ValueError(f"invalid delivery id {delivery[:40]!r}")
    return f"{norm(prefix)}/webhook/deliveries/{delivery}"


def revisions_prefix(prefix: str) -> str:
    """Where revision artifacts live, one sub-prefix per commit."""
    return f"{norm(prefix)}/revisions/"


def revision_artifact(prefix: str, sha: str) -> str:
    """One commit's artifact: ``meta`` (JSON), ``commit`` (raw object), ``chunks/NNNN``.
    Nodes read all of it with one range request over this prefix."""
    if not sha or any(c not in "0123456789abcdef" for c in sha):
        raise ValueError(f"invalid commit sha {sha!r}")
    return f"{norm(prefix)}/revisions/{sha}/"


# -- nodes ---------------------------------------------------------------------------


def nodes_prefix(prefix: str) -> str:
    return f"{norm(prefix)}/nodes/"


def node_status(prefix: str, node: str) -> str:
    """The node's last report (``NodeStatus`` JSON). Not leased: it outlives the agent."""
    return f"{norm(prefix)}/nodes/{_node(node)}/status"


def node_alive(prefix: str, node: str) -> str:
    """The heartbeat: exists only while the agent's lease is kept alive."""
    return f"{norm(prefix)}/nodes/{_node(node)}/alive"


def node_pause(prefix: str, node: str) -> str:
    """Operator override: while it exists the node's agent applies nothing."""
    return f"{norm(prefix)}/nodes/{_node(node)}/pause"


def split_node_key(prefix: str, key: str | bytes) -> tuple[str, str] | None:
    """``<prefix>/nodes/<node>/<leaf>`` -> (node, leaf); None for any other key."""
    k = key.decode() if isinstance(key, bytes) else key
    base = nodes_prefix(prefix)
    if not k.startswith(base):
        return None
    node, sep, leaf = k[len(base) :].partition("/")
    if not node or not sep or not leaf or "/" in leaf:
        return None
    return node, leaf


# -- rollout -------------------------------------------------------------------------


def rollout_prefix(prefix: str) -> str:
    return f"{norm(prefix)}/rollout/"


def rollout_slots_prefix(prefix: str) -> str:
    return f"{norm(prefix)}/rollout/slots/"


def rollout_slot(prefix: str, role: Role, index: int) -> str:
    """One update slot: held (create-if-absent, bound to the holder's alive lease) by a node
    while it applies a new revision. Managers have one slot, workers ``max_unavailable``."""
    if index < 0:
        raise ValueError("slot index must be >= 0")
    return f"{norm(prefix)}/rollout/slots/{Role(role).value}/{index}"


def split_slot_key(prefix: str, key: str | bytes) -> tuple[Role, int] | None:
    k = key.decode() if isinstance(key, bytes) else key
    base = rollout_slots_prefix(prefix)
    if not k.startswith(base):
        return None
    role, _, idx = k[len(base) :].partition("/")
    try:
        return Role(role), int(idx)
    except ValueError:
        return None


def rollout_failed(prefix: str) -> str:
    """Set by a node whose apply of a revision rolled back: that revision's rollout halts."""
    return f"{norm(prefix)}/rollout/failed"


def rollout_halted(prefix: str) -> str:
    """Set by an operator (``rollout halt``): no node starts an update while it exists."""
    return f"{norm(prefix)}/rollout/halted"


# -- swarm membership ----------------------------------------------------------------


def swarm_prefix(prefix: str) -> str:
    return f"{norm(prefix)}/swarm/"


def swarm_cluster(prefix: str) -> str:
    """The swarm cluster record (bootstrap claim, id, manager addresses, join tokens)."""
    return f"{norm(prefix)}/swarm/cluster"


def swarm_node(prefix: str, node: str) -> str:
    """What a node publishes about its engine (engine node id, address), for the leader."""
    return f"{norm(prefix)}/swarm/nodes/{_node(node)}"


def swarm_managers(prefix: str) -> str:
    """JSON list of reachable managers' ``ip:2377``, leader first (written by the leader)."""
    return f"{norm(prefix)}/swarm/managers"


def swarm_tokens(prefix: str) -> str:
    """JSON ``{"worker": T, "manager": T}``: SECRET, etcd auth/TLS must protect it."""
    return f"{norm(prefix)}/swarm/tokens"


def swarm_drain(prefix: str, node: str) -> str:
    """Operator request (``swarmkeeper drain NODE``): drain the node and make it leave."""
    return f"{norm(prefix)}/swarm/drain/{_node(node)}"


def swarm_drained(prefix: str, node: str) -> str:
    """The leader drained the node (JSON ``{"id": ENGINE_NODE_ID}``): it may leave now."""
    return f"{norm(prefix)}/swarm/drained/{_node(node)}"


# -- service registration ------------------------------------------------------------


def services_prefix(prefix: str, name: str | None = None) -> str:
    base = f"{norm(prefix)}/services/"
    return base if name is None else f"{base}{_node(name)}/"


def services(prefix: str, name: str, node: str) -> str:
    """A healthy instance of service ``name`` on ``node`` (lease-bound)."""
    return f"{norm(prefix)}/services/{_node(name)}/{_node(node)}"
