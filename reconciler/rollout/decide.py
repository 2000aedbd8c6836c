"""The pure rollout decision: from a snapshot of the prefix, what this node does now.

``decide(view)`` says whether this node may apply ``desired`` (current, fresh, holding a
slot, try a slot, wait, halted); ``view_from_kvs`` builds that snapshot from the raw keys.
No I/O: ``reconciler.rollout.gate`` reads etcd and acts on the decision.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from reconciler import keys
from reconciler.models import Role
from reconciler.status import NodeState, NodeStatus

# A peer manager in one of these states is running a known-good revision: safe to proceed.
# APPLYING and DEGRADED are not (mid-change or broken); a dead one (no alive key) is not.
# IDLE has applied nothing yet: it changes nothing, so it puts nothing at risk either.
HEALTHY_STATES = frozenset(
    {NodeState.CONVERGED, NodeState.PAUSED, NodeState.REJECTED, NodeState.IDLE}
)


class Verdict(StrEnum):
    CURRENT = "current"  # already on the desired revision: nothing to roll out
    FRESH = "fresh"  # nothing applied yet: go ahead without a slot
    HOLDING = "holding"  # this node already holds a slot (restart mid-update): go ahead
    TRY = "try"  # try to create one of ``slots`` (lowest first)
    WAIT = "wait"  # not now: ``reason`` says why; re-decide when etcd changes
    HALTED = "halted"  # rollout stopped (failed revision or operator halt)


@dataclass(frozen=True, slots=True)
class Peer:
    node: str
    role: Role | None  # None: never reported a role
    alive: bool
    state: NodeState | None  # None: no readable status


@dataclass(frozen=True, slots=True)
class SlotHolder:
    role: Role
    index: int
    node: str


@dataclass(frozen=True, slots=True)
class RolloutView:
    node: str
    role: Role
    applied: str  # revision applied on this node ("" none)
    desired: str
    peers: tuple[Peer, ...] = ()  # every OTHER node etcd knows of
    holders: tuple[SlotHolder, ...] = ()
    max_unavailable: int = 1
    halted: bool = False  # operator ``rollout halt``
    failed_revision: str = ""  # revision some node rolled back from


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    slots: tuple[int, ...] = ()
    reason: str = ""


def decide(v: RolloutView) -> Decision:
    """What this node should do about ``v.desired`` right now. Pure."""
    if v.applied == v.desired:
        return Decision(Verdict.CURRENT)
    mine = [h for h in v.holders if h.node == v.node]
    if mine:
        return Decision(Verdict.HOLDING, (mine[0].index,))
    if v.failed_revision and v.failed_revision == v.desired:
        return Decision(Verdict.HALTED, reason=f"revision {v.desired[:12]} failed on a node")
    if v.halted:
        return Decision(Verdict.HALTED, reason="rollout halted by an operator")
    if not v.applied:
        return Decision(Verdict.FRESH)
    if v.role is Role.MANAGER:
        busy = [h.node for h in v.holders if h.role is Role.MANAGER]
        if busy:
            return Decision(Verdict.WAIT, reason=f"manager {busy[0]} is updating")
        for p in sorted(v.peers, key=lambda p: p.node):
            if p.role is not Role.MANAGER:
                continue
            if not p.alive:
                return Decision(Verdict.WAIT, reason=f"manager {p.node} is not alive")
            if p.state not in HEALTHY_STATES:
                state = p.state.value if p.state else "unknown"
                return Decision(Verdict.WAIT, reason=f"manager {p.node} is {state}")
        return Decision(Verdict.TRY, (0,))
    limit = max(1, v.max_unavailable)
    held = {h.index for h in v.holders if h.role is Role.WORKER}
    if len(held) >= limit:
        return Decision(Verdict.WAIT, reason=f"{len(held)} of {limit} worker slot(s) in use")
    return Decision(Verdict.TRY, tuple(i for i in range(limit) if i not in held))


# -- reading a view out of the prefix -------------------------------------------------


def view_from_kvs(
    prefix: str,
    kvs: Mapping[bytes, bytes],
    *,
    node: str,
    role: Role,
    applied: str,
    desired: str,
    max_unavailable: int,
) -> RolloutView:
    """Build the snapshot ``decide`` needs from the raw keys under the prefix."""
    alive: set[str] = set()
    statuses: dict[str, NodeStatus | None] = {}
    holders: list[SlotHolder] = []
    for k, val in kvs.items():
        nk = keys.split_node_key(prefix, k)
        if nk is not None:
            n, leaf = nk
            if role is not Role.MANAGER:
                continue  # ``decide`` looks at peers only for a manager
            if leaf == "alive":
                alive.add(n)
            elif leaf == "status":
                try:
                    statuses[n] = NodeStatus.from_json(val)
                except ValueError:
                    statuses[n] = None
            continue
        sk = keys.split_slot_key(prefix, k)
        if sk is not None:
            holders.append(SlotHolder(sk[0], sk[1], slot_holder(val)))
    peers = []
    for n in sorted((alive | set(statuses)) - {node}):
        st = statuses.get(n)
        try:
            prole = Role(st.role) if st else None
        except ValueError:
            prole = None
        peers.append(Peer(n, prole, n in alive, st.state if st else None))
    return RolloutView(
        node=node,
        role=role,
        applied=applied,
        desired=desired,
        peers=tuple(peers),
        holders=tuple(sorted(holders, key=lambda h: (h.role, h.index))),
        max_unavailable=max_unavailable,
        halted=keys.rollout_halted(prefix).encode() in kvs,
        failed_revision=failed_revision(kvs.get(keys.rollout_failed(prefix).encode())),
    )


def failed_revision(raw: bytes | None) -> str:
    """The revision a ``rollout/failed`` value names ("" when absent)."""
    if raw is None:
        return ""
    try:
        return str(json.loads(raw).get("revision", ""))
    except (ValueError, AttributeError):
        return raw.decode(errors="replace").strip()


@dataclass(frozen=True, slots=True)
class Markers:
    """The rollout markers as this node's own watches last saw them: ``rollout/failed``'s
    raw value (None: absent) and whether ``rollout/halted`` exists."""

    failed: bytes | None = None
    halted: bool = False


def shortcut(
    node: str, role: Role, applied: str, desired: str, markers: Markers, max_unavailable: int
) -> Decision | None:
    """The decision a worker can take without reading the prefix first, or None.

    A worker's decision depends on the desired revision, the two markers and the slots
    held; the agent watches the first three, and the slot transaction itself finds the
    free slots. So a worker that is behind tries its slots at once, the transaction
    proving the markers and the desired revision unchanged (``RolloutGate``); when it
    cannot (a marker changed, every slot tried is taken) it reads and decides as usual.
    A manager's decision needs its peers' health: it always reads.
    """
    if role is not Role.WORKER or not applied:
        return None
    view = RolloutView(node=node, role=role, applied=applied, desired=desired,
                       max_unavailable=max_unavailable, halted=markers.halted,
                       failed_revision=failed_revision(markers.failed))  # fmt: skip
    d = decide(view)
    return d if d.verdict is Verdict.TRY else None


def slot_holder(raw: bytes) -> str:
    """The node named by a slot key's value (JSON ``{"node"}``, or the raw text)."""
    try:
        return str(json.loads(raw)["node"])
    except (ValueError, KeyError, TypeError):
        return raw.decode(errors="replace")
