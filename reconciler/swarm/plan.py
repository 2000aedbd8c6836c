"""Pure decisions for Docker Swarm membership: what this node does next, and what the
swarm leader does to the other nodes. No I/O; the control layer (``membership.py``)
observes, calls these functions and executes the result.

Two questions, two functions:

- ``local_action``: given the node's desired role (None: not in the state, or drained by
  the operator), what its engine says (``LocalView``) and the cluster record in etcd, the
  one next step for this node: claim the bootstrap, init, wait, join, cancel a stuck join,
  leave, or nothing. A node in another swarm is a ``CONFLICT``, never a silent leave.
- ``leader_actions``: run only on the swarm leader, given every node of the swarm (mapped
  to state names via the records nodes publish), the desired roles and ``cluster.managers``:
  at most one role change per pass (raft membership changes one at a time), drains, drain
  acknowledgements and removals of departed nodes after a grace period. A promotion never
  takes the manager count above the limit; a demotion never leaves fewer reachable managers
  than a quorum of those remaining.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from reconciler.models import Role


class Phase(StrEnum):
    """The cluster record ``<prefix>/swarm/cluster``."""

    ABSENT = "absent"  # nobody has claimed the bootstrap
    CLAIMED = "claimed"  # a manager won the claim (lease-bound) and is running swarm init
    READY = "ready"  # the swarm exists: id, managers and tokens are published


@dataclass(frozen=True, slots=True)
class ClusterRecord:
    phase: Phase
    cluster_id: str = ""
    claimed_by: str = ""
    manager_addrs: tuple[str, ...] = ()  # "ip:2377" of reachable managers, leader first


@dataclass(frozen=True, slots=True)
class LocalView:
    """The engine's ``Info.Swarm``, reduced to what decisions need."""

    state: str  # inactive | pending | active | error | locked
    node_id: str = ""
    cluster_id: str = ""  # only managers know it
    control_available: bool = False
    remote_managers: tuple[str, ...] = ()  # what a worker knows about its swarm
    error: str = ""

    @property
    def role(self) -> Role | None:
        if self.state != "active":
            return None
        return Role.MANAGER if self.control_available else Role.WORKER


class Step(StrEnum):
    NOTHING = "nothing"
    CLAIM = "claim"  # try to win the bootstrap transaction, then swarm init
    ADOPT = "adopt"  # an active manager with no record (etcd wiped, publish lost): publish it
    PUBLISH = "publish"  # a manager of our swarm: refresh manager addresses and tokens
    WAIT_CLUSTER = "wait-cluster"  # watch the cluster record until it is ready
    JOIN = "join"
    WAIT_JOIN = "wait-join"  # the engine is still joining in the background
    CANCEL_JOIN = "cancel-join"  # stuck (or no longer wanted): leave --force a pending join
    AWAIT_ROLE = "await-role"  # the leader promotes/demotes us
    AWAIT_DRAIN = "await-drain"  # the leader drains us before we leave
    LEAVE = "leave"
    CONFLICT = "conflict"  # member of another swarm: report, never leave silently
    BROKEN = "broken"  # engine reports error/locked: report


@dataclass(frozen=True, slots=True)
class LocalAction:
    step: Step
    role: Role | None = None  # JOIN: the token to use
    reason: str = ""


def quorum(managers: int) -> int:
    return managers // 2 + 1


def in_cluster(local: LocalView, cluster: ClusterRecord) -> bool | None:
    """Is the active engine a member of the published swarm? None when it cannot be told."""
    if local.cluster_id and cluster.cluster_id:
        return local.cluster_id == cluster.cluster_id
    if local.remote_managers and cluster.manager_addrs:
        return bool(set(local.remote_managers) & set(cluster.manager_addrs))
    return None


