"""Adoption, giving back, drop-ins and sockets' services in the pure planner: table rows."""

from __future__ import annotations

import pytest

from reconciler.models import OnChange, Revision, UnitName, UnitSpec, sha256
from reconciler.plan import applied
from reconciler.plan import planner as P
from reconciler.plan.applied import Original
from reconciler.plan.records import give_back
from reconciler.plan.unittypes import Ran
from tests.specs import spec, unit

RUNNING = P.UnitState("loaded", "active", "running", "enabled", "i1", "success", "simple")
STATIC = P.UnitState("loaded", "active", "running", "static", "i1", "success", "simple")
STOPPED = P.UnitState("loaded", "inactive", "dead", "disabled", "", "success", "simple")
OURS = sha256(b"ours")
THEIRS = b"[Service]\nExecStart=/bin/theirs\n"


def _lines(actions: list[object]) -> list[str]:
    return [P.describe(a) if not isinstance(a, P.Gate) else f"gate {a.unit}" for a in actions]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("orig", "st", "ours", "expected"),
    [
        # their own file, running and enabled, which we changed: back, restarted, re-linked
        (Original(THEIRS, digest=sha256(THEIRS), active=True, enabled=True), RUNNING, OURS,
         ["write x.service", "restart x.service", "gate x.service", "enable x.service"]),
        # a vendor unit we overrode: our copy goes, the vendor definition restarts
        (Original(None, vendor=True, digest="v", active=True, enabled=True), RUNNING, OURS,
         ["delete x.service", "restart x.service", "gate x.service", "enable x.service"]),
        # a byte-identical vendor copy: deleting ours changes nothing that runs
        (Original(None, vendor=True, digest=OURS, active=True, enabled=True), RUNNING, OURS,
         ["delete x.service"]),
        # it did not run before: stopped alone, and disabled as it was
        (Original(None, vendor=True, digest="v"), RUNNING, OURS,
         ["delete x.service", "stop x.service", "disable x.service"]),
        # it ran and does not now: started
        (Original(THEIRS, digest=sha256(THEIRS), active=True), STOPPED, sha256(THEIRS),
         ["start x.service", "gate x.service"]),
    ],
)  # fmt: skip
def test_give_back(orig: Original, st: P.UnitState, ours: str, expected: list[str]) -> None:
    got = give_back("x.service", orig, st, ours, Ran.UP)
    assert [line.split(":")[0] for line in _lines(got)] == expected  # type: ignore[arg-type]
    stops = [a for a in got if isinstance(a, P.StopUnit)]
    assert all(a.alone for a in stops)


def test_adoption_is_its_own_first_action_and_recorded_state_comes_from_the_node() -> None:
    s = spec([unit("x.service")])
    obs = P.Observed(units={"x.service": RUNNING}, vendor={"x.service": "v"})
    p = P.plan(s, obs, applied.EMPTY)
    assert p[0] == P.AdoptUnit(
        "x.service",
        Original(None, vendor=True, digest="v", active=True, enabled=True),
        "was unmanaged: vendor definition, active, enabled",
    )
    assert "restart x.service: overrides the vendor definition" in [P.describe(a) for a in p]
    same = P.Observed(units={"x.service": RUNNING}, vendor={"x.service": s.units[0].digest})
    assert not any(isinstance(a, P.RestartUnit) for a in P.plan(s, same, applied.EMPTY))


