"""Swarm membership as desired state: the control layer the agent calls every pass.

``Membership.reconcile(roles, managers)`` (or ``reconcile_membership``) observes the local
engine and the ``<prefix>/swarm/`` records, asks ``swarm.plan`` for the next step and
executes it, then, on the swarm leader, carries out the leader's actions for the other
nodes. It returns a frozen ``MembershipStatus`` for the node's status key.

The steps that get a node into the swarm (the race-free bootstrap claim, the wait on the
cluster record, the join) are ``swarm.bootstrap``'s; the leader's work is ``swarm.leader``'s.
``run_membership`` is a ready-made loop that re-runs a pass whenever anything under
``<prefix>/swarm/`` changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from reconciler import log
from reconciler.actuators.swarm import SwarmEngine
from reconciler.actuators.swarmnodes import SWARM_PORT, LocalSwarm
from reconciler.errors import SwarmError, SwarmkeeperError
from reconciler.etcd.client import Etcd
from reconciler.models import Role
from reconciler.swarm import bootstrap
from reconciler.swarm import records as rec
from reconciler.swarm.leader import lead
from reconciler.swarm.plan import LocalView, Phase, Step, local_action

if TYPE_CHECKING:
    from reconciler.desired.validate import State


class MemberState(StrEnum):
    ABSENT = "absent"  # not in a swarm and not supposed to be
    BOOTSTRAPPING = "bootstrapping"  # waiting for / creating the swarm
    JOINING = "joining"
    MEMBER = "member"  # in our swarm with the desired role
    CHANGING_ROLE = "changing-role"
    LEAVING = "leaving"
    CONFLICT = "conflict"  # in another swarm: an operator must decide
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class MembershipStatus:
    node: str
    state: MemberState
    node_id: str = ""
    role: str = ""  # observed: manager | worker | ""
    desired: str = ""  # manager | worker | "" (leave)
    cluster_id: str = ""
    leader: bool = False
    managers: int = 0  # managers known (node list on a manager, remote managers on a worker)
    managers_reachable: int = 0
    error: str = ""
    retry_in: float | None = None  # run again after this many seconds even without events

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Settings:
    heartbeat: float = 5.0  # dispatcher heartbeat set at init: departures seen in ~1-3 beats
    claim_ttl: int = 10  # lease on the bootstrap claim: a dead claimer is replaced this fast
    bootstrap_wait: float = 60.0  # longest a pass waits on the watch for the swarm to exist
    join_patience: float = 45.0  # a background join pending longer is cancelled and retried
    role_wait: float = 30.0  # wait for ControlAvailable after the leader changed our role
    remove_grace: float = 10.0  # a departed node is removed once down this long
    join_attempt: float = 25.0  # per manager address (the engine itself gives up after 20 s)


@dataclass
class Membership:
    """One node's membership controller (keeps a little memory between passes)."""

    etcd: Etcd
    engine: SwarmEngine
    node: str
    address: str
    prefix: str = "/swarmkeeper"
    settings: Settings = field(default_factory=Settings)
    role: Role | None = None  # this node's role when the state leaves it to the node (facts)
    _pending_since: float | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def poke(self) -> None:
        """Ask ``run_membership`` for a pass now (e.g. the desired roles changed)."""
        self._wake.set()

    async def reconcile(self, roles: Mapping[str, Role | None], managers: int) -> MembershipStatus:
        """One pass. ``roles``: every node of the state (``state/nodes``) with its role, or
        None where the node's role comes from its own facts; this node's None resolves to
        ``self.role``. A node missing from ``roles`` leaves the swarm. ``managers``:
        ``cluster.yaml`` ``managers``."""
        desired = roles[self.node] or self.role if self.node in roles else None
        if self.node in roles and desired is None:
            return MembershipStatus(
                self.node,
                MemberState.ERROR,
                retry_in=None,
                error="the node's role is unknown (not in state, no fact)",
            )
        try:
            return await self._reconcile(desired, roles, managers)
        except SwarmkeeperError as e:
            log.get("membership").warning("membership pass failed", node=self.node, error=str(e))
            return MembershipStatus(
                self.node, MemberState.ERROR, error=str(e), desired=desired or "", retry_in=5.0
            )

    async def _reconcile(
        self, desired: Role | None, roles: Mapping[str, Role | None], managers: int
    ) -> MembershipStatus:
        s = self.settings
        deadline = time.monotonic() + s.bootstrap_wait
        for _ in range(8):
            snap = await rec.read(self.etcd, self.prefix)
            if self.node in snap.drain:
                desired = None
            local = await self.engine.local()
            view = _view(local)
            if local.state.value == "pending":
                self._pending_since = self._pending_since or time.monotonic()
            else:
                self._pending_since = None
            pending_for = time.monotonic() - self._pending_since if self._pending_since else 0
            act = local_action(
                desired,
                view,
                snap.cluster,
                drained_ack=bool(local.node_id) and snap.drained.get(self.node) == local.node_id,
                pending_for=pending_for,
                join_patience=s.join_patience,
                managers_limit=managers,
                manager_rank=_rank(roles, self.node),
            )
            st = act.step
            log.get("membership").debug(
                "membership step", node=self.node, step=st.value, role=act.role, reason=act.reason
            )
            if st is Step.CLAIM or st is Step.ADOPT:
                await bootstrap.claim(self, init=st is Step.CLAIM)
            elif st is Step.WAIT_CLUSTER:
                if time.monotonic() > deadline:
                    return self._status(MemberState.BOOTSTRAPPING, local, desired, retry=1.0)
                await bootstrap.wait_cluster(self, snap.revision, deadline)
            elif st is Step.JOIN:
                assert act.role is not None
                await self.join(snap, act.role)
            elif st is Step.CANCEL_JOIN:
                with contextlib.suppress(SwarmError):
                    await self.engine.leave(force=True)
                self._pending_since = None
            elif st is Step.LEAVE:
                # No "left" record: the leader may already have removed us (we stop beating
                # before leave returns) and deleted the record; writing it now would leave
                # it behind for good.
                await self.engine.leave()
                return self._status(MemberState.ABSENT, await self.engine.local(), desired)
            elif st is Step.WAIT_JOIN:
                return self._status(MemberState.JOINING, local, desired, retry=2.0)
            elif st is Step.CONFLICT or st is Step.BROKEN:
                state = MemberState.CONFLICT if st is Step.CONFLICT else MemberState.ERROR
                return self._status(state, local, desired, error=act.reason)
            elif (
                st is Step.AWAIT_ROLE
                and act.role is not None
                and self._role_done_by_leader(snap, local, act.role)
            ):
                want_ctl = act.role is Role.MANAGER
                await self.engine.wait_local(
                    lambda x, w=want_ctl: x.control_available is w,  # type: ignore[misc]
                    within=s.role_wait,
                    what=f"{act.role} locally",
                )
            else:  # NOTHING, PUBLISH, AWAIT_ROLE, AWAIT_DRAIN: settled for this pass
                return await self._settled(snap, local, desired, roles, managers, st)
        return self._status(
            MemberState.ERROR,
            await self.engine.local(),
            desired,
            error="membership did not settle in one pass",
            retry=1.0,
        )

    def _role_done_by_leader(self, snap: rec.Snapshot, local: LocalSwarm, role: Role) -> bool:
        """The leader published its view: our address is (or no longer is) a manager."""
        mine = f"{self.address}:{SWARM_PORT}"
        return (mine in snap.cluster.manager_addrs) is (role is Role.MANAGER)

    async def join(self, snap: rec.Snapshot, role: Role) -> None:
        """Join with the tokens and manager addresses of ``snap`` (``bootstrap.join``)."""
        await bootstrap.join(self, snap, role)

    async def _settled(
        self,
        snap: rec.Snapshot,
        local: LocalSwarm,
        desired: Role | None,
        roles: Mapping[str, Role | None],
        managers: int,
        step: Step,
    ) -> MembershipStatus:
        if local.node_id:
            await bootstrap.publish_node(self, snap, local, "member")
        lead_result = None
        if local.control_available:
            try:
                lead_result = await lead(self, snap, local, roles, managers)
            except SwarmError as e:
                # Demoted between /info and the node list: not a failure of this node.
                if "not a swarm manager" not in str(e):
                    raise
                local = await self.engine.local()
        if step is Step.NOTHING and local.state.value != "active":
            return self._status(MemberState.ABSENT, local, desired)
        state = {
            Step.AWAIT_ROLE: MemberState.CHANGING_ROLE,
            Step.AWAIT_DRAIN: MemberState.LEAVING,
        }.get(step, MemberState.MEMBER)
        if desired is None and state is MemberState.CHANGING_ROLE:
            state = MemberState.LEAVING
        retry = 2.0 if state is not MemberState.MEMBER else None
        if lead_result is not None:
            retry = (
                lead_result.retry_in if retry is None else min(retry, lead_result.retry_in or retry)
            )
            return self._status(
                state,
                local,
                desired,
                retry=retry,
                leader=lead_result.leader,
                managers=lead_result.managers,
                reachable=lead_result.reachable,
            )
        n = len(local.remote_managers)
        return self._status(state, local, desired, retry=retry, managers=n, reachable=n)

    def _status(
        self,
        state: MemberState,
        local: LocalSwarm,
        desired: Role | None,
        *,
        error: str = "",
        retry: float | None = None,
        leader: bool = False,
        managers: int = 0,
        reachable: int = 0,
    ) -> MembershipStatus:
        return MembershipStatus(
            node=self.node,
            state=state,
            node_id=local.node_id,
            role=local.role.value if local.role else "",
            desired=desired or "",
            cluster_id=local.cluster_id,
            leader=leader,
            managers=managers,
            managers_reachable=reachable,
            error=error or local.error,
            retry_in=retry,
        )


