"""What a pass tells etcd, metrics and people: the agent's ``Reporter``.

``Agent`` (agent.py) runs the tasks and the passes and owns one ``Reporter``, which hands a
pass's end back to the world: the node's status (written alone, or in the same etcd
transaction as the rollout slot it is about), the slot's release (remembered when etcd was
down, so it never blocks the rollout until the lease ends), the rollout's failed marker,
metrics, notifications, swarm roles and service registrations. It reads the parts that
come and go with the agent's tasks (heartbeat lease, notification hub, registrar, swarm
link) through the small ``Host`` protocol, so this module does not import the agent.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from reconciler import keys
from reconciler.errors import SwarmkeeperError, TransientError
from reconciler.models import Role
from reconciler.status import NodeState, NodeStatus, utcnow

if TYPE_CHECKING:
    from reconciler.agent.metrics import Metrics
    from reconciler.agent.passes import PassResult
    from reconciler.agent.render import Renderer
    from reconciler.agent.services import ServiceRegistrar
    from reconciler.apply.engine import Engine
    from reconciler.etcd.client import Etcd, Lease
    from reconciler.notify.hub import Notifications
    from reconciler.rollout.decide import Markers
    from reconciler.rollout.gate import RolloutGate, Slot
    from reconciler.source import GitSource
    from reconciler.swarm.agent import SwarmLink


class Host(Protocol):
    """The agent's parts that its tasks set while it runs."""

    @property
    def lease(self) -> Lease | None: ...
    @property
    def notifications(self) -> Notifications | None: ...
    @property
    def registrar(self) -> ServiceRegistrar | None: ...
    @property
    def swarm(self) -> SwarmLink | None: ...
    def follows(self, revision: str) -> bool:
        """Nothing is published and ``revision`` is the branch head the agent polled."""
        ...

    def markers(self) -> Markers:
        """The rollout markers as the agent's watches last saw them."""
        ...


