"""The node agent: one asyncio process that keeps its node on the desired revision.

Named tasks in one TaskGroup:

- ``watch <key>``: one resuming etcd watch per control key (the desired revision, this
  node's ``pause``, ``rollout/failed``, ``rollout/halted``: ``control.Control``); a change
  only enqueues.
- ``poll``: the slow fallback for clusters that publish nothing: fetch the branch head.
- ``resync``: enqueues a pass every few minutes (jittered) so drift is repaired anyway.
- ``heartbeat``: keeps ``<prefix>/nodes/<node>/alive`` on a lease, re-creating it after an
  outage; the same lease binds rollout slots, so a dead node frees its slot by itself.
- ``worker``: takes the queue, runs one pass at a time (``reconcile.run_pass``), reports
  status, and is the one place that decides backoff and requeue.
- ``http``, ``notify``, ``services``: /healthz + /metrics + webhook; notifications;
  health-checked service registration.

Before any task starts, the agent makes sure no live agent already runs this node
(``reconciler.nodeid``). SIGTERM/SIGINT cancel the tasks (a pass in flight is abandoned
between actions; the engine's pending marker makes the next run finish it), revoke the
lease, and exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from reconciler import keys, log
from reconciler.agent import policy
from reconciler.agent.metrics import Metrics
from reconciler.agent.passes import PassResult, run_pass
from reconciler.agent.render import Renderer
from reconciler.agent.report import Reporter
from reconciler.agent.workqueue import WorkQueue, jittered
from reconciler.backoff import Backoff
from reconciler.control import Control
from reconciler.desired.filespolicy import FilesPolicy
from reconciler.errors import SwarmkeeperError, TransientError
from reconciler.models import NodeFacts, NodeName, Role
from reconciler.rollout.decide import Markers
from reconciler.status import NodeState, utcnow

if TYPE_CHECKING:
    from reconciler.agent.services import ServiceRegistrar
    from reconciler.apply.engine import Engine
    from reconciler.etcd.client import Etcd, Lease
    from reconciler.notify.hub import Notifications
    from reconciler.revisions.artifact import Artifact
    from reconciler.swarm.agent import SwarmLink


@dataclass(frozen=True, slots=True)
class AgentSettings:
    node: str
    role: Role | None
    address: str
    repo: str
    branch: str
    state_dir: Path
    etcd: tuple[str, ...]
    prefix: str = "/swarmkeeper"
    listen: str = ""  # "" disables the HTTP server
    poll_interval: float = 60.0
    resync_interval: float = 300.0
    heartbeat_ttl: int = 10
    allowed_signers: Path | None = None
    gnupg_home: Path | None = None
    webhook_secret: bytes | None = None
    docker: str = ""  # unix:///var/run/docker.sock: manage swarm membership ("" = off)
    files_policy: FilesPolicy = field(default_factory=FilesPolicy)  # the node's, not git's
    source: str = "auto"  # "auto": render from etcd's revision artifacts, git if none; "git"
    self_unit: str = ""  # the unit this agent runs as (reconciler.agent.selfunit); "" = unknown
    self_restart_grace: float = 60.0  # seconds to wait for systemd to stop us after asking


class Agent:
    def __init__(self, s: AgentSettings, etcd: Etcd, engine: Engine) -> None:
        from reconciler.source import GitSource

        self.s = s
        self.etcd = etcd
        self.engine = engine
        self.prefix = keys.norm(s.prefix)
        self.facts = NodeFacts(NodeName(s.node), s.role, s.address, s.etcd)
        self.source = GitSource(s.repo, s.branch, s.state_dir / "git")
        self.queue = WorkQueue()
        self.metrics = Metrics()
        self.renderer = Renderer(self.source, self.facts, allowed_signers=s.allowed_signers,
                                 gnupg_home=s.gnupg_home, prefix=self.prefix,
                                 files_policy=s.files_policy,
                                 artifacts=self._artifact if s.source == "auto" else None,
                                 on_render=lambda src: self.metrics.renders.labels(src).inc())  # fmt: skip
        self.log = log.get("swarmkeeper.agent").bind(node=s.node)
        self.control = Control(self.prefix, s.node)  # desired revision, pause, rollout markers
        self.polled: str | None = None  # branch head, when nothing is published
        self.lease: Lease | None = None
        self.last_pass_at = 0.0
        self.passes = 0
        self.stop_event = asyncio.Event()
        self.restarting = False  # our own unit's restart is queued: no more passes
        self.control_read = asyncio.Event()  # the first read of the control keys is done
        self._read_keys: set[str] = set()
        self.notifications: Notifications | None = None
        self.registrar: ServiceRegistrar | None = None
        self.swarm: SwarmLink | None = None  # with --docker: swarm membership
        self.reporter = Reporter(self, s.node, etcd=etcd, engine=engine, prefix=self.prefix,
                                 source=self.source, renderer=self.renderer,
                                 metrics=self.metrics, log=self.log)  # fmt: skip
        self.restart_due = ""  # why our own unit must restart (selfunit); "" = it need not

    def markers(self) -> Markers:
        return Markers(self.control.failed_raw, self.control.halted)

    def follows(self, revision: str) -> bool:
        """Nothing is published and ``revision`` is the branch head this agent polled."""
        return self.control.desired is None and revision == self.polled

    # -- state read from etcd ------------------------------------------------------------

    async def _watch(self, key: str) -> None:
        from reconciler.etcd.client import Resynced

        k = key.encode()
        backoff = Backoff(base=0.5, cap=30.0)
        while True:
            try:
                kvs, rev = await self.etcd.get_prefix(key)
                if failures := backoff.reset():
                    self.log.info("watch.recovered", key=key, retries=failures)
                self.control.absorb(k, next((kv.value for kv in kvs if kv.key == k), None))
                self._read_keys.add(key)
                if len(self._read_keys) == len(self.control.watched()):
                    self.control_read.set()
                self.queue.enqueue("startup")
                async for item in self.etcd.watch_prefix(key, start_revision=rev + 1):
                    if isinstance(item, Resynced):
                        value = next((kv.value for kv in item.kvs if kv.key == k), None)
                        if self.control.absorb(k, value):
                            self.queue.enqueue("etcd-resync")
                    elif item.kv.key == k and self.control.absorb(
                        k, item.kv.value if item.kind == "put" else None
                    ):
                        self.queue.enqueue("etcd")
            except TransientError as e:
                self.metrics.etcd_errors.inc()
                delay = backoff.next_delay()
                if backoff.first_failure:  # one line an outage; "recovered" ends it
                    self.log.warning("watch.retry", key=key, error=str(e))
                await asyncio.sleep(delay)

    async def _poll(self) -> None:
        await self.control_read.wait()  # poll at once only if etcd has nothing published
        first = True
        while True:
            if not first:
                await asyncio.sleep(jittered(self.s.poll_interval))
            first = False
            if self.control.desired is not None:
                continue  # something is published: git is fetched only for missing commits
            try:
                head = await asyncio.to_thread(self.source.branch_head)
                self.reporter.sync_counters()
            except SwarmkeeperError as e:
                self.metrics.git_errors.inc()
                self.log.warning("poll.failed", error=str(e))
                continue
            if head != self.polled:
                self.polled = head
                self.queue.enqueue("poll")

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(jittered(self.s.resync_interval))
            self.queue.enqueue("resync")

    async def _heartbeat(self) -> None:
        key = keys.node_alive(self.prefix, self.s.node)
        written_for: int | None = None  # the lease the alive key is bound to
        # capped at a third of the TTL so a retry still comes before the lease can expire
        backoff = Backoff(base=0.5, cap=max(0.5, self.s.heartbeat_ttl / 3))
        while True:
            try:
                # only a lease etcd says is gone is replaced: one that is merely unconfirmed
                # (etcd was unreachable) is still kept alive and usually survives the outage
                if self.lease is None or self.lease.lost:
                    self.lease = await self.etcd.lease(self.s.heartbeat_ttl)
                    self.log.info("heartbeat.lease", lease=self.lease.id)
                if written_for != self.lease.id:
                    await self.etcd.put(key, json.dumps({"node": self.s.node, "pid": _pid(), "since": utcnow(), "ttl": self.s.heartbeat_ttl}),
                                        lease=self.lease)  # fmt: skip
                    written_for = self.lease.id
                if failures := backoff.reset():
                    self.log.info("heartbeat.recovered", retries=failures)
                await asyncio.sleep(max(1.0, self.s.heartbeat_ttl / 3))
            except TransientError as e:
                self.metrics.etcd_errors.inc()
                delay = backoff.next_delay()
                if backoff.first_failure:
                    self.log.warning("heartbeat.retry", error=str(e))
                await asyncio.sleep(delay)

    async def _worker(self) -> None:
        while True:
            reasons = await self.queue.get()
            await self.reconcile(reasons)
            if self.restart_due:
                await self._restart_self()

    async def _restart_self(self) -> None:
        """Have systemd restart our own unit, now that the pass is done and reported.

        The job stops this process (SIGTERM: ``run`` shuts down cleanly) and starts the new
        definition. Until then no pass starts. If the job cannot be queued, the next pass
        tries again; if it never stops us (``--self-unit`` names another unit), we carry on.
        """
        from reconciler.agent.selfunit import QueuesRestart

        sd = self.engine.systemd
        unit, why = self.s.self_unit, self.restart_due
        if not isinstance(sd, QueuesRestart):
            self.restart_due = ""
            return
        try:
            job = await sd.queue_restart(unit)
        except SwarmkeeperError as e:
            retry_in = self._requeue(policy.BACKOFF)  # the next pass asks again
            self.log.warning("agent.restart-self", unit=unit, reason=why, error=str(e),
                             retry_in=retry_in)  # fmt: skip
            return
        self.log.info("agent.restart-self", unit=unit, reason=why, job=job)
        self.restarting = True
        # Sleep, to be cancelled by the shutdown systemd's SIGTERM starts; waiting for the
        # stop event inside wait_for instead could swallow that cancellation (Python 3.11).
        await asyncio.sleep(self.s.self_restart_grace)
        self.restarting = False
        self.restart_due = ""
        self.log.error("agent.restart-self", unit=unit, reason=why,
                       error=f"systemd did not stop this process within {self.s.self_restart_grace:g}s: "
                             "is --self-unit the unit this agent runs as?")  # fmt: skip

    async def _artifact(self, revision: str) -> Artifact | None:
        from reconciler.revisions.store import read

        return await read(self.etcd, self.prefix, revision)

    # -- one pass ------------------------------------------------------------------------

    async def reconcile(self, reasons: frozenset[str]) -> PassResult | None:
        self.passes += 1
        desired = self.control.desired or self.polled
        t0 = time.perf_counter()
        with structlog.contextvars.bound_contextvars(
            node=self.s.node, pass_id=self.passes, commit=(desired or "")[:12]
        ):
            try:
                res = await run_pass(
                    node=self.s.node, renderer=self.renderer, engine=self.engine,
                    desired=desired, failed_revision=self.control.failed_revision,
                    halted=self.control.halted, paused=self.control.paused,
                    acquire=self.reporter.acquire, write_status=self.reporter.write_status,
                    self_unit=self.s.self_unit,
                )  # fmt: skip
            except Exception as e:
                # the pass boundary: etcd gone mid-pass, systemd refusing a read, a corrupt
                # inventory, or a bug. The node stays as it is, says so (naming the error),
                # keeps its heartbeat, and the policy decides when to look again.
                reaction = policy.for_error(e)
                self.metrics.passes.labels(outcome="error").inc()
                if reaction.error_kind == "etcd":
                    self.metrics.etcd_errors.inc()
                retry_in = self._requeue(reaction.requeue)
                if reaction.error_kind == "bug":
                    self.log.error("pass", outcome="error", error=policy.describe(e),
                                   retry_in=retry_in, exc_info=e)  # fmt: skip
                else:
                    self.log.warning("pass", outcome="error", error=str(e), retry_in=retry_in)
                await self.reporter.report_error(desired, policy.describe(e), reaction.state)
                return None
            why = self.control.failed_here(desired)
            if res.result is None and why is not None and res.status.state is NodeState.CONVERGED:
                # this node is where the rollout failed: keep saying so until a new publish
                # (on the first line, the one the table shows; systemd's account follows)
                first, sep, rest = why.partition("\n")
                halted = f"{first} (rollout of {(desired or '')[:12]} halted){sep}{rest}"
                res = replace(res, status=replace(res.status, state=NodeState.DEGRADED,
                                                  error=halted))  # fmt: skip
            outcome, written = await self.reporter.report(res)
            if res.restart_self:
                self.restart_due = res.restart_self
            dt = time.perf_counter() - t0
            self.metrics.pass_seconds.observe(dt)
            self.metrics.passes.labels(outcome=outcome).inc()
            self.last_pass_at = time.time()
            # a status etcd did not take is retried like any transient error
            retry_in = self._requeue(res.requeue if written else policy.BACKOFF)
            self.log.info("pass", outcome=outcome, state=str(res.status.state),
                          revision=res.status.revision[:12], reasons=sorted(reasons),
                          actions=len(res.result.actions) if res.result else 0,
                          error=res.status.error or None, seconds=round(dt, 3), steps=res.timings,
                          retry_in=retry_in)  # fmt: skip
            return res

    def _requeue(self, requeue: policy.Requeue) -> float | None:
        """The one place a pass's end reaches the queue; returns the delay, if any."""
        match requeue.kind:
            case policy.RequeueKind.NONE:
                self.queue.succeeded()
                return None
            case policy.RequeueKind.BACKOFF:
                return round(self.queue.requeue_after_failure("retry"), 1)
            case policy.RequeueKind.AFTER:
                self.queue.succeeded()
                self.queue.enqueue("requeue", requeue.seconds)
                return requeue.seconds

    # -- publish (webhook) ---------------------------------------------------------------

    async def publish(self, after: str, delivery: str) -> list[str]:
        """The webhook's push: ``after`` must be the branch head in the remote; then the one
        publish path. Returns the commit's problems if invalid; raises PublishRefused."""
        from reconciler.errors import InvalidDesiredState
        from reconciler.revisions.publish import PublishRefused, publish_revision
        from reconciler.source import is_ancestor

        try:
            head = await asyncio.to_thread(self.source.branch_head)
            if head != after:
                raise PublishRefused(
                    f"{after[:12]} is not the head of {self.s.branch} in the remote "
                    f"(the head is {head[:12]}): refusing it"
                )
            tree = await asyncio.to_thread(self.source.tree, head)
            await publish_revision(
                self.etcd, self.prefix, tree, actor=f"webhook@{self.s.node}", delivery=delivery,
                repo=self.source.dir,  # the artifact is built from the agent's own mirror
                ancestry=lambda old, new: is_ancestor(self.source.dir, old, new),
            )  # fmt: skip
        except InvalidDesiredState as e:
            return [str(p) for p in e.problems]
        return []

    def health(self) -> dict[str, Any]:
        st = self.reporter.last_status
        return {
            "ok": not self.stop_event.is_set(),
            "node": self.s.node,
            "state": str(st.state) if st else "starting",
            "revision": st.revision if st else "",
            "desired": self.control.desired or self.polled or "",
            "passes": self.passes,
            "restarting": self.restarting,
            "last_pass_age": round(time.time() - self.last_pass_at, 1)
            if self.last_pass_at
            else None,
        }

    # -- the process ---------------------------------------------------------------------

    async def run(self) -> int:
        from reconciler.notify.events import Event, EventKind
        from reconciler.notify.hub import Notifications

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop_event.set)
        from reconciler.agent.nodeid import ensure_sole_agent

        await ensure_sole_agent(self.etcd, self.prefix, self.s.node)
        runner = None
        try:
            async with asyncio.TaskGroup() as tg:
                self.notifications = Notifications()
                from reconciler.agent import opsmetrics

                opsmetrics.register(self.metrics.registry, lambda: self.notifications,
                                    lambda: self.registrar)  # fmt: skip
                tg.create_task(self.notifications.run(), name="notify")
                tg.create_task(self._heartbeat(), name="heartbeat")
                for key in self.control.watched():
                    tg.create_task(self._watch(key), name=f"watch {key}")
                tg.create_task(self._poll(), name="poll")
                tg.create_task(self._resync(), name="resync")
                tg.create_task(self._worker(), name="worker")
                tg.create_task(self._services(), name="services")
                if self.s.docker:
                    from reconciler.swarm.agent import SwarmLink

                    self.swarm = SwarmLink(
                        self.etcd, docker=self.s.docker, node=self.s.node, address=self.s.address,
                        prefix=self.prefix, role=self.facts.role,
                        on_change=lambda: self.queue.enqueue("swarm"),  # next pass writes status
                        emit=self.notifications.emit,
                    )  # fmt: skip
                    tg.create_task(self.swarm.run(), name="membership")
                if self.s.listen:
                    runner = await self._serve()
                self.notifications.emit(Event.of(EventKind.AGENT_STARTED, self.s.node))
                await self.stop_event.wait()
                self.log.info("agent.stopping")
                raise _Stop
        except* _Stop:
            pass
        finally:
            await self._shutdown(runner)
        return 0

    async def _services(self) -> None:
        from reconciler.agent.services import ServiceRegistrar

        self.registrar = ServiceRegistrar(
            self.etcd, prefix=self.prefix, node=self.s.node, address=self.s.address,
            emit=self.notifications.emit if self.notifications else None,
            unit_active=self._unit_active,
        )  # fmt: skip
        await self.registrar.run()

    async def _unit_active(self, unit: str) -> bool:
        st = await self.engine.systemd.status([unit])
        return getattr(st.get(unit), "active_state", "") == "active"

    async def _serve(self) -> Any:
        from reconciler.agent.http import make_app, serve

        app = make_app(self.metrics, self.health, webhook_secret=self.s.webhook_secret,
                       branch=self.s.branch, publish=self.publish)  # fmt: skip
        host, _, port = self.s.listen.rpartition(":")
        return await serve(app, host or "127.0.0.1", int(port))

    async def _shutdown(self, runner: Any) -> None:
        from reconciler.notify.events import Event, EventKind

        with contextlib.suppress(Exception):
            if self.registrar is not None:
                await asyncio.wait_for(self.registrar.aclose(), 5)
        if self.lease is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.lease.revoke(), 3)
        if self.notifications is not None:
            self.notifications.emit(Event.of(EventKind.AGENT_STOPPED, self.s.node))
            with contextlib.suppress(Exception):
                await self.notifications.aclose(flush_within=3.0)
        if runner is not None:
            await runner.cleanup()
        self.log.info("agent.stopped", passes=self.passes)


class _Stop(Exception):
    pass


def _pid() -> int:
    import os

    return os.getpid()