def desired_roles(state: State) -> dict[str, Role | None]:
    """``roles`` for ``reconcile`` from a validated state: every ``state/nodes/<name>.yaml``
    with its ``role:``, or None where the file leaves the role to the node's facts."""
    return {name: Role(nf.role) if nf.role else None for name, nf in state.nodes.items()}


def _rank(roles: Mapping[str, Role | None], node: str) -> int:
    """Index of ``node`` among the nodes the state wants as managers, by name."""
    wanted = sorted(n for n, r in roles.items() if r is Role.MANAGER)
    return wanted.index(node) if node in wanted else len(wanted)


def _view(local: LocalSwarm) -> LocalView:
    return LocalView(
        local.state.value,
        local.node_id,
        local.cluster_id,
        local.control_available,
        local.remote_managers,
        local.error,
    )


async def reconcile_membership(
    m: Membership, roles: Mapping[str, Role | None], managers: int
) -> MembershipStatus:
    """One membership pass (the agent calls this every pass); see ``Membership``."""
    return await m.reconcile(roles, managers)


async def run_membership(
    m: Membership,
    desired: Callable[[], tuple[Mapping[str, Role | None], int]],
    *,
    on_status: Callable[[MembershipStatus], Any] | None = None,
    resync: float = 15.0,
) -> None:
    """Reconcile forever: on every change under ``<prefix>/swarm/``, on ``m.poke()``, and
    at least every ``resync`` seconds (sooner when a pass asks for it)."""

    # Watch from the revision the first pass will at least see, so no change in between is
    # missed (the resync timer is a backstop, not the mechanism).
    _, revision = await m.etcd.get_prefix(rec.swarm_prefix(m.prefix) + "cluster")

    async def watch() -> None:
        async for _ in m.etcd.watch_prefix(rec.swarm_prefix(m.prefix), start_revision=revision + 1):
            m.poke()

    async with asyncio.TaskGroup() as tg:
        watcher = tg.create_task(watch(), name=f"membership-watch-{m.node}")
        try:
            while True:
                m._wake.clear()
                roles, managers = desired()
                status = await m.reconcile(roles, managers)
                if on_status is not None:
                    on_status(status)
                wait = min(resync, status.retry_in or resync)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await m._wake.wait()
        finally:
            watcher.cancel()


__all__ = [
    "MemberState",
    "Membership",
    "MembershipStatus",
    "Phase",
    "Settings",
    "desired_roles",
    "reconcile_membership",
    "run_membership",
]
