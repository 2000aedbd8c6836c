"""The requeue policy as a table: how each way a pass can end maps to the queue and state."""

from __future__ import annotations

import errno

import pytest

from reconciler.agent.policy import (
    BACKOFF,
    NO_REQUEUE,
    Reaction,
    Requeue,
    RequeueKind,
    describe,
    for_apply,
    for_error,
)
from reconciler.errors import (
    ActuatorError,
    EtcdError,
    EtcdUnavailable,
    InvalidDesiredState,
    LeaseNotFound,
    NodeBusy,
    NodeFault,
    Problem,
    SourceError,
    SwarmError,
    SystemdError,
    TransientError,
    UnitFailed,
    UsageError,
)
from reconciler.plan.result import ApplyResult, Failure, Outcome
from reconciler.status import NodeState

DEGRADED, REJECTED = NodeState.DEGRADED, NodeState.REJECTED


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (InvalidDesiredState([Problem("a.yaml", 1, "bad")]), Reaction(NO_REQUEUE, REJECTED)),
        (SourceError("fetch failed"), Reaction(BACKOFF, DEGRADED, error_kind="git")),
        (EtcdUnavailable("down"), Reaction(BACKOFF, DEGRADED, error_kind="etcd")),
        (LeaseNotFound("gone"), Reaction(BACKOFF, DEGRADED, error_kind="etcd")),
        (TransientError("blip"), Reaction(BACKOFF, DEGRADED, error_kind="etcd")),
        (EtcdError("permission denied"), Reaction(BACKOFF, DEGRADED, error_kind="etcd")),
        (NodeFault("ENOSPC"), Reaction(BACKOFF, DEGRADED, error_kind="node")),
        (NodeBusy("apply.lock held"), Reaction(BACKOFF, DEGRADED, error_kind="node")),
        (SystemdError("no bus"), Reaction(BACKOFF, DEGRADED, error_kind="systemd")),
        (UnitFailed("a.service", "failed"), Reaction(BACKOFF, DEGRADED, error_kind="systemd")),
        (SwarmError("wrong swarm"), Reaction(BACKOFF, DEGRADED, error_kind="systemd")),
        (ActuatorError("x"), Reaction(BACKOFF, DEGRADED, error_kind="systemd")),
        (UsageError("bad flag"), Reaction(BACKOFF, DEGRADED)),
        (OSError(errno.EIO, "I/O error"), Reaction(BACKOFF, DEGRADED, error_kind="bug")),
        (KeyError("k"), Reaction(BACKOFF, DEGRADED, error_kind="bug")),
        (RuntimeError("boom"), Reaction(BACKOFF, DEGRADED, error_kind="bug")),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else "",
)
def test_error_class_to_requeue_and_state(error: BaseException, expected: Reaction) -> None:
    got = for_error(error)
    assert got == expected
    assert not got.halt_rollout  # no error class halts a rollout: only a failed health gate


def _result(outcome: Outcome, failure: Failure | None) -> ApplyResult:
    return ApplyResult(outcome, "new", "old", (), failure=failure)


GATE = Failure("a.service", "failed (exit-code)", "")


@pytest.mark.parametrize(
    ("outcome", "failure", "new_revision", "requeue", "state", "halt"),
    [
        (Outcome.CONVERGED, None, True, NO_REQUEUE, NodeState.CONVERGED, False),
        (Outcome.CONVERGED, None, False, NO_REQUEUE, NodeState.CONVERGED, False),
        # the new revision failed its health gate here: it is what broke, the rollout halts
        (Outcome.ROLLED_BACK, GATE, True, NO_REQUEUE, DEGRADED, True),
        (Outcome.FAILED, GATE, True, NO_REQUEUE, DEGRADED, True),
        # a repair of the current revision failed: the cause may be outside, retry
        (Outcome.ROLLED_BACK, GATE, False, BACKOFF, DEGRADED, False),
        # not the revision's fault (systemd refused a call): retry, never halt
        (Outcome.ROLLED_BACK, None, True, BACKOFF, DEGRADED, False),
        (Outcome.FAILED, None, True, BACKOFF, DEGRADED, False),
        (Outcome.FAILED, None, False, BACKOFF, DEGRADED, False),
    ],
)
def test_apply_outcome_to_requeue_state_and_halt(
    outcome: Outcome,
    failure: Failure | None,
    new_revision: bool,
    requeue: Requeue,
    state: NodeState,
    halt: bool,
) -> None:
    r = for_apply(_result(outcome, failure), new_revision=new_revision)
    assert (r.requeue, r.state, r.halt_rollout) == (requeue, state, halt)


def test_requeue_after_is_never_negative() -> None:
    assert Requeue.after(5) == Requeue(RequeueKind.AFTER, 5.0)
    assert Requeue.after(-1).seconds == 0.0


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (SourceError("remote unreachable\nmore"), "remote unreachable"),
        (NodeFault(""), "NodeFault"),
        (RuntimeError("boom"), "RuntimeError: boom"),
        (KeyError("k"), "KeyError: 'k'"),
        (ValueError(), "ValueError"),
    ],
)
def test_a_status_names_the_error(error: BaseException, text: str) -> None:
    assert describe(error) == text