def local_action(
    desired: Role | None,
    local: LocalView,
    cluster: ClusterRecord,
    *,
    drained_ack: bool = False,
    pending_for: float = 0.0,
    join_patience: float = 45.0,
    managers_limit: int = 3,
    manager_rank: int = 0,
) -> LocalAction:
    """The one next step for this node (see the module docstring).

    ``manager_rank``: this node's index among the nodes the state wants as managers, by
    name. Only the first ``managers_limit`` may claim the bootstrap or join with the manager
    token, so even a state asking for more managers than ``cluster.managers`` never gets
    more (the rest join as workers; the leader promotes only up to the limit)."""
    seat = desired is Role.MANAGER and manager_rank < managers_limit
    if local.state == "locked":
        return LocalAction(Step.BROKEN, reason="swarm is locked: unlock it with the unlock key")
    if local.state == "error":
        return LocalAction(Step.BROKEN, reason=f"engine swarm error: {local.error}")
    if local.state == "pending":
        if desired is None:
            return LocalAction(Step.CANCEL_JOIN, reason="joining but no longer wanted")
        if pending_for > join_patience:
            return LocalAction(Step.CANCEL_JOIN, reason=f"join stuck for {pending_for:.0f}s")
        return LocalAction(Step.WAIT_JOIN)
    if local.state != "active":  # inactive
        if desired is None:
            return LocalAction(Step.NOTHING, reason="not in the state")
        if cluster.phase is Phase.READY:
            as_manager = seat and len(cluster.manager_addrs) < managers_limit
            return LocalAction(Step.JOIN, role=Role.MANAGER if as_manager else Role.WORKER)
        if cluster.phase is Phase.ABSENT and seat:
            return LocalAction(Step.CLAIM)
        return LocalAction(Step.WAIT_CLUSTER)
    # active
    if cluster.phase is not Phase.READY:
        # Only a would-be manager may make its existing swarm THE swarm (etcd wiped, or the
        # bootstrapper died after init but before publishing); anyone else waits for it.
        if local.control_available and cluster.phase is Phase.ABSENT and desired is Role.MANAGER:
            return LocalAction(Step.ADOPT, reason="member of a swarm etcd does not know")
        return LocalAction(Step.WAIT_CLUSTER)
    if in_cluster(local, cluster) is False:
        theirs = local.cluster_id or ",".join(local.remote_managers)
        return LocalAction(
            Step.CONFLICT,
            reason=f"engine is in another swarm ({theirs}), not {cluster.cluster_id}: "
            "leave it by hand (`docker swarm leave`) if that is intended",
        )
    role = local.role
    if desired is None:
        if role is Role.MANAGER:
            return LocalAction(Step.AWAIT_ROLE, role=Role.WORKER, reason="leaving: demotion")
        if not drained_ack:
            return LocalAction(Step.AWAIT_DRAIN, reason="leaving: drain")
        return LocalAction(Step.LEAVE)
    if role is not desired:
        return LocalAction(Step.AWAIT_ROLE, role=desired)
    if role is Role.MANAGER:
        return LocalAction(Step.PUBLISH)
    return LocalAction(Step.NOTHING)


# ---- the leader's view of the whole swarm ------------------------------------------------


class Verb(StrEnum):
    PROMOTE = "promote"
    DEMOTE = "demote"
    DRAIN = "drain"
    ACK_DRAINED = "ack-drained"  # tell the departing node (via etcd) it may leave now
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class NodeView:
    id: str
    name: str  # the state node name from its etcd record; "" for a node we do not know
    role: Role
    ready: bool  # Status.State == ready
    reachable: bool  # managers: ManagerStatus.Reachability == reachable
    leader: bool = False
    drained: bool = False  # Spec.Availability == drain
    down_for: float = 0.0  # seconds since the node was seen going down (0 while ready)
    current: bool = True  # False: an older incarnation of a node that re-joined


@dataclass(frozen=True, slots=True)
class NodeAction:
    verb: Verb
    node_id: str
    name: str


def leader_actions(
    nodes: Sequence[NodeView],
    desired: Mapping[str, Role | None],
    managers_limit: int,
    *,
    leaving: frozenset[str] = frozenset(),
    grace: float = 10.0,
) -> tuple[NodeAction, ...]:
    """What the leader does this pass. ``desired``: every node of the state, with its role,
    or None when the node's role comes from the node itself (kept as it is). A node not in
    ``desired`` (or in ``leaving``, the operator's drains) is taken out of the swarm."""

    def wanted(n: NodeView) -> Role | None:
        if not n.name:
            return n.role  # not ours (joined by hand): leave it as it is
        if not n.current or n.name in leaving or n.name not in desired:
            return None
        want = desired[n.name]
        return n.role if want is None else want  # None: the node picks its role itself

    out: list[NodeAction] = []
    managers = [n for n in nodes if n.role is Role.MANAGER]
    m, r = len(managers), sum(1 for n in managers if n.reachable)

    def can_demote(n: NodeView) -> bool:
        left_reachable = r - (1 if n.reachable else 0)
        return m - 1 >= 1 and left_reachable >= quorum(m - 1)

    # Role changes: demotions first (a swap at the limit must free a seat), one per pass.
    excess = max(0, m - managers_limit)
    demote = [n for n in managers if wanted(n) is not Role.MANAGER]
    if excess > len(demote):  # over the limit even with every unwanted one gone
        demote += [n for n in managers if n not in demote and n.name][: excess - len(demote)]
    demote.sort(key=lambda n: (n.leader, n.reachable, n.name))  # the leader itself last
    role_change = next((n for n in demote if can_demote(n)), None)
    if role_change is not None:
        out.append(NodeAction(Verb.DEMOTE, role_change.id, role_change.name))
    elif m < managers_limit:
        promote = sorted(
            (
                n
                for n in nodes
                if n.role is Role.WORKER and wanted(n) is Role.MANAGER and n.ready and not n.drained
            ),
            key=lambda n: n.name,
        )
        # The new member is reachable; the others must still make a quorum of m + 1.
        if promote and r + 1 >= quorum(m + 1):
            out.append(NodeAction(Verb.PROMOTE, promote[0].id, promote[0].name))

    # Departures: drain, acknowledge, and remove once down long enough.
    for n in nodes:
        if wanted(n) is not None or n.role is Role.MANAGER:
            continue
        if not n.drained and n.ready:
            out.append(NodeAction(Verb.DRAIN, n.id, n.name))
        elif n.drained and n.ready:
            out.append(NodeAction(Verb.ACK_DRAINED, n.id, n.name))
        elif not n.ready and n.down_for >= grace:
            out.append(NodeAction(Verb.REMOVE, n.id, n.name))
    return tuple(out)