class Reporter:
    def __init__(
        self,
        host: Host,
        node: str,
        *,
        etcd: Etcd,
        engine: Engine,
        prefix: str,
        source: GitSource,
        renderer: Renderer,
        metrics: Metrics,
        log: Any,
    ) -> None:
        from reconciler.agent.events import PassEvents

        self.host = host
        self.node = node
        self.etcd = etcd
        self.engine = engine
        self.prefix = prefix
        self.source = source
        self.renderer = renderer
        self.metrics = metrics
        self.log = log
        self.last_status: NodeStatus | None = None
        self.pass_events = PassEvents(node)
        self._notify_cfg: tuple[object, ...] | None = None  # cluster.notify last configured
        self._seen = (0, 0)  # git fetches and etcd requests already counted in metrics
        self._unreleased: Slot | None = None  # a rollout slot whose release failed
        # The gate may skip its read only once a read since start found no slot of ours
        # (held under a lease of a previous run) and while every slot we took was released.
        self._gate_read = False

    @property
    def lease(self) -> Lease | None:
        return self.host.lease

    @property
    def swarm(self) -> SwarmLink | None:
        return self.host.swarm

    def gate(self, role: Role, max_unavailable: int = 1) -> RolloutGate:
        """This node's rollout gate; its slots are bound to the heartbeat lease."""
        from reconciler.rollout.gate import RolloutGate

        if self.lease is None:
            raise TransientError("no heartbeat lease yet")
        return RolloutGate(self.etcd, self.prefix, self.node, role, self.lease,
                           max_unavailable=max_unavailable)  # fmt: skip

    async def acquire(
        self,
        revision: str,
        applied: str,
        role: Role,
        max_unavailable: int,
        applying: NodeStatus,
        waiting: NodeStatus,
    ) -> Slot | None:
        if self.lease is not None and not self.lease.alive:
            # a slot bound to a lease etcd may already have dropped would protect nothing
            raise TransientError("heartbeat lease unconfirmed")
        gate = self.gate(role, max_unavailable)
        applying = self.stamped(applying)
        # a followed branch head goes through the gate for as long as nothing is published
        shortcut = self._gate_read and self._unreleased is None
        slot = await gate.acquire(revision, applied, applying=applying.to_json(),
                                  waiting=self.stamped(waiting).to_json(),
                                  published=not self.host.follows(revision),
                                  markers=self.host.markers() if shortcut else None)  # fmt: skip
        self._gate_read = True
        if slot is not None:
            self.last_status = applying
        return slot

    def stamped(self, st: NodeStatus) -> NodeStatus:
        from reconciler import __version__

        return replace(st, agent=__version__)

    async def write_status(self, st: NodeStatus) -> None:
        st = self.stamped(st)
        self.last_status = st
        await self.etcd.put(keys.node_status(self.prefix, self.node), st.to_json())

    async def report_error(
        self, desired: str | None, error: str, state: NodeState = NodeState.DEGRADED
    ) -> None:
        """Best effort: tell operators a pass failed, keeping the last known facts."""
        last = self.last_status
        st = NodeStatus(
            node=self.node, role=last.role if last else "", state=state,
            revision=self.engine_revision(), desired=desired or "", error=error.splitlines()[0][:300],
            units=last.units if last else {}, updated_at=utcnow(),
            swarm=self.swarm.status if self.swarm else {},
        )  # fmt: skip
        with contextlib.suppress(SwarmkeeperError):
            await self.write_status(st)

    def engine_revision(self) -> str:
        try:
            return self.engine.inventory().revision or ""
        except Exception:  # best effort: the inventory may be what broke the pass
            return ""

    async def report(self, res: PassResult) -> tuple[str, bool]:
        """Publish status (then release the slot), metrics, notifications, registrations.
        Returns the outcome label and whether etcd took the status."""
        from reconciler.plan.result import Outcome

        if self.swarm is not None:
            res = replace(res, status=replace(res.status, swarm=self.swarm.status))
            self.update_swarm(res.status.revision)
        st = res.status
        written = True
        if res.result is not None and res.halts_rollout:
            try:
                await self.gate(Role(st.role or "worker")).mark_failed(
                    res.result.revision, st.error
                )
            except TransientError as e:
                self.log.warning("rollout.mark_failed", error=str(e))
            self.metrics.rollbacks.inc()
        # the new status and the slot's release go in one transaction; a slot whose release
        # failed is released with the next status instead (it would otherwise block the
        # rollout until this node's lease ends)
        slot = res.slot if res.slot is not None and res.slot.key else self._unreleased
        try:
            if slot is not None:
                doc = self.stamped(st)
                await self.gate(Role(st.role or "worker")).release(slot, doc.to_json())
                self._unreleased = None
                self.last_status = doc
            else:
                await self.write_status(st)
        except TransientError as e:
            self._unreleased = slot
            self.metrics.etcd_errors.inc()
            self.log.warning("status.unwritten", error=str(e))
            written = False
        if res.error_kind == "git":
            self.metrics.git_errors.inc()
        self.sync_counters()
        if res.result is not None:
            self.metrics.drift_repairs.inc(res.result.drift)
            if res.result.outcome is Outcome.CONVERGED:
                self.metrics.set_applied(res.result.revision, time.time())
        elif st.state is NodeState.CONVERGED and st.revision:
            self.metrics.set_applied(st.revision, time.time())
        self.notify(res)
        if self.host.registrar is not None and st.revision:
            from reconciler.agent.services import registrations_of
            from reconciler.models import NodeSpec

            # unchanged registrations keep running; this only acts when the spec changed
            spec = self.renderer.cache.get(st.revision)
            if isinstance(spec, NodeSpec):
                await self.host.registrar.update(registrations_of(spec), revision=st.revision)
        if res.result is not None:
            return str(res.result.outcome), written
        return str(st.state), written

    def update_swarm(self, revision: str) -> None:
        """Hand the applied revision's node roles to the membership task."""
        from reconciler.models import NodeSpec

        roles = self.renderer.swarm_roles.get(revision)
        spec = self.renderer.cache.get(revision) if revision else None
        if self.swarm is not None and roles is not None and isinstance(spec, NodeSpec):
            self.swarm.update(roles, spec.cluster.managers)

    def sync_counters(self) -> None:
        """Carry the source's and etcd client's own counters into the metrics."""
        fetches, requests = self.source.fetches, self.etcd.request_count
        self.metrics.git_fetches.inc(max(0, fetches - self._seen[0]))
        self.metrics.etcd_requests.inc(max(0, requests - self._seen[1]))
        self._seen = (fetches, requests)

    def notify(self, res: PassResult) -> None:
        if self.host.notifications is None:
            return
        from reconciler.models import NodeSpec

        spec = self.renderer.cache.get(res.status.revision) if res.status.revision else None
        if isinstance(spec, NodeSpec) and spec.cluster.notify != self._notify_cfg:
            from reconciler.notify.notifiers import from_config

            # only when notify: changed, so a missing secret is warned about once
            self._notify_cfg = spec.cluster.notify
            self.host.notifications.configure(from_config(spec.cluster.notify))
        if self.swarm is not None:
            # every node rejects the same bad commit: with a swarm, only its leader says so
            self.pass_events.announce_rejections = bool(self.swarm.status.get("leader"))
        for event in self.pass_events.events(res):
            self.host.notifications.emit(event)
