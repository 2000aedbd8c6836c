"""The agent's one requeue policy: how a pass's end maps to the next pass and the node state.

After controller-runtime's ``reconcileHandler``: a pass never retries by itself. It ends with
a frozen ``PassResult`` whose ``requeue`` is ``none`` (wait for the next trigger),
``backoff`` (come again after the work queue's ``Backoff``) or ``after(seconds)``; an
exception escaping the pass is mapped here too. ``for_error`` and ``for_apply`` are the whole
table, in one ``match`` each; ``errors.py`` documents the same reactions per class. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from reconciler.errors import (
    ActuatorError,
    EtcdError,
    InvalidDesiredState,
    NodeFault,
    SourceError,
    SwarmkeeperError,
    TransientError,
)
from reconciler.plan.result import ApplyResult, Outcome
from reconciler.plan.unittypes import AUTO_RESTART
from reconciler.status import NodeState


class RequeueKind(StrEnum):
    NONE = "none"  # done (or retrying cannot help): wait for the next trigger
    BACKOFF = "backoff"  # transient trouble: the queue's exponential backoff decides when
    AFTER = "after"  # come again after ``seconds`` (no failure: the backoff is reset)


@dataclass(frozen=True, slots=True)
class Requeue:
    kind: RequeueKind = RequeueKind.NONE
    seconds: float = 0.0

    @classmethod
    def after(cls, seconds: float) -> Requeue:
        return cls(RequeueKind.AFTER, max(0.0, seconds))


NO_REQUEUE = Requeue()
BACKOFF = Requeue(RequeueKind.BACKOFF)


@dataclass(frozen=True, slots=True)
class Reaction:
    """What the agent does about one way a pass can end."""

    requeue: Requeue
    state: NodeState  # what the node reports
    halt_rollout: bool = False  # mark the revision failed (``rollout/failed``)
    error_kind: str = ""  # metrics label: "git" | "etcd" | "node" | "systemd" | "bug"


def for_error(e: BaseException) -> Reaction:
    """The reaction to an error that ended a pass (raised, or caught inside it)."""
    match e:
        case InvalidDesiredState():
            return Reaction(NO_REQUEUE, NodeState.REJECTED)
        case SourceError():
            return Reaction(BACKOFF, NodeState.DEGRADED, error_kind="git")
        case NodeFault():
            return Reaction(BACKOFF, NodeState.DEGRADED, error_kind="node")
        case TransientError() | EtcdError():
            return Reaction(BACKOFF, NodeState.DEGRADED, error_kind="etcd")
        case ActuatorError():
            return Reaction(BACKOFF, NodeState.DEGRADED, error_kind="systemd")
        case SwarmkeeperError():
            return Reaction(BACKOFF, NodeState.DEGRADED)
        case _:
            return Reaction(BACKOFF, NodeState.DEGRADED, error_kind="bug")


def for_apply(result: ApplyResult, *, new_revision: bool) -> Reaction:
    """The reaction to an apply's outcome. Only a health-gate failure of a new revision
    halts the rollout: that revision is what broke. A repair of the current revision, or a
    failure that is not the revision's (systemd refusing a call), is retried with backoff."""
    match result.outcome, result.failure, new_revision:
        case Outcome.CONVERGED, _, _:
            return Reaction(NO_REQUEUE, NodeState.CONVERGED)
        case _, None, _:
            return Reaction(BACKOFF, NodeState.DEGRADED, error_kind="systemd")
        case _, _, True:
            return Reaction(NO_REQUEUE, NodeState.DEGRADED, halt_rollout=True, error_kind="systemd")
        case _:
            return Reaction(BACKOFF, NodeState.DEGRADED, error_kind="systemd")


def describe(e: BaseException) -> str:
    """How a node names an error in its status: the type for bugs, the message always."""
    text = str(e).splitlines()[0][:300] if str(e) else ""
    if isinstance(e, SwarmkeeperError):
        return text or type(e).__name__
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


RESTARTING = "restarting"
# A unit systemd restarted on its own that has stayed up this long since is taken as recovered:
# a unit that failed at boot until what it needed arrived (an image, a peer) is not looping.
RECOVERED_AFTER = 30.0


@dataclass(frozen=True, slots=True)
class UnitJudgement:
    word: str  # the unit's entry in the status
    recheck_in: float | None = None  # seconds until this word may change with no event


def unit_word(
    active_state: str, sub_state: str, n_restarts: int, up_for: float | None = None
) -> UnitJudgement:
    """A unit's entry in the status: its ActiveState, or ``restarting (N restarts ...)`` when
    systemd's ``Restart=`` keeps bringing it back (a crash loop is ``active`` between crashes).

    ``NRestarts`` counts automatic restarts since the unit's last explicit start (the one an
    apply or a repair made) and never goes down by itself, so it only speaks of now while
    the unit is waiting to restart or came back less than ``RECOVERED_AFTER`` ago (``up_for``:
    seconds since it last became active; None when unknown, which counts as just now). The
    judgement says when to look again, so a recovered unit stops degrading its node.
    """
    if sub_state == AUTO_RESTART:
        return UnitJudgement(
            f"{RESTARTING} ({n_restarts} restarts since its start)", RECOVERED_AFTER
        )
    if n_restarts > 0 and active_state == "active":
        up = 0.0 if up_for is None else max(0.0, up_for)
        if up < RECOVERED_AFTER:
            word = f"{RESTARTING} ({n_restarts} restarts since its start, up {up:.0f} s)"
            return UnitJudgement(word, RECOVERED_AFTER - up)
    return UnitJudgement(active_state)


def recheck_in(judgements: Iterable[UnitJudgement]) -> Requeue:
    """Come again when the first of these words may change; none if none can."""
    times = [j.recheck_in for j in judgements if j.recheck_in is not None]
    return Requeue.after(min(times) + 0.5) if times else NO_REQUEUE


def with_units(state: NodeState, error: str, units: dict[str, str]) -> tuple[NodeState, str]:
    """A converged node with a crash-looping unit is degraded, the units named in ``error``."""
    looping = sorted(n for n, w in units.items() if w.startswith(RESTARTING))
    if state is not NodeState.CONVERGED or not looping:
        return state, error
    return NodeState.DEGRADED, "crash-looping: " + ", ".join(f"{n} {units[n]}" for n in looping)
