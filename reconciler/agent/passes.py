"""One reconcile pass of a node: source → desired → observe/plan → rollout → apply → report.

A pass is level-triggered: whatever woke it (an etcd event, the resync timer, a webhook),
it re-reads the desired revision, renders it, asks the engine what differs and acts on that.
It never retries by itself: it returns a frozen ``PassResult`` whose ``requeue`` (decided by
``policy``) tells the agent's worker to wait for the next trigger, back off and come again,
or come again after a delay. The pass is named steps (render, target, plan, gate, apply),
each timed by ``_Clock.step``; the agent reports the result.

Which revision a node moves to (``choose_target``) is a pure decision: the desired revision
unless it was rejected (invalid or unsigned) or its rollout failed/halted, in which case the
node stays on (and keeps repairing drift against) its last good revision.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from reconciler import log
from reconciler.agent import selfunit
from reconciler.agent.policy import (
    NO_REQUEUE,
    Requeue,
    UnitJudgement,
    describe,
    for_apply,
    for_error,
    recheck_in,
    unit_word,
    with_units,
)
from reconciler.agent.render import Rejection, Renderer
from reconciler.errors import (
    NodeFault,
    SourceError,
    SwarmkeeperError,
    TransientError,
)
from reconciler.models import NodeSpec, Role
from reconciler.plan.result import Outcome
from reconciler.status import NodeState, NodeStatus, utcnow

if TYPE_CHECKING:
    from reconciler.apply.engine import Engine
    from reconciler.plan.result import ApplyResult
    from reconciler.rollout.gate import Slot

# a quick apply writes no progress at all; a long one shows its step within a second
PROGRESS_DELAY = 0.5
PROGRESS_INTERVAL = 0.5

# (revision, applied, role, max_unavailable, applying status, waiting status) -> slot, or
# None to re-plan; publishes the applying status once allowed, the waiting one if it waits
AcquireSlot = Callable[[str, str, Role, int, NodeStatus, NodeStatus], Awaitable["Slot | None"]]
WriteStatus = Callable[[NodeStatus], Awaitable[None]]


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


@dataclass(frozen=True, slots=True)
class PassResult:
    status: NodeStatus
    requeue: Requeue = NO_REQUEUE
    result: ApplyResult | None = None
    rejection: Rejection | None = None
    new_revision: bool = False  # this pass moved (or tried to move) to another revision
    halts_rollout: bool = False  # the new revision failed its health gate here
    error_kind: str = ""  # "git" | "etcd" | "node" | "systemd" | "bug" for metrics
    slot: Slot | None = None  # held rollout slot: release after the final status is written
    timings: Mapping[str, float] = field(default_factory=dict)  # seconds per step
    restart_self: str = ""  # why the agent's own unit must restart now the pass is done


@dataclass(slots=True)
class _Clock:
    """Times the named steps of one pass."""

    timings: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - t, 4)


async def run_pass(
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
    self_unit: str = "",
) -> PassResult:
    """One pass. ``acquire`` waits for a rollout slot; ``write_status`` publishes status.
    ``timings`` of the result holds the seconds each step took.

    ``self_unit`` is the agent's own unit: the engine never restarts it (``selfunit``); a
    converged pass that changed it says so in ``restart_self``.
    """
    clock = _Clock()
    res = await _steps(node, renderer, engine, desired, failed_revision, halted, paused,
                       acquire, write_status, clock, self_unit)  # fmt: skip
    return replace(res, timings=dict(clock.timings))


async def _steps(
    node: str,
    renderer: Renderer,
    engine: Engine,
    desired: str | None,
    failed_revision: str | None,
    halted: bool,
    paused: bool,
    acquire: AcquireSlot,
    write_status: WriteStatus,
    clock: _Clock,
    self_unit: str,
) -> PassResult:
    logger = log.get("swarmkeeper.pass")
    inv = engine.inventory()
    applied = inv.revision or None
    role = renderer.facts.role.value if renderer.facts.role else ""
    base = NodeStatus(node=node, role=role, state=NodeState.CONVERGED,
                      revision=applied or "", desired=desired or "", updated_at=utcnow())  # fmt: skip

    # render: the desired revision's spec, or why it is rejected
    rejection: Rejection | None = None
    try:
        with clock.step("render"):
            desired_spec = await renderer.spec(desired) if desired else None
    except SourceError as e:
        return _failed(base, e, f"git: {e}")
    if isinstance(desired_spec, NodeSpec) and desired:
        managed = frozenset(u.name for u in inv.units)
        why = selfunit.removal(desired_spec, managed, self_unit)
        desired_spec = Rejection(desired, (why,)) if why else desired_spec
    if isinstance(desired_spec, Rejection):
        rejection = desired_spec

    # target: the revision to converge on (the last good one while desired is held back)
    target = choose_target(desired, applied, rejected=rejection is not None,
                           failed_revision=failed_revision, halted=halted)  # fmt: skip
    if target.revision is None:
        # nothing applied and nothing acceptable to apply: not "converged" on anything
        state = NodeState.REJECTED if rejection else NodeState.IDLE
        st = _with(base, state=state, error=rejection.summary if rejection else target.held,
                   problems=rejection.problems if rejection else ())  # fmt: skip
        return PassResult(st, rejection=rejection)
    try:
        spec = desired_spec if target.revision == desired else await renderer.spec(target.revision)
    except SourceError as e:
        return _failed(base, e, f"git: {e}")
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

    # plan: nothing to do ends the pass here
    with clock.step("plan"):
        plan = await engine.plan(spec, inv)
    restart_self = selfunit.restart_due(plan, self_unit)
    if not plan and inv.pending is None:
        if spec.revision != applied:  # a revision that changes nothing here: no slot needed
            await engine.apply(spec)  # executes the empty plan just made: records the revision
            base = _with(base, revision=spec.revision)
        st, again = _judged(base, await _units(engine, spec))
        return PassResult(st, requeue=again, rejection=rejection)

    # gate: a new revision waits for a rollout slot; a repair goes ahead
    new_revision = spec.revision != applied
    slot = None
    applying = _with(base, state=NodeState.APPLYING, rollout="")
    if new_revision:
        try:
            with clock.step("rollout"):
                # still running its last good revision while it waits: peers' gates count
                # it healthy; "waiting" is published only if the gate does not open at once
                slot = await acquire(spec.revision, applied or "", spec.role,
                                     spec.cluster.max_unavailable, applying,
                                     _with(base, rollout="waiting"))  # fmt: skip
        except TransientError as e:
            return _failed(base, e, f"etcd: {e}")
        if slot is None:  # the desired revision moved on while waiting: plan again
            return PassResult(base)
    else:
        await write_status(applying)

    # apply: whatever escapes it still releases the slot (with the report), never halts; a
    # NodeFault (full disk, EIO, EACCES, a busy lock) is the node's, not the revision's; the
    # agent's own unit is written but not restarted here (selfunit)
    progress = StatusProgress(applying, write_status)
    engine.on_progress = progress
    try:
        with clock.step("apply"):
            result = await engine.apply(selfunit.defer(spec, self_unit))
    except Exception as e:
        why = f"node: {describe(e)}" if isinstance(e, NodeFault) else describe(e)
        return replace(_failed(base, e, why), slot=slot, new_revision=new_revision)
    finally:
        engine.on_progress = None
        await progress.close()  # a late progress write must never follow the final status
    logger.info("applied", outcome=str(result.outcome), actions=len(result.actions),
                drift=result.drift, seconds=clock.timings["apply"])  # fmt: skip
    judged = await _units(engine, spec)
    reaction = for_apply(result, new_revision=new_revision)
    if result.outcome is Outcome.CONVERGED:
        st, again = _judged(_with(base, revision=spec.revision), judged)
        return PassResult(st, requeue=again, result=result, rejection=rejection,
                          new_revision=new_revision, slot=slot,
                          restart_self=restart_self)  # fmt: skip
    err = result.error or str(result.outcome)
    if result.failure is not None:
        # the table shows the first line; the rest is systemd's account and the failed
        # invocation's journal lines, so `status --json` answers "why" without ssh
        err = f"{result.failure.unit} {result.failure.state}: rolled back"
        if result.failure.detail:
            err += "\n" + result.failure.detail
    st = _with(base, state=reaction.state, revision=result.applied or "", error=err,
               units={name: j.word for name, j in judged.items()})  # fmt: skip
    return PassResult(st, requeue=reaction.requeue, result=result, rejection=rejection,
                      new_revision=new_revision, halts_rollout=reaction.halt_rollout, slot=slot,
                      error_kind=reaction.error_kind)  # fmt: skip


def _failed(base: NodeStatus, e: BaseException, error: str) -> PassResult:
    """A pass that ends on ``e``: the state and requeue the policy gives its class."""
    r = for_error(e)
    return PassResult(_with(base, state=r.state, error=error), requeue=r.requeue,
                      error_kind=r.error_kind)  # fmt: skip


class StatusProgress:
    """Publishes ``progress`` in the node's status while a long apply moves through its steps.

    The engine calls it synchronously at each step. Nothing is written before the apply has
    run ``delay`` seconds, then at most one write per ``interval``, always the newest step: a
    quick apply (the common case) costs no etcd request beyond its final status, a long one
    shows where it is within a second. ``close`` waits for a write in flight, so a progress
    write never lands after the final status. Status is informative: a failed write never
    fails the apply."""

    def __init__(
        self,
        applying: NodeStatus,
        write: WriteStatus,
        *,
        delay: float = PROGRESS_DELAY,
        interval: float = PROGRESS_INTERVAL,
    ) -> None:
        self.applying = applying
        self.write = write
        self.delay = delay
        self.interval = interval
        self.latest = ""
        self.sent = ""
        self.closed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def __call__(self, text: str) -> None:
        self.latest = text
        if self.task is None and not self.closed.is_set():
            self.task = asyncio.create_task(self._run(), name="status-progress")

    async def _run(self) -> None:
        pause = self.delay
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closed.wait(), pause)
                return  # closed: the final status follows
            pause = self.interval
            text = self.latest
            if text == self.sent:
                continue
            try:
                await self.write(_with(self.applying, progress=text))
            except SwarmkeeperError as e:
                log.get("swarmkeeper.pass").warning("progress.unwritten", error=str(e))
            self.sent = text

    async def close(self) -> None:
        self.closed.set()
        if self.task is not None:
            await asyncio.wait({self.task})


async def _units(engine: Engine, spec: NodeSpec) -> dict[str, UnitJudgement]:
    try:
        st = await engine.systemd.status(list(spec.unit_names))
    except (SwarmkeeperError, OSError):  # status is informative; never fail a pass for it
        return {}
    now = time.monotonic()  # CLOCK_MONOTONIC, the clock of systemd's *TimestampMonotonic
    judged = {}
    for name, s in st.items():
        since = getattr(s, "active_since", 0)
        judged[name] = unit_word(
            getattr(s, "active_state", "unknown"),
            getattr(s, "sub_state", ""),
            getattr(s, "n_restarts", 0),
            now - since / 1e6 if since else None,
        )
    return judged


def _judged(st: NodeStatus, judged: dict[str, UnitJudgement]) -> tuple[NodeStatus, Requeue]:
    """``st`` with its units; degraded if one of them crash-loops (see ``with_units``), and
    then a pass again when that may have changed (a recovered unit sends no event)."""
    units = {name: j.word for name, j in judged.items()}
    state, error = with_units(st.state, st.error, units)
    again = recheck_in(judged.values()) if state is not st.state else NO_REQUEUE
    return _with(st, units=units, state=state, error=error), again


def _with(st: NodeStatus, **changes: object) -> NodeStatus:
    return replace(st, **changes, updated_at=utcnow())  # type: ignore[arg-type]
