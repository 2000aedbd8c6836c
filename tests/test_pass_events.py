"""PassResult -> operator events: table-driven over real PassResult/ApplyResult values."""

from __future__ import annotations

import pytest

from reconciler.agent.events import MAX_DRIFT_EVENTS, PassEvents
from reconciler.agent.passes import PassResult
from reconciler.agent.render import Rejection
from reconciler.models import Revision
from reconciler.notify.events import EventKind, Severity
from reconciler.plan import planner as P
from reconciler.plan.result import ActionResult, ApplyResult, Failure, Outcome
from reconciler.status import NodeState, NodeStatus

OLD = Revision("a" * 40)
NEW = Revision("b" * 40)
BAD = "c" * 40


def status() -> NodeStatus:
    return NodeStatus(node="w1", role="worker", state=NodeState.CONVERGED)


def acts(*actions: P.Action) -> tuple[ActionResult, ...]:
    return tuple(ActionResult(a, "done", 0.01) for a in actions)


def applied(
    *actions: P.Action,
    outcome: Outcome = Outcome.CONVERGED,
    failure: Failure | None = None,
    now: Revision | None = NEW,
    error: str = "",
) -> ApplyResult:
    return ApplyResult(
        outcome, NEW, now, acts(*actions), failure=failure, error=error, duration=1.25
    )


RESTART_DRIFT = P.StartUnit("vault.service", "was inactive", drift=True)
FILE_DRIFT = P.WriteFile("/etc/motd", b"x", 0o644, "content changed on disk", drift=True)
VERIFY = P.Verify((("vault.service", 30.0),), "health gate", drift=True)
WRITE_NEW = P.WriteUnit("etcd-member.service", b"[Service]\n", "changed in git")


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (PassResult(status()), []),
        (
            PassResult(status(), result=applied(WRITE_NEW), new_revision=True),
            [(EventKind.REVISION_APPLIED, "", "1 action(s) in 1.2s")],
        ),
        (
            PassResult(status(), result=applied(RESTART_DRIFT, FILE_DRIFT, VERIFY)),
            [
                (EventKind.DRIFT_REPAIRED, "vault.service", "start vault.service: was inactive"),
                (EventKind.DRIFT_REPAIRED, "", "write /etc/motd: content changed on disk"),
            ],
        ),
        (PassResult(status(), result=applied(WRITE_NEW)), []),  # changes, but none is drift
        (
            PassResult(
                status(),
                result=applied(
                    WRITE_NEW,
                    outcome=Outcome.ROLLED_BACK,
                    now=OLD,
                    failure=Failure("etcd-member.service", "failed (exit-code)", "x"),
                ),
                new_revision=True,
                halts_rollout=True,
            ),
            [
                (
                    EventKind.APPLY_ROLLED_BACK,
                    "etcd-member.service",
                    "etcd-member.service failed (exit-code); rolled back to aaaaaaa",
                ),
                (
                    EventKind.ROLLOUT_HALTED,
                    "etcd-member.service",
                    "rollout of bbbbbbb halted: it failed here",
                ),
            ],
        ),
        (
            PassResult(
                status(),
                result=applied(
                    WRITE_NEW, outcome=Outcome.FAILED, now=None, error="systemd went away"
                ),
                new_revision=True,
            ),
            [
                (  # not the revision's fault (no health-gate failure): no halt
                    EventKind.APPLY_ROLLED_BACK,
                    "",
                    "systemd went away; rollback failed too, node needs a look",
                ),
            ],
        ),
        (  # a failed repair of the current revision halts nothing
            PassResult(
                status(),
                result=applied(
                    RESTART_DRIFT,
                    outcome=Outcome.ROLLED_BACK,
                    now=NEW,
                    failure=Failure("vault.service", "failed (exit-code)", ""),
                ),
            ),
            [
                (
                    EventKind.APPLY_ROLLED_BACK,
                    "vault.service",
                    "vault.service failed (exit-code); rolled back to bbbbbbb",
                )
            ],
        ),
    ],
)
def test_events_for_one_pass(
    result: PassResult, expected: list[tuple[EventKind, str, str]]
) -> None:
    events = PassEvents("w1").events(result)
    assert [(e.kind, e.unit, e.message) for e in events] == expected
    assert all(e.node == "w1" and e.revision == NEW for e in events)
    if expected and expected[0][0] is EventKind.APPLY_ROLLED_BACK:
        assert events[0].severity is Severity.ERROR


def test_a_rejection_is_announced_once_per_revision() -> None:
    pe = PassEvents("m1")
    rej = Rejection(BAD, ("state/roles/manager.yaml:12: unknown key 'regster'", "b:1: x"))
    first = pe.events(PassResult(status(), rejection=rej))
    assert [(e.kind, e.revision) for e in first] == [(EventKind.REVISION_REJECTED, BAD)]
    assert first[0].message == (
        "revision cccccccccccc rejected: state/roles/manager.yaml:12: unknown key 'regster' "
        "(+1 more)"
    )
    assert first[0].details["count"] == 2
    assert pe.events(PassResult(status(), rejection=rej)) == []  # the next passes: quiet
    other = Rejection("d" * 40, ("x:1: y",))
    assert [e.revision for e in pe.events(PassResult(status(), rejection=other))] == ["d" * 40]
    assert pe.events(PassResult(status())) == []  # fixed
    assert len(pe.events(PassResult(status(), rejection=rej))) == 1  # bad again: say it again


def test_rejections_can_be_left_to_another_node() -> None:
    pe = PassEvents("w7", announce_rejections=False)
    assert pe.events(PassResult(status(), rejection=Rejection(BAD, ("a:1: b",)))) == []


def test_many_drifted_units_are_capped_and_summarised() -> None:
    units = [P.StartUnit(f"u{i:02}.service", "was inactive", drift=True) for i in range(14)]
    events = PassEvents("w1").events(PassResult(status(), result=applied(*units)))
    assert len(events) == MAX_DRIFT_EVENTS
    assert events[-1].message.endswith(
        "(and 4 more unit(s): u10.service, u11.service, u12.service, u13.service)"
    )
