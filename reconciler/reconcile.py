"""One reconcile pass of a node: source → desired → observe/plan → rollout → apply → report.

A pass is level-triggered: whatever woke it (an etcd event, the resync timer, a webhook),
it re-reads the desired revision, renders it, asks the engine what differs and acts on that.
It never retries by itself: it returns a ``PassResult`` whose ``retry`` says whether the
agent's work queue should back off and come again (transient trouble) or wait for the next
trigger (done, or an invalid revision that retrying cannot fix).

Which revision a node moves to (``choose_target``) is a pure decision: the desired revision
unless it was rejected (invalid or unsigned) or its rollout failed/halted, in which case the
node stays on (and keeps repairing drift against) its last good revision.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler import log, selfunit
from reconciler.apply import Outcome
from reconciler.errors import InvalidDesiredState, SourceError, SwarmkeeperError, TransientError
from reconciler.models import NodeFacts, NodeSpec, Role
from reconciler.status import NodeState, NodeStatus, utcnow

if TYPE_CHECKING:
    from reconciler.apply import ApplyResult, Engine
    from reconciler.rollout import Slot
    from reconciler.source import GitSource

# (revision, applied, role, max_unavailable, applying status, waiting status) -> slot, or
# None to re-plan; publishes the applying status once allowed, the waiting one if it waits
AcquireSlot = Callable[[str, str, Role, int, NodeStatus, NodeStatus], Awaitable["Slot | None"]]
WriteStatus = Callable[[NodeStatus], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Rejection:
    revision: str
    problems: tuple[str, ...]

    @property
    def summary(self) -> str:
        first = self.problems[0] if self.problems else "rejected"
        more = f" (+{len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        return f"revision {self.revision[:12]} rejected: {first}{more}"


@dataclass(frozen=True, slots=True)
class Target:
    """What this pass converges on, and why it is not the desired revision if it is not."""

    revision: str | None  # None: nothing acceptable to apply yet
    held: str = ""  # why the desired revision is not applied ("" when it is the target)


def choose_target(
    desired: str | None,
    applied: str | None,
    *,
    rejected: bool,
    failed_revision: str | None,
    halted: bool,
) -> Target:
    """Pure: the revision to converge on this pass."""
    if desired is None:
        return Target(applied, "no desired revision published" if applied is None else "")
    if rejected:
        return Target(applied, "desired revision rejected")
    if desired != applied and desired == failed_revision:
        return Target(applied, f"rollout of {desired[:12]} failed")
    if desired != applied and halted:
        return Target(applied, "rollout halted by an operator")
    return Target(desired)


@dataclass(slots=True)
class PassResult:
    status: NodeStatus
    retry: bool = False  # transient trouble: back off and try again
    result: ApplyResult | None = None
    rejection: Rejection | None = None
    new_revision: bool = False  # this pass moved (or tried to move) to another revision
    error_kind: str = ""  # "git" | "etcd" | "systemd" for metrics
    slot: Slot | None = None  # held rollout slot: release after the final status is written
    restart_self: str = ""  # why the agent's own unit must restart now the pass is done
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step


@dataclass
class SpecCache:
    """Rendered specs (or their rejection) by revision: a resync re-renders nothing."""

    size: int = 8
    items: OrderedDict[str, NodeSpec | Rejection] = field(default_factory=OrderedDict)

    def get(self, rev: str) -> NodeSpec | Rejection | None:
        v = self.items.get(rev)
        if v is not None:
            self.items.move_to_end(rev)
        return v

    def put(self, rev: str, v: NodeSpec | Rejection) -> None:
        self.items[rev] = v
        self.items.move_to_end(rev)
        while len(self.items) > self.size:
            self.items.popitem(last=False)


class Renderer:
    """Fetches (once per revision), verifies and renders revisions for one node."""

    def __init__(
        self,
        source: GitSource,
        facts: NodeFacts,
        *,
        allowed_signers: Path | None = None,
        gnupg_home: Path | None = None,
    ) -> None:
        self.source = source
        self.facts = facts
        self.allowed_signers = allowed_signers
        self.gnupg_home = gnupg_home
        self.cache = SpecCache()
        self.swarm_roles: dict[str, dict[str, Role | None]] = {}  # by revision, for membership

    @property
    def verifying(self) -> bool:
        return self.allowed_signers is not None or self.gnupg_home is not None

    async def spec(self, revision: str) -> NodeSpec | Rejection:
        """The spec of ``revision``; raises SourceError when git cannot provide it."""
        cached = self.cache.get(revision)
        if cached is not None:
            return cached
        out = await asyncio.to_thread(self._render, revision)
        self.cache.put(revision, out)
        return out

    def _render(self, revision: str) -> NodeSpec | Rejection:
        from reconciler.desired import load_state, render_state

        sha = self.source.ensure_commit(revision)
        tree = self.source.tree(sha)  # SourceError (retried) if git does not have it
        if self.verifying:
            why = self.source.verify(sha, self.allowed_signers, self.gnupg_home)
            if why is not None:
                return Rejection(revision, (why,))
        try:
            state = load_state(tree)
            spec = render_state(state, self.facts)
        except InvalidDesiredState as e:
            return Rejection(revision, tuple(str(p) for p in e.problems))
        # swarm membership: once state/nodes lists nodes, that list is the membership (a node
        # taken out leaves); a cluster that lists none lets every node join with its role
        roles = {n: Role(nf.role) if nf.role else None for n, nf in state.nodes.items()}
        self.swarm_roles[revision] = roles or {self.facts.name: spec.role}
        return spec


async def run_pass(**kw: Any) -> PassResult:
    """One pass (see ``_run_pass``), with the seconds each step took in ``timings``."""
    timings: dict[str, float] = {}
    res = await _run_pass(timings=timings, **kw)
    res.timings = {k: round(v, 4) for k, v in timings.items()}
    return res


async def _run_pass(
    *,
    node: str,
    renderer: Renderer,
    engine: Engine,
    desired: str | None,
    failed_revision: str | None,
    halted: bool,
    paused: bool,
    acquire: AcquireSlot,
    write_status: WriteStatus,
    timings: dict[str, float],
    self_unit: str = "",
) -> PassResult:
    """One pass. ``acquire`` waits for a rollout slot; ``write_status`` publishes status.

    ``self_unit`` is the agent's own unit: the engine never restarts it (``selfunit``); a
    converged pass that changed it says so in ``restart_self``.
    """
    logger = log.get("swarmkeeper.pass")
    inv = engine.inventory()
    applied = inv.revision or None
    role = renderer.facts.role.value if renderer.facts.role else ""
    base = NodeStatus(node=node, role=role, state=NodeState.CONVERGED,
                      revision=applied or "", desired=desired or "", updated_at=utcnow())  # fmt: skip

    rejection: Rejection | None = None
    try:
        t = time.perf_counter()
        desired_spec = await renderer.spec(desired) if desired else None
        timings["render"] = time.perf_counter() - t
    except SourceError as e:
        return PassResult(_with(base, state=NodeState.DEGRADED, error=f"git: {e}"), retry=True,
                          error_kind="git")  # fmt: skip
    if isinstance(desired_spec, Rejection):
        rejection = desired_spec
    target = choose_target(desired, applied, rejected=rejection is not None,
                           failed_revision=failed_revision, halted=halted)  # fmt: skip
    if target.revision is None:
        state = NodeState.REJECTED if rejection else NodeState.CONVERGED
        st = _with(base, state=state, error=rejection.summary if rejection else target.held,
                   problems=rejection.problems if rejection else ())  # fmt: skip
        return PassResult(st, rejection=rejection)
    try:
        spec = desired_spec if target.revision == desired else await renderer.spec(target.revision)
    except SourceError as e:
        return PassResult(_with(base, state=NodeState.DEGRADED, error=f"git: {e}"), retry=True,
                          error_kind="git")  # fmt: skip
    if isinstance(spec, Rejection) or spec is None:  # the last good one cannot be rejected now
        why = spec.summary if isinstance(spec, Rejection) else "no spec"
        return PassResult(_with(base, state=NodeState.DEGRADED, error=why), rejection=rejection)
    base = _with(base, role=spec.role.value)
    if rejection is not None:
        base = _with(base, state=NodeState.REJECTED, error=rejection.summary,
                     problems=rejection.problems)  # fmt: skip
    elif target.held:
        base = _with(base, error=target.held, rollout="halted")

    if paused or spec.paused:
        return PassResult(_with(base, state=NodeState.PAUSED, error=base.error or "paused"))

    t = time.perf_counter()
    plan = await engine.plan(spec, inv)
    timings["plan"] = time.perf_counter() - t
    restart_self = selfunit.restart_due(plan, self_unit)
    if not plan and inv.pending is None:
        units = await _units(engine, spec)
        return PassResult(_with(base, units=units), rejection=rejection)

    new_revision = spec.revision != applied
    slot = None
    applying = _with(base, state=NodeState.APPLYING, rollout="")
    if new_revision:
        try:
            t = time.perf_counter()
            # still running its last good revision while it waits: peers' gates count it
            # healthy; "waiting" is published only if the gate does not open at once
            slot = await acquire(spec.revision, applied or "", spec.role,
                                 spec.cluster.max_unavailable, applying,
                                 _with(base, rollout="waiting"))  # fmt: skip
            timings["rollout"] = time.perf_counter() - t
        except TransientError as e:
            return PassResult(_with(base, state=NodeState.DEGRADED, error=f"etcd: {e}"),
                              retry=True, error_kind="etcd")  # fmt: skip
        if slot is None:  # the desired revision moved on while waiting: plan again
            return PassResult(base, retry=False, new_revision=False)
    else:
        await write_status(applying)
    t0 = time.perf_counter()
    result = await engine.apply(selfunit.defer(spec, self_unit))
    timings["apply"] = time.perf_counter() - t0
    logger.info("applied", outcome=str(result.outcome), actions=len(result.actions),
                drift=result.drift, seconds=round(time.perf_counter() - t0, 3))  # fmt: skip
    units = await _units(engine, spec)
    if result.outcome is Outcome.CONVERGED:
        st = _with(base, revision=spec.revision, units=units)
        return PassResult(st, result=result, rejection=rejection, new_revision=new_revision,
                          slot=slot, restart_self=restart_self)  # fmt: skip
    err = result.error or str(result.outcome)
    if result.failure is not None:
        err = f"{result.failure.unit} {result.failure.state}: rolled back"
    st = _with(base, state=NodeState.DEGRADED, revision=result.applied or "", error=err,
               units=units)  # fmt: skip
    # a failed new revision is not retried (the rollout halts); a failed repair of the
    # current one is, with backoff, since the cause may be outside (a port, a disk)
    return PassResult(st, retry=not new_revision, result=result, rejection=rejection,
                      new_revision=new_revision, slot=slot, error_kind="systemd")  # fmt: skip


async def _units(engine: Engine, spec: NodeSpec) -> dict[str, str]:
    try:
        st = await engine.systemd.status(list(spec.unit_names))
    except (SwarmkeeperError, OSError):  # status is informative; never fail a pass for it
        return {}
    return {name: getattr(s, "active_state", "unknown") for name, s in st.items()}


def _with(st: NodeStatus, **changes: object) -> NodeStatus:
    return replace(st, **changes, updated_at=utcnow())  # type: ignore[arg-type]