def dropin(value: str, on_change: OnChange = OnChange.RESTART) -> UnitSpec:
    return UnitSpec(
        UnitName("d.service.d/10-x.conf"), f"[Service]\nEnvironment=X={value}\n".encode(),
        on_change=on_change, timeout=7.0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("before", "after", "state", "expected"),
    [
        (None, dropin("1"), RUNNING, [
            "write d.service.d/10-x.conf: new unit", "daemon-reload: unit files changed",
            "restart d.service: d.service.d/10-x.conf added"]),
        (dropin("1"), dropin("2"), RUNNING, [
            "write d.service.d/10-x.conf: unit changed", "daemon-reload: unit files changed",
            "restart d.service: d.service.d/10-x.conf unit changed"]),
        (dropin("1"), dropin("2", OnChange.RELOAD), RUNNING, [
            "write d.service.d/10-x.conf: unit changed", "daemon-reload: unit files changed",
            "reload d.service: d.service.d/10-x.conf unit changed"]),
        (dropin("1"), None, RUNNING, [
            "delete d.service.d/10-x.conf: no longer desired", "daemon-reload: unit files changed",
            "restart d.service: d.service.d/10-x.conf removed"]),
        (dropin("1"), dropin("2"), STOPPED, [  # a unit that does not run is not started
            "write d.service.d/10-x.conf: unit changed", "daemon-reload: unit files changed"]),
    ],
)  # fmt: skip
def test_a_drop_in_restarts_the_unit_it_configures(
    before: UnitSpec | None, after: UnitSpec | None, state: P.UnitState, expected: list[str]
) -> None:
    inv = applied.from_spec(spec([before] if before else []))
    files = {before.name: before.digest} if before else {}
    obs = P.Observed(unit_files=files, units={"d.service": state})
    p = P.plan(spec([after] if after else [], rev="r2"), obs, inv)
    got = [P.describe(a) for a in p if not isinstance(a, P.Verify)]
    assert got == expected
    gates = [g for a in p if isinstance(a, P.Verify) for g in a.units]
    assert gates == ([P.Gate("d.service", 7.0, None)] if state is RUNNING else [])


SOCK = UnitSpec(UnitName("w.socket"), b"[Socket]\nListenStream=%t/w.sock\n")
SVC = unit("w.service", install=False)


def test_a_socket_restart_stops_its_running_service_first_and_starts_it_after() -> None:
    inv = applied.from_spec(spec([SOCK, SVC]))
    changed = UnitSpec(SOCK.name, SOCK.content + b"Backlog=9\n")
    obs = P.Observed(
        unit_files={"w.socket": SOCK.digest, "w.service": SVC.digest},
        units={"w.socket": STATIC, "w.service": STATIC},
    )
    lines = [P.describe(a) for a in P.plan(spec([changed, SVC], rev="r2"), obs, inv)]
    assert lines == [
        "stop w.service: w.socket starts: its service must not run meanwhile",
        "write w.socket: unit changed",
        "daemon-reload: unit files changed",
        "restart w.socket: unit changed",
        "start w.service: w.socket started",
        "verify w.socket w.service: health gate for started and restarted units",
    ]


def test_a_rollback_starts_what_ran_before_the_failed_apply_even_if_a_socket_activates_it() -> None:
    inv = applied.from_spec(spec([SOCK, SVC]))
    obs = P.Observed(
        unit_files={"w.socket": SOCK.digest, "w.service": SVC.digest},
        units={"w.socket": STATIC, "w.service": STOPPED},
    )
    s = spec([SOCK, SVC])
    assert P.plan(s, obs, inv) == ()  # socket-activated: not ours to start
    p = P.plan(s, obs, inv, running_before=frozenset({"w.service"}))
    assert P.describe(p[0]) == "start w.service: ran before the failed apply"


def test_run_records() -> None:
    timer = UnitSpec(UnitName("t.timer"), b"[Timer]\nOnCalendar=daily\n")
    job = UnitSpec(UnitName("t.service"), b"[Service]\nType=oneshot\nExecStart=/bin/true\n")
    skipped = P.UnitState("loaded", "inactive", "dead", "", "", "success", "simple", skipped=True)
    obs = P.Observed(units={"a.service": RUNNING, "s.service": skipped})
    s = spec(
        [unit("a.service"), unit("s.service"), unit("g.service"), timer, job, unit("x@.service")]
    )
    got = P.run_records(s, obs, applied.Inventory(Revision("r0")), frozenset({"g.service"}))
    assert got == {
        "a.service": Ran.UP, "s.service": Ran.SKIPPED, "g.service": Ran.UP,
        "t.timer": Ran.UNKNOWN, "t.service": Ran.UNKNOWN, "x@.service": Ran.UNKNOWN,
    }  # fmt: skip
