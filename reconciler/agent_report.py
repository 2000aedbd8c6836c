"""The reporting half of the node agent: what a pass tells etcd, metrics and people.

``Agent`` (agent.py) runs the tasks and the passes; this mixin holds what a pass hands
back to the world: the node's status (written alone, or in the same etcd transaction as
the rollout slot it is about), the slot's release (remembered when etcd was down, so it
never blocks the rollout until the lease ends), the rollout's failed marker, metrics,
notifications, swarm roles and service registrations. Split from agent.py only to keep
each module readable; the two share one object (the attributes below are set by
``Agent.__init__``).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from reconciler import keys
from reconciler.errors import SwarmkeeperError, TransientError
from reconciler.models import Role
from reconciler.status import NodeState, NodeStatus, utcnow

if TYPE_CHECKING:
    from reconciler.agent import AgentSettings
    from reconciler.agent_swarm import SwarmLink
    from reconciler.apply import Engine
    from reconciler.control import Control
    from reconciler.etcd import Etcd, Lease
    from reconciler.metrics import Metrics
    from reconciler.notify import Notifications
    from reconciler.pass_events import PassEvents
    from reconciler.reconcile import PassResult, Renderer
    from reconciler.rollout import RolloutGate, Slot
    from reconciler.services import ServiceRegistrar
    from reconciler.source import GitSource


class Reporting:
    s: AgentSettings
    etcd: Etcd
    control: Control
    polled: str | None
    engine: Engine
    prefix: str
    source: GitSource
    renderer: Renderer
    metrics: Metrics
    log: Any
    lease: Lease | None
    last_status: NodeStatus | None
    notifications: Notifications | None
    pass_events: PassEvents
    registrar: ServiceRegistrar | None
    swarm: SwarmLink | None
    _notify_cfg: tuple[object, ...] | None
    _seen: tuple[int, int]
    _unreleased: Slot | None

    def _gate(self, role: Role, max_unavailable: int = 1) -> RolloutGate:
        """This node's rollout gate; its slots are bound to the heartbeat lease."""
        from reconciler.rollout import RolloutGate

        if self.lease is None:
            raise TransientError("no heartbeat lease yet")
        return RolloutGate(self.etcd, self.prefix, self.s.node, role, self.lease,
                           max_unavailable=max_unavailable)  # fmt: skip

    async def _acquire(
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
        gate = self._gate(role, max_unavailable)
        # nothing published and this is the branch head the agent polled: the gate lets the
        # followed revision through for as long as nothing gets published
        following = self.control.desired is None and revision == self.polled
        applying = self._stamped(applying)
        slot = await gate.acquire(revision, applied, applying=applying.to_json(),
                                  waiting=self._stamped(waiting).to_json(),
                                  published=not following)  # fmt: skip
        if slot is not None:
            self.last_status = applying
        return slot

    def _stamped(self, st: NodeStatus) -> NodeStatus:
        from reconciler import __version__

        return replace(st, agent=__version__)

    async def _write_status(self, st: NodeStatus) -> None:
        st = self._stamped(st)
        self.last_status = st
        await self.etcd.put(keys.node_status(self.prefix, self.s.node), st.to_json())

    async def _report_error(self, desired: str | None, error: str) -> None:
        """Best effort: tell operators a pass failed, keeping the last known facts."""
        last = self.last_status
        st = NodeStatus(
            node=self.s.node, role=last.role if last else "", state=NodeState.DEGRADED,
            revision=self.engine_revision(), desired=desired or "", error=error.splitlines()[0][:300],
            units=last.units if last else {}, updated_at=utcnow(),
            swarm=self.swarm.status if self.swarm else {},
        )  # fmt: skip
        with contextlib.suppress(SwarmkeeperError):
            await self._write_status(st)

    def engine_revision(self) -> str:
        try:
            return self.engine.inventory().revision or ""
        except SwarmkeeperError:
            return ""

    async def _report(self, res: PassResult) -> str:
        """Publish status (then release the slot), metrics, notifications, registrations."""
        from reconciler.apply import Outcome

        if self.swarm is not None:
            res.status = replace(res.status, swarm=self.swarm.status)
            self._update_swarm(res.status.revision)
        st = res.status
        if (
            res.result is not None
            and res.result.outcome is not Outcome.CONVERGED
            and res.new_revision
        ):
            try:
                await self._gate(Role(st.role or "worker")).mark_failed(
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
                doc = self._stamped(st)
                await self._gate(Role(st.role or "worker")).release(slot, doc.to_json())
                self._unreleased = None
                self.last_status = doc
            else:
                await self._write_status(st)
        except TransientError as e:
            self._unreleased = slot
            self.metrics.etcd_errors.inc()
            self.log.warning("status.unwritten", error=str(e))
            res.retry = True
        if res.error_kind == "git":
            self.metrics.git_errors.inc()
        self._sync_counters()
        if res.result is not None:
            self.metrics.drift_repairs.inc(res.result.drift)
            if res.result.outcome is Outcome.CONVERGED:
                self.metrics.set_applied(res.result.revision, time.time())
        elif st.state is NodeState.CONVERGED and st.revision:
            self.metrics.set_applied(st.revision, time.time())
        self._notify(res)
        if self.registrar is not None and st.revision:
            from reconciler.models import NodeSpec
            from reconciler.services import registrations_of

            # unchanged registrations keep running; this only acts when the spec changed
            spec = self.renderer.cache.get(st.revision)
            if isinstance(spec, NodeSpec):
                await self.registrar.update(registrations_of(spec), revision=st.revision)
        if res.result is not None:
            return str(res.result.outcome)
        return str(st.state)

    def _update_swarm(self, revision: str) -> None:
        """Hand the applied revision's node roles to the membership task."""
        from reconciler.models import NodeSpec

        roles = self.renderer.swarm_roles.get(revision)
        spec = self.renderer.cache.get(revision) if revision else None
        if self.swarm is not None and roles is not None and isinstance(spec, NodeSpec):
            self.swarm.update(roles, spec.cluster.managers)

    def _sync_counters(self) -> None:
        """Carry the source's and etcd client's own counters into the metrics."""
        fetches, requests = self.source.fetches, self.etcd.request_count
        self.metrics.git_fetches.inc(max(0, fetches - self._seen[0]))
        self.metrics.etcd_requests.inc(max(0, requests - self._seen[1]))
        self._seen = (fetches, requests)

    def _notify(self, res: PassResult) -> None:
        if self.notifications is None:
            return
        from reconciler.models import NodeSpec

        spec = self.renderer.cache.get(res.status.revision) if res.status.revision else None
        if isinstance(spec, NodeSpec) and spec.cluster.notify != self._notify_cfg:
            from reconciler.notifiers import from_config

            # only when notify: changed, so a missing secret is warned about once
            self._notify_cfg = spec.cluster.notify
            self.notifications.configure(from_config(spec.cluster.notify))
        if self.swarm is not None:
            # every node rejects the same bad commit: with a swarm, only its leader says so
            self.pass_events.announce_rejections = bool(self.swarm.status.get("leader"))
        for event in self.pass_events.events(res):
            self.notifications.emit(event)
