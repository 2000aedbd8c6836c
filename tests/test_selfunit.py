"""The agent's own unit, pure parts: which unit it runs as, deferring its restart, and when a
restart is due. The restart itself on a real PID-1 node: tests/test_pid1_node.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.agent import selfunit
from reconciler.commands.agent import _self_unit
from reconciler.errors import UsageError
from reconciler.models import FileSpec, OnChange, UnitName, UnitSpec
from reconciler.plan import applied
from reconciler.plan import planner as P
from tests.nodemodel import Node
from tests.specs import ENV, spec, unit

AGENT = "swarmkeeper-agent.service"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0::/system.slice/swarmkeeper-agent.service\n", AGENT),
        # hybrid: the unified line is empty-pathed on some hosts; name=systemd then names it
        ("9:name=systemd:/system.slice/x.service\n0::/\n", "x.service"),
        ("4:memory:/process_api/abc\n9:name=systemd:/system.slice/x.service\n", "x.service"),
        # a delegated sub-cgroup below the service
        ("0::/system.slice/docker.service/payload/init.scope\n", "docker.service"),
        # a user manager's service
        ("0::/user.slice/user-0.slice/user@0.service/app.slice/a.service\n", "a.service"),
        # a container (cgroup namespace) or a scope: no service to name
        ("0::/\n", ""),
        ("0::/user.slice/user-0.slice/session-3.scope\n", ""),
        ("", ""),
        ("garbage\n", ""),
    ],
)
def test_unit_from_cgroup(text: str, expected: str) -> None:
    assert selfunit.unit_from_cgroup(text) == expected


@given(st.text())
def test_unit_from_cgroup_never_raises(text: str) -> None:
    out = selfunit.unit_from_cgroup(text)
    assert out == "" or (out.endswith(".service") and "/" not in out)


def test_detect_reads_the_file(tmp_path: Path) -> None:
    f = tmp_path / "cgroup"
    f.write_text("0::/system.slice/agent.service\n")
    assert selfunit.detect(f) == "agent.service"
    assert selfunit.detect(tmp_path / "missing") == ""


def test_defer_ignores_only_the_agents_unit() -> None:
    s = spec([unit("a.service"), unit(AGENT), unit("b.service", on_change=OnChange.RELOAD)])
    d = selfunit.defer(s, AGENT)
    assert [u.on_change for u in d.units] == [OnChange.RESTART, OnChange.IGNORE, OnChange.RELOAD]
    assert [u.content for u in d.units] == [u.content for u in s.units]
    assert d.unit_names == s.unit_names and d.revision == s.revision
    assert selfunit.defer(s, "b.service").unit("b.service").on_change is OnChange.IGNORE  # type: ignore[union-attr]
    # nothing to defer: the same spec
    assert selfunit.defer(s, "") is s
    assert selfunit.defer(s, "other.service") is s
    ignored = spec([unit(AGENT, on_change=OnChange.IGNORE)])
    assert selfunit.defer(ignored, AGENT) is ignored


def test_defer_covers_drop_in_entries_of_the_agents_unit() -> None:
    """A drop-in listed as a unit entry (``<unit>.d/<name>.conf``) restarts the unit it
    configures by its own ``on_change``: for the agent's unit that must wait too."""
    dropin = UnitSpec(UnitName(f"{AGENT}.d/10-x.conf"), b"[Service]\nEnvironment=A=1\n")
    other = UnitSpec(UnitName("a.service.d/10-x.conf"), b"[Service]\nEnvironment=A=1\n")
    s = spec([unit(AGENT, on_change=OnChange.IGNORE), dropin, other])
    d = selfunit.defer(s, AGENT)
    assert [u.on_change for u in d.units] == [OnChange.IGNORE, OnChange.IGNORE, OnChange.RESTART]
    # a unit whose name merely starts like the agent's is not one of its drop-ins
    lookalike = spec([unit(AGENT + "x.service")])
    assert selfunit.defer(lookalike, AGENT) is lookalike


def test_restart_due_reads_the_plan() -> None:
    plan: P.Plan = (
        P.WriteUnit(AGENT, b"x", "unit changed"),
        P.DaemonReload("unit files changed"),
        P.RestartUnit("a.service", "/etc/x changed"),
        P.RestartUnit(AGENT, "unit changed"),
    )
    assert selfunit.restart_due(plan, AGENT) == "unit changed"
    assert selfunit.restart_due(plan, "a.service") == "/etc/x changed"
    assert selfunit.restart_due(plan, "") == ""
    assert selfunit.restart_due(plan, "b.service") == ""
    assert selfunit.restart_due((P.ReloadUnit(AGENT, "drop-in changed"),), AGENT) == (
        "drop-in changed"
    )
    # a start is not a restart: the agent is not running as that unit
    assert selfunit.restart_due((P.StartUnit(AGENT, "new unit"),), AGENT) == ""


def test_through_the_planner_a_change_is_due_and_the_deferred_plan_only_writes() -> None:
    """A changed agent unit, or a changed file it reads: the plan of the spec as it is wants
    the restart; the deferred spec's plan writes and reloads the same, restarting nothing of
    the agent, and leaves the node where the next plan is empty."""
    envf = FileSpec(ENV, b"X=1\n")
    old = spec([unit("a.service"), unit(AGENT, f"EnvironmentFile={ENV}\n")], [envf])
    changed_unit = spec(
        [old.units[0], unit(AGENT, f"EnvironmentFile={ENV}\nEnvironment=Y=1\n")], [envf]
    )
    changed_file = spec(old.units, [FileSpec(ENV, b"X=2\n")])
    for new, why in ((changed_unit, "unit changed"), (changed_file, f"{ENV} changed")):
        node = Node()
        node.execute(P.plan(old, node.observe(), None))
        inv = applied.from_spec(old)
        assert selfunit.restart_due(P.plan(new, node.observe(), inv), AGENT) == why
        deferred = P.plan(selfunit.defer(new, AGENT), node.observe(), inv)
        assert selfunit.restart_due(deferred, AGENT) == ""
        assert not any(
            isinstance(a, P.StopUnit | P.StartUnit) and a.unit == AGENT for a in deferred
        )
        assert any(isinstance(a, P.WriteUnit | P.WriteFile) for a in deferred)
        node.execute(deferred)
        assert P.plan(new, node.observe(), applied.from_spec(new)) == ()


def test_self_unit_option() -> None:
    assert _self_unit("none") == ""
    assert _self_unit("swarmkeeper-agent.service") == AGENT
    for bad in ("swarmkeeper-agent.timer", "../x.service", "x@.service", "no spaces.service"):
        with pytest.raises(UsageError, match="--self-unit"):
            _self_unit(bad)


@pytest.mark.parametrize(
    ("units", "managed", "self_unit", "refused"),
    [
        (["a.service"], {"a.service", AGENT}, AGENT, True),  # the revision drops it
        (["a.service", AGENT], {"a.service", AGENT}, AGENT, False),  # keeps it
        (["a.service"], {"a.service"}, AGENT, False),  # never the revision's (provisioned)
        (["a.service"], {"a.service", AGENT}, "", False),  # the agent's unit is unknown
        ([f"{AGENT}.d/10-x.conf"], {AGENT}, AGENT, True),  # a drop-in left is not the unit
    ],
)
def test_a_revision_may_not_remove_the_agents_own_unit(
    units: list[str], managed: set[str], self_unit: str, refused: bool
) -> None:
    why = selfunit.removal(spec([unit(n) for n in units]), frozenset(managed), self_unit)
    assert bool(why) is refused
    if refused:
        assert why.startswith(f"units: the revision removes {AGENT}") and "keep" in why
