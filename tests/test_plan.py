"""The pure planner: one table row per planner decision, and a model-based property test."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.models import (
    FileSpec,
    NodeSpec,
    OnChange,
    Revision,
    UnitName,
    UnitSpec,
)
from reconciler.plan import applied, unittypes
from reconciler.plan import planner as P
from reconciler.plan.unittypes import Kind, Ran
from tests.nodemodel import Node
from tests.specs import ENV, spec, unit


def converge(
    s: NodeSpec, node: Node, inv: applied.Inventory | None = None
) -> tuple[P.Plan, applied.Inventory]:
    p = P.plan(s, node.observe(), inv)
    node.execute(p)
    return p, applied.from_spec(s)


def lines(p: P.Plan) -> list[str]:
    return [P.describe(a) for a in p]


A, B, C = unit("a.service"), unit("b.service", f"EnvironmentFile=-{ENV}\n"), unit("c.service")
ENVF = FileSpec(ENV, b"X=1\n")


def test_first_apply_writes_reloads_starts_in_role_order_and_enables() -> None:
    node = Node()
    p, _ = converge(spec([C, A, B], [ENVF]), node)
    assert lines(p) == [
        f"write {ENV}: created",
        "write c.service: new unit",
        "write a.service: new unit",
        "write b.service: new unit",
        "daemon-reload: unit files changed",
        "start c.service: new unit",
        "start a.service: new unit",
        "start b.service: new unit",
        "enable c.service: has an [Install] section",
        "enable a.service: has an [Install] section",
        "enable b.service: has an [Install] section",
        "verify c.service a.service b.service: health gate for started and restarted units",
    ]
    assert not any(a.drift for a in p)


def test_nothing_differs_gives_an_empty_plan() -> None:
    node = Node()
    s = spec([A, B], [ENVF])
    _, inv = converge(s, node)
    assert P.plan(s, node.observe(), inv) == ()


@pytest.mark.parametrize(
    ("on_change", "expected"),
    [
        (
            OnChange.RESTART,
            [
                "write a.service: unit changed",
                "daemon-reload: unit files changed",
                "restart a.service: unit changed",
            ],
        ),
        (
            OnChange.RELOAD,
            [
                "write a.service: unit changed",
                "daemon-reload: unit files changed",
                "reload a.service: unit changed",
            ],
        ),
        (OnChange.IGNORE, ["write a.service: unit changed", "daemon-reload: unit files changed"]),
    ],
)
def test_changed_unit_restart_reload_or_ignore(on_change: OnChange, expected: list[str]) -> None:
    node = Node()
    a1 = unit("a.service", "ExecReload=/bin/true\n")
    _, inv = converge(spec([dataclasses.replace(a1, on_change=on_change), B]), node)
    new = dataclasses.replace(
        unit("a.service", "ExecReload=/bin/true\nEnvironment=V=2\n"), on_change=on_change
    )
    p = P.plan(spec([new, B]), node.observe(), inv)
    assert [x for x in lines(p) if not x.startswith("verify")] == expected


def test_reload_without_exec_reload_restarts_and_says_why() -> None:
    node = Node()
    _, inv = converge(spec([dataclasses.replace(A, on_change=OnChange.RELOAD)]), node)
    new = dataclasses.replace(unit("a.service", "Environment=V=2\n"), on_change=OnChange.RELOAD)
    assert "restart a.service: unit changed (no ExecReload=: restart instead)" in lines(
        P.plan(spec([new]), node.observe(), inv)
    )


def test_changed_env_file_restarts_exactly_the_units_that_reference_it() -> None:
    uses_exec = unit("d.service", body=f"ExecStartPre=/bin/true {ENV}\n")
    uses_flag = unit("e.service", body="ExecReload=/bin/kill -HUP $MAINPID --conf=/etc/other\n")
    node = Node()
    _, inv = converge(
        spec([A, B, uses_exec, uses_flag], [ENVF, FileSpec("/etc/other", b"1")]), node
    )
    p = P.plan(
        spec([A, B, uses_exec, uses_flag], [FileSpec(ENV, b"X=2\n"), FileSpec("/etc/other", b"1")]),
        node.observe(),
        inv,
    )
    assert lines(p) == [
        f"write {ENV}: changed",
        f"restart b.service: {ENV} changed",
        f"restart d.service: {ENV} changed",
        "verify b.service d.service: health gate for started and restarted units",
    ]


def test_removed_units_stop_in_reverse_role_order_disable_and_delete() -> None:
    node = Node()
    _, inv = converge(spec([A, B, C]), node)
    p = P.plan(spec([B]), node.observe(), inv)
    assert lines(p) == [
        "stop c.service: no longer desired",
        "stop a.service: no longer desired",
        "disable c.service: no longer desired",
        "disable a.service: no longer desired",
        "delete c.service: no longer desired",
        "delete a.service: no longer desired",
        "daemon-reload: unit files changed",
    ]


def test_foreign_units_and_files_are_never_touched() -> None:
    node = Node(
        unit_files={"foreign.service": b"[Service]\nExecStart=/bin/true\n"},
        files={"/etc/x": (b"1", 0o644)},
    )
    node.loaded = dict(node.unit_files)
    node.active["foreign.service"] = "active"
    s = spec([A])
    _, inv = converge(s, node)
    assert P.plan(s, node.observe(), inv) == ()
    p = P.plan(spec([]), node.observe(), inv)
    assert all("foreign" not in P.describe(a) and "/etc/x" not in P.describe(a) for a in p)
    node.execute(p)
    assert node.unit_files == {"foreign.service": b"[Service]\nExecStart=/bin/true\n"}
    assert node.active["foreign.service"] == "active"


def test_a_desired_unit_that_exists_unmanaged_is_adopted() -> None:
    node = Node(unit_files={"a.service": b"old"})
    node.loaded = dict(node.unit_files)
    node.active["a.service"] = "active"
    p = P.plan(spec([A]), node.observe(), None)
    assert "write a.service: unit file adopted" in lines(p)
    assert "restart a.service: unit file adopted" in lines(p)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (
            "edit",
            [
                "write a.service: drift: unit file edited by hand",
                "daemon-reload: unit files changed",
                "restart a.service: drift: unit file edited by hand",
            ],
        ),
        (
            "delete",
            [
                "write a.service: drift: unit file deleted by hand",
                "daemon-reload: unit files changed",
                "restart a.service: drift: unit file deleted by hand",
                "enable a.service: drift: unit file deleted by hand",
            ],
        ),
        ("stop", ["start a.service: drift: stopped by hand"]),
        ("fail", ["start a.service: drift: unit failed"]),
        ("disable", ["enable a.service: drift: disabled by hand"]),
        (
            "env",
            [f"write {ENV}: drift: edited by hand", f"restart b.service: {ENV} edited by hand"],
        ),
        ("env-mode", [f"write {ENV}: drift: mode 0600 -> 0644"]),
    ],
)
def test_drift_is_repaired_and_reported(damage: str, expected: list[str]) -> None:
    node = Node()
    _, inv = converge(spec([A, B], [ENVF]), node)
    match damage:
        case "edit":
            node.unit_files["a.service"] += b"# hand edit\n"
        case "delete":
            del node.unit_files["a.service"]
        case "stop":
            node.active["a.service"] = "inactive"
        case "fail":
            node.active["a.service"] = "failed"
        case "disable":
            node.enabled.discard("a.service")
        case "env":
            node.files[ENV] = (b"X=9\n", 0o644)
        case "env-mode":
            node.files[ENV] = (ENVF.content, 0o600)
    p = P.plan(spec([A, B], [ENVF]), node.observe(), inv)
    assert [x for x in lines(p) if not x.startswith("verify")] == expected
    assert all(a.drift for a in p if not isinstance(a, P.DaemonReload | P.Verify))
    node.execute(p)
    assert P.plan(spec([A, B], [ENVF]), node.observe(), inv) == ()


def test_no_install_section_is_not_enabled_and_enable_false_disables() -> None:
    node = Node()
    static = unit("s.service", install=False)
    p, inv = converge(spec([static, A]), node)
    assert "enable s.service: has an [Install] section" not in lines(p)
    p = P.plan(spec([static, dataclasses.replace(A, enable=False)]), node.observe(), inv)
    assert lines(p) == ["disable a.service: enable: false"]


def test_finished_oneshot_is_converged_but_a_never_run_one_is_started() -> None:
    obs = P.Observed(
        unit_files={"a.service": A.digest},
        units={
            "a.service": P.UnitState(
                "loaded", "inactive", "dead", "enabled", "abc", "success", "oneshot", False
            )
        },
    )
    assert P.plan(spec([A]), obs, applied.from_spec(spec([A]))) == ()
    never = dataclasses.replace(
        obs,
        units={
            "a.service": P.UnitState(
                "loaded", "inactive", "dead", "enabled", "", "success", "oneshot", False
            )
        },
    )
    # garbage-collected after it ran: the inventory's record says it did, so no re-run
    assert P.plan(spec([A]), never, applied.from_spec(spec([A]))) == ()
    unknown = applied.from_spec(spec([A]), ran={"a.service": Ran.UNKNOWN})
    assert lines(P.plan(spec([A]), never, unknown))[0] == "start a.service: drift: stopped by hand"
    changed = spec([dataclasses.replace(A, content=A.content + b"# v2\n")], rev="r2")
    assert lines(P.plan(changed, never, applied.from_spec(spec([A]))))[:3] == [
        "write a.service: unit changed",
        "daemon-reload: unit files changed",
        "restart a.service: unit changed",  # runs again, once per change
    ]


@pytest.mark.parametrize(
    ("kind", "state", "result", "invocation", "skipped", "ran", "up"),
    [
        (Kind.SIMPLE, "active", "success", "x", False, Ran.UP, True),
        (Kind.SIMPLE, "inactive", "success", "", False, Ran.UP, False),  # stopped by hand
        (Kind.SIMPLE, "inactive", "success", "", True, Ran.UNKNOWN, True),  # condition false
        (Kind.SIMPLE, "inactive", "success", "", False, Ran.SKIPPED, True),  # ...seen before
        (Kind.SIMPLE, "failed", "exit-code", "x", False, Ran.SKIPPED, False),
        (Kind.ONESHOT, "inactive", "success", "x", False, Ran.UNKNOWN, True),
        (Kind.ONESHOT, "inactive", "success", "", False, Ran.UP, True),  # collected
        (Kind.ONESHOT, "inactive", "success", "", False, Ran.UNKNOWN, False),  # never ran
        (Kind.ONESHOT, "failed", "exit-code", "x", False, Ran.UP, False),
        (Kind.ONESHOT_REMAIN, "inactive", "success", "", False, Ran.UP, False),
        (Kind.TIMER, "active", "success", "", False, Ran.UNKNOWN, True),
        (Kind.SOCKET, "inactive", "success", "", False, Ran.UP, False),
        (Kind.TARGET, "active", "", "", False, Ran.UNKNOWN, True),
    ],
)  # fmt: skip
def test_what_up_means_per_kind(
    kind: Kind, state: str, result: str, invocation: str, skipped: bool, ran: Ran, up: bool
) -> None:
    assert (
        unittypes.is_up(kind, state, result, invocation_id=invocation, skipped=skipped, ran=ran)
        is up
    )


def test_the_per_kind_table_in_the_docs_is_the_one_in_the_code() -> None:
    doc = (Path(__file__).parent.parent / "docs/apply.md").read_text()
    assert unittypes.markdown_table() in doc


@pytest.mark.parametrize(
    ("name", "stype", "remain", "kind"),
    [
        ("a.service", "", False, Kind.SIMPLE),
        ("a.service", "oneshot", True, Kind.ONESHOT_REMAIN),
        ("a@i.service", "notify", False, Kind.NOTIFY),
        ("a@.service", "notify", False, Kind.TEMPLATE),
        ("a@.socket", "", False, Kind.TEMPLATE),
        ("a.timer", "", False, Kind.TIMER),
        ("-.mount", "", False, Kind.MOUNT),
        ("a.slice", "", False, Kind.OTHER),
    ],
)
def test_kind_of(name: str, stype: str, remain: bool, kind: Kind) -> None:
    assert unittypes.kind_of(name, stype, remain) is kind


def test_interrupted_apply_is_finished_restart_comes_from_the_inventory() -> None:
    """Killed after writing a.service but before restarting it: the file already matches."""
    node = Node()
    _, inv = converge(spec([A, B]), node)
    new_a = unit("a.service", "Environment=V=2\n")
    node.unit_files["a.service"] = new_a.content  # written, not reloaded, not restarted
    pending = dataclasses.replace(
        inv, pending=applied.Pending(Revision("r2"), units=(UnitName("c.service"),))
    )
    p = P.plan(spec([new_a, B]), node.observe(), pending)
    assert [x for x in lines(p) if not x.startswith("verify")] == [
        "daemon-reload: unit files on disk are newer than what systemd loaded",
        "restart a.service: unit changed",
    ]


def test_interrupted_apply_that_wrote_a_new_file_still_restarts_its_readers() -> None:
    """Killed after writing a new managed file, before restarting the units reading it.

    Found by the cut-short property below: the file already matches and is not in the
    inventory yet, so without the pending marker's word it looked like nothing changed.
    """
    node = Node()
    _, inv = converge(spec([A, B]), node)  # B reads ENV, which does not exist yet
    node.files[ENV] = (ENVF.content, ENVF.mode)  # written by the killed run
    pending = dataclasses.replace(inv, pending=applied.Pending(Revision("r2"), files=(ENV,)))
    p = P.plan(spec([A, B], [ENVF]), node.observe(), pending)
    assert [x for x in lines(p) if not x.startswith("verify")] == [
        f"restart b.service: {ENV} created"
    ]
    dropin = FileSpec("/etc/systemd/user/b.service.d/x.conf", b"[Service]\n")
    node.files[dropin.path] = (dropin.content, dropin.mode)
    pending = dataclasses.replace(
        inv, pending=applied.Pending(Revision("r2"), files=(ENV, dropin.path))
    )
    p = P.plan(spec([A, B], [ENVF, dropin]), node.observe(), pending)
    assert "daemon-reload: unit files on disk are newer than what systemd loaded" in lines(p)


def test_pending_adopted_unit_no_longer_desired_is_removed() -> None:
    node = Node()
    _, inv = converge(spec([A]), node)
    node.execute(
        P.plan(spec([A, C]), node.observe(), inv)
    )  # as if killed before the inventory was saved
    pending = dataclasses.replace(
        inv, pending=applied.Pending(Revision("r2"), units=(UnitName("c.service"),))
    )
    p = P.plan(spec([A]), node.observe(), pending)
    assert lines(p) == [
        "stop c.service: no longer desired",
        "disable c.service: no longer desired",
        "delete c.service: no longer desired",
        "daemon-reload: unit files changed",
    ]


def test_sandbox_root_prefixed_references_count() -> None:
    node = Node()
    uses = unit("r.service", body="EnvironmentFile=/sandbox/n1/etc/swarmkeeper/node.env\n")
    _, inv = converge(spec([uses, A], [ENVF]), node)
    p = P.plan(spec([uses, A], [FileSpec(ENV, b"X=2\n")]), node.observe(), inv, root="/sandbox/n1/")
    assert f"restart r.service: {ENV} changed" in lines(p)
    assert not any(x.startswith("restart a.service") for x in lines(p))
    assert not any(
        x.startswith("restart")
        for x in lines(P.plan(spec([uses, A], [FileSpec(ENV, b"X=2\n")]), node.observe(), inv))
    )


def test_a_service_activated_by_a_desired_timer_or_socket_is_not_started_by_us() -> None:
    node = Node()
    timer = UnitSpec(
        UnitName("backup.timer"), b"[Timer]\nOnCalendar=daily\n[Install]\nWantedBy=timers.target\n"
    )
    job = UnitSpec(UnitName("backup.service"), b"[Service]\nType=oneshot\nExecStart=/bin/true\n")
    sock = UnitSpec(UnitName("web.socket"), b"[Socket]\nListenStream=8080\nService=httpd.service\n")
    httpd = unit("httpd.service", install=False)
    p, inv = converge(spec([timer, job, sock, httpd]), node)
    starts = [x for x in lines(p) if x.startswith("start")]
    # sockets start first in their phase, as at boot
    assert starts == ["start web.socket: new unit", "start backup.timer: new unit"]
    node.active["httpd.service"] = "active"  # activated by a connection, then changed
    new_httpd = unit("httpd.service", "Environment=V=2\n", install=False)
    assert "restart httpd.service: unit changed" in lines(
        P.plan(spec([timer, job, sock, new_httpd]), node.observe(), inv)
    )


def test_templates_are_written_but_never_started_or_enabled() -> None:
    node = Node()
    p, _ = converge(spec([unit("t@.service")]), node)
    assert lines(p) == ["write t@.service: new unit", "daemon-reload: unit files changed"]


def test_verify_carries_each_units_timeout_and_settle() -> None:
    slow = unit("slow.service", timeout=60.0, settle=2.5)
    p = P.plan(spec([A, slow]), Node().observe())
    gate = next(a for a in p if isinstance(a, P.Verify))
    assert gate.units == (P.Gate("a.service", 30.0, None), P.Gate("slow.service", 60.0, 2.5))
    assert P.to_json(gate)["units"] == [
        {"unit": "a.service", "timeout": 30.0, "settle": None},
        {"unit": "slow.service", "timeout": 60.0, "settle": 2.5},
    ]


def test_to_json_carries_phase_reason_and_drift() -> None:
    a = P.RestartUnit("x.service", f"{ENV} changed", drift=False)
    assert P.to_json(a) == {
        "phase": "restart",
        "action": "restart",
        "target": "x.service",
        "reason": f"{ENV} changed",
        "drift": False,
    }


# ---------------------------------------------------------------- property: plan converges

NAMES = ["a.service", "b.service", "c.service", "d.service", "t@.service"]
PATHS = [ENV, "/etc/a.conf", "/opt/bin/run.sh"]


@st.composite
def unit_specs(draw: st.DrawFn, name: str) -> UnitSpec:
    body = ""
    if draw(st.booleans()):
        body += f"EnvironmentFile=-{draw(st.sampled_from(PATHS))}\n"
    arg = draw(st.sampled_from(["", *PATHS]))
    body += f"ExecStartPre=/bin/true {arg}\n"
    body += f"Environment=V={draw(st.integers(0, 2))}\n"
    return unit(
        name,
        body,
        install=draw(st.booleans()),
        on_change=draw(st.sampled_from(list(OnChange))),
        enable=draw(st.sampled_from([None, True, False])),
    )


@st.composite
def specs(draw: st.DrawFn) -> NodeSpec:
    names = draw(st.permutations(NAMES).map(lambda xs: xs[: draw(st.integers(0, len(xs)))]))
    paths = draw(st.lists(st.sampled_from(PATHS), unique=True))
    files = [
        FileSpec(p, draw(st.sampled_from([b"1", b"2", b""])), draw(st.sampled_from([0o644, 0o600])))
        for p in paths
    ]
    return spec(
        [draw(unit_specs(n)) for n in names],
        files,
        rev=draw(st.text("0123456789abcdef", min_size=1, max_size=4)),
    )


DAMAGE = st.lists(
    st.tuples(
        st.sampled_from(["edit", "delete", "stop", "fail", "disable", "file"]),
        st.sampled_from(NAMES + PATHS),
    ),
    max_size=3,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=specs(), second=specs(), damage=DAMAGE)
def test_applying_the_plan_to_a_model_node_yields_the_desired_spec(
    first: NodeSpec, second: NodeSpec, damage: list[tuple[str, str]]
) -> None:
    foreign = {"foreign.service": b"[Service]\nExecStart=/bin/true\n"}
    node = Node(unit_files=dict(foreign), files={"/etc/foreign": (b"f", 0o600)})
    _, inv = converge(first, node)
    for kind, what in damage:  # hands on the node between two passes
        match kind:
            case "edit" if what in node.unit_files:
                node.unit_files[what] += b"#x\n"
            case "delete" if what in node.unit_files:
                del node.unit_files[what]
            case "stop" | "fail" if what in node.active:
                node.active[what] = "inactive" if kind == "stop" else "failed"
                node.running.pop(what, None)
            case "disable":
                node.enabled.discard(what)
            case "file" if what in node.files:
                node.files[what] = (b"hand", 0o644)
    before = dict(node.running)
    p = P.plan(second, node.observe(), inv)
    node.execute(p)

    desired_units = {u.name: u for u in second.units}
    assert {n: c for n, c in node.unit_files.items() if n not in foreign} == {
        n: u.content for n, u in desired_units.items()
    }
    assert node.unit_files["foreign.service"] == foreign["foreign.service"]
    assert node.files == {"/etc/foreign": (b"f", 0o600)} | {
        f.path: (f.content, f.mode) for f in second.files
    }
    for u in second.units:
        if P.is_template(u.name):
            assert u.name not in node.running
            continue
        assert node.active[u.name] == "active"
        assert (u.name in node.enabled) == P.wants_enable(u)
        r = node.running[u.name]
        if u.on_change is not OnChange.IGNORE or u.name not in before:
            assert r.content == u.content
            refs = P.unitfile.referenced_paths(u.content)
            desired_paths = {f.path for f in second.files}
            # a file pruned in the last phase may have been read by a unit started before it
            assert {p: c for p, c in r.env.items() if p in desired_paths} == {
                f.path: f.content for f in second.files if f.path in refs
            }
    for n in set(inv.managed_units()) - set(desired_units):
        assert n not in node.running and node.active.get(n) != "active"
        # a unit file deleted by hand leaves systemd nothing to disable by: not our symlinks
        assert n not in node.enabled or ("delete", n) in damage
    again = P.plan(second, node.observe(), applied.from_spec(second))
    assert again == (), P.describe(again[0])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=specs(), second=specs(), cut=st.integers(0, 40))
def test_a_plan_cut_short_is_finished_by_the_next_plan(
    first: NodeSpec, second: NodeSpec, cut: int
) -> None:
    """Kill the apply after any action: the pending marker lets the next plan converge."""
    node = Node()
    _, inv = converge(first, node)
    p = P.plan(second, node.observe(), inv)
    adopted_units = tuple(n for n in second.unit_names if n not in inv.managed_units())
    adopted_files = tuple(f.path for f in second.files if f.path not in inv.managed_files())
    marked = dataclasses.replace(
        inv, pending=applied.Pending(second.revision, adopted_units, adopted_files)
    )
    node.execute(p[:cut], whole=False)  # ...and the process dies here
    node.execute(P.plan(second, node.observe(), marked))
    for u in second.units:
        assert node.unit_files[u.name] == u.content
        if P.is_template(u.name):
            continue
        assert node.active[u.name] == "active"
        if u.on_change is not OnChange.IGNORE:  # what runs is what was desired
            assert node.running[u.name].content == u.content
            refs = P.unitfile.referenced_paths(u.content)
            desired_paths = {f.path for f in second.files}
            assert {q: c for q, c in node.running[u.name].env.items() if q in desired_paths} == {
                f.path: f.content for f in second.files if f.path in refs
            }
    assert set(node.unit_files) == set(second.unit_names)
    assert node.files == {f.path: (f.content, f.mode) for f in second.files}
    assert P.plan(second, node.observe(), applied.from_spec(second)) == ()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=specs(), second=specs(), stale=st.sets(st.sampled_from(NAMES)), pending=st.booleans())
def test_need_daemon_reload_cannot_change_a_plan_that_reloads_anyway(
    first: NodeSpec, second: NodeSpec, stale: set[str], pending: bool
) -> None:
    """The engine skips NeedDaemonReload when a unit file is written: such plans reload."""
    node = Node()
    _, inv = converge(first, node)
    if pending:
        inv = dataclasses.replace(inv, pending=applied.Pending(second.revision))
    blind = node.observe()  # the model reports need_daemon_reload False, as the engine's first read
    p = P.plan(second, blind, inv)
    units = {
        n: dataclasses.replace(s, need_daemon_reload=n in stale) for n, s in blind.units.items()
    }
    seen = P.plan(second, dataclasses.replace(blind, units=units), inv)
    if any(isinstance(a, P.DaemonReload) for a in p):
        assert seen == p
    else:  # the read matters only here, and then only by adding the reload
        assert [a for a in seen if not isinstance(a, P.DaemonReload)] == list(p)
