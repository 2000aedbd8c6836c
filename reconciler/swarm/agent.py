"""The agent's link to Docker Swarm membership (``--docker``): one task beside the worker.

Membership runs as its own task, not inside a reconcile pass: a bootstrap can wait up to a
minute for the first manager and a join through a dead manager takes the engine 20 s, and
neither may hold up unit rollouts. The reconcile worker hands it the node roles of each
applied revision (``update``); it reports each membership pass back through ``on_change``
(the agent then writes the status key) and notifies joins and departures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from reconciler import log
from reconciler.backoff import Backoff
from reconciler.errors import TransientError
from reconciler.models import Role

if TYPE_CHECKING:
    from reconciler.etcd.client import Etcd
    from reconciler.notify.events import Event
    from reconciler.swarm.membership import Membership, MembershipStatus


class SwarmLink:
    def __init__(
        self,
        etcd: Etcd,
        *,
        docker: str,
        node: str,
        address: str,
        prefix: str,
        role: Role | None,
        on_change: Callable[[], None],
        emit: Callable[[Event], None] | None = None,
    ) -> None:
        self.etcd = etcd
        self.docker = docker
        self.node = node
        self.address = address
        self.prefix = prefix
        self.role = role  # the node's own fact, for a state that leaves its role open
        self.on_change = on_change
        self.emit = emit
        self.status: dict[str, Any] = {}  # MembershipStatus.as_dict() of the last pass
        self.errors = 0
        self._backoff = Backoff(base=2.0, cap=60.0)
        self._desired: tuple[dict[str, Role | None], int] | None = None
        self._ready = asyncio.Event()  # a revision has been applied: roles are known
        self._membership: Membership | None = None
        self._log = log.get("swarmkeeper.swarm").bind(node=node)

    def update(self, roles: dict[str, Role | None], managers: int) -> None:
        """The applied revision's roles (every listed node) and cluster.yaml ``managers``."""
        desired = (roles, managers)
        if desired != self._desired:
            self._desired = desired
            self._ready.set()
            if self._membership is not None:
                self._membership.poke()

    async def run(self) -> None:
        from reconciler.actuators.swarm import SwarmEngine
        from reconciler.swarm.membership import Membership, run_membership

        await self._ready.wait()  # nothing to decide before a revision is applied
        async with SwarmEngine(self.docker) as engine:
            self._membership = Membership(self.etcd, engine, node=self.node,
                                          address=self.address, prefix=self.prefix,
                                          role=self.role)  # fmt: skip
            while True:
                try:
                    await run_membership(self._membership, self._current, on_status=self._seen)
                except* TransientError as eg:
                    self.errors += 1
                    delay = self._backoff.next_delay()
                    if self._backoff.first_failure:  # one line an outage
                        self._log.warning("membership.retry", error=str(eg.exceptions[0]))
                    await asyncio.sleep(delay)

    def _current(self) -> tuple[dict[str, Role | None], int]:
        assert self._desired is not None  # run() waits for the first update()
        return self._desired

    def _seen(self, m: MembershipStatus) -> None:
        from reconciler.notify.events import Event, EventKind

        self._backoff.reset()  # a pass that reports a status ended any outage
        d = m.as_dict()
        before = self.status.get("state")
        if d != self.status:
            self.status = d
            self.on_change()
        if self.emit is None or before == d["state"]:
            return
        if d["state"] == "member":
            msg = f"{d['role']} of swarm {str(d['cluster_id'])[:12]}".rstrip()
            self.emit(Event.of(EventKind.SWARM_JOINED, self.node, message=msg))
        elif before == "member":
            msg = f"now {d['state']}: {d['error']}".rstrip(": ")
            self.emit(Event.of(EventKind.SWARM_LEFT, self.node, message=msg))
