"""The apply engine against a real systemd user manager: every promise of docs/apply.md.

Each test reads systemd's real state afterwards (InvocationID, MainPID, LoadState,
UnitFileState, files on disk), never the engine's own account of what it did.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import stat
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.actuators.systemd import Scope, Systemd
from reconciler.apply.engine import Engine
from reconciler.models import (
    FileSpec,
    OnChange,
    UnitName,
    UnitSpec,
)
from reconciler.plan import planner as P
from reconciler.plan.result import Outcome
from tests.fixtures.systemd_user import UserManager
from tests.specs import ENV, spec, unit


@dataclass
class Node:
    um: UserManager
    sd: Systemd
    engine: Engine
    root: Path

    def show(self, unit: str, prop: str) -> str:
        return self.um.systemctl("show", "-P", prop, unit).stdout.strip()

    def invocations(self, names: list[str]) -> dict[str, str]:
        return {n: self.show(n, "InvocationID") for n in names}


@pytest.fixture
async def node(systemd_user: UserManager, tmp_path: Path) -> AsyncIterator[Node]:
    sd = await Systemd.connect(
        Scope.USER, address=systemd_user.private_address, unit_dir=systemd_user.unit_dir
    )
    try:
        yield Node(
            systemd_user,
            sd,
            Engine(sd, tmp_path / "state", root=tmp_path / "root"),
            tmp_path / "root",
        )
    finally:
        await sd.close()


TEN = [unit(f"u{i:02d}.service") for i in range(10)]


async def test_first_apply_starts_all_ten_in_role_order(node: Node) -> None:
    order = TEN[5:] + TEN[:5]
    result = await node.engine.apply(spec(order))
    assert result.outcome is Outcome.CONVERGED, result.error
    names = [u.name for u in order]
    assert [node.show(n, "ActiveState") for n in names] == ["active"] * 10
    assert [node.show(n, "UnitFileState") for n in names] == ["enabled"] * 10
    entered = [int(node.show(n, "ActiveEnterTimestampMonotonic")) for n in names]
    assert entered == sorted(entered) and len(set(entered)) == 10
    assert sorted(p.name for p in node.um.unit_dir.glob("*.service")) == sorted(names)


async def test_second_apply_with_nothing_changed_makes_no_mutating_call(node: Node) -> None:
    s = spec(TEN[:4], [FileSpec(ENV, b"A=1\n")])
    assert (await node.engine.apply(s)).outcome is Outcome.CONVERGED
    before = node.sd.mutating_calls
    inv_mtime = node.engine.store.path.stat().st_mtime_ns
    again = await node.engine.apply(s)
    assert again.outcome is Outcome.CONVERGED and again.actions == ()
    assert node.sd.mutating_calls == before
    assert node.engine.store.path.stat().st_mtime_ns == inv_mtime
    assert await node.engine.plan(s) == ()


async def test_changing_one_unit_restarts_exactly_that_one(node: Node) -> None:
    units = TEN[:5]
    assert (await node.engine.apply(spec(units))).outcome is Outcome.CONVERGED
    names = [u.name for u in units]
    before = node.invocations(names)
    changed = unit("u02.service", "Environment=V=2\n")
    result = await node.engine.apply(spec([*units[:2], changed, *units[3:]], rev="r2"))
    assert result.outcome is Outcome.CONVERGED, result.error
    after = node.invocations(names)
    assert [n for n in names if after[n] != before[n]] == ["u02.service"]
    assert node.show("u02.service", "Environment") == "V=2"
    assert [
        P.describe(r.action) for r in result.actions if isinstance(r.action, P.RestartUnit)
    ] == ["restart u02.service: unit changed"]


async def test_changing_an_env_file_restarts_exactly_the_units_that_reference_it(
    node: Node,
) -> None:
    env = f"{node.root}{ENV}"  # the sandbox's --root: units read files under it
    users = [
        unit("env-a.service", f"EnvironmentFile={env}\n"),
        unit("env-b.service", f"EnvironmentFile=-{env}\n"),
    ]
    others = [
        unit("plain.service"),
        unit("other-file.service", f"EnvironmentFile=-{node.root}/etc/other.env\n"),
    ]
    files = [FileSpec(ENV, b"NODE=n1\n"), FileSpec("/etc/other.env", b"X=1\n")]
    assert (await node.engine.apply(spec(users + others, files))).outcome is Outcome.CONVERGED
    names = [u.name for u in users + others]
    before = node.invocations(names)
    result = await node.engine.apply(
        spec(users + others, [FileSpec(ENV, b"NODE=n1\nROLE=manager\n"), files[1]], rev="r2")
    )
    assert result.outcome is Outcome.CONVERGED, result.error
    after = node.invocations(names)
    assert sorted(n for n in names if after[n] != before[n]) == ["env-a.service", "env-b.service"]
    assert (node.root / ENV.lstrip("/")).read_bytes() == b"NODE=n1\nROLE=manager\n"
    assert f"restart env-a.service: {ENV} changed" in [P.describe(r.action) for r in result.actions]
    pid = node.show("env-a.service", "MainPID")  # the new process really read the new file
    environ = await asyncio.to_thread(Path(f"/proc/{pid}/environ").read_bytes)
    assert "ROLE=manager" in environ.decode().split("\0")


async def test_on_change_reload_keeps_the_main_pid(node: Node) -> None:
    def reloadable(v: int) -> UnitSpec:
        return unit(
            "rl.service", f"ExecReload=/bin/true\nEnvironment=V={v}\n", on_change=OnChange.RELOAD
        )

    assert (await node.engine.apply(spec([reloadable(1)]))).outcome is Outcome.CONVERGED
    pid, inv = node.show("rl.service", "MainPID"), node.show("rl.service", "InvocationID")
    result = await node.engine.apply(spec([reloadable(2)], rev="r2"))
    assert result.outcome is Outcome.CONVERGED, result.error
    assert [P.describe(r.action) for r in result.actions if isinstance(r.action, P.ReloadUnit)] == [
        "reload rl.service: unit changed"
    ]
    assert node.show("rl.service", "MainPID") == pid != "0"
    assert node.show("rl.service", "InvocationID") == inv
    assert node.show("rl.service", "ActiveState") == "active"


async def test_removing_a_unit_stops_disables_deletes_it_and_spares_a_foreign_one(
    node: Node,
) -> None:
    foreign = node.um.unit_dir / "foreign.service"
    foreign.write_text(
        "[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=default.target\n"
    )
    node.um.systemctl("daemon-reload", check=True)
    node.um.systemctl("enable", "--now", "foreign.service", check=True)
    foreign_inv = node.show("foreign.service", "InvocationID")
    keep, gone = unit("keep.service"), unit("gone.service")
    assert (await node.engine.apply(spec([keep, gone]))).outcome is Outcome.CONVERGED
    assert node.show("gone.service", "UnitFileState") == "enabled"
    result = await node.engine.apply(spec([keep], rev="r2"))
    assert result.outcome is Outcome.CONVERGED, result.error
    assert [P.describe(r.action) for r in result.actions] == [
        "stop gone.service: no longer desired",
        "disable gone.service: no longer desired",
        "delete gone.service: no longer desired",
        "daemon-reload: unit files changed",
    ]
    assert not (node.um.unit_dir / "gone.service").exists()
    assert not (node.um.unit_dir / "default.target.wants/gone.service").exists()
    assert node.show("gone.service", "ActiveState") == "inactive"
    assert node.show("gone.service", "LoadState") == "not-found"
    assert node.show("keep.service", "ActiveState") == "active"
    assert node.show("foreign.service", "InvocationID") == foreign_inv
    assert node.show("foreign.service", "UnitFileState") == "enabled"
    assert foreign.read_text().startswith("[Service]")


async def test_hand_edited_deleted_and_stopped_units_are_repaired_and_reported_as_drift(
    node: Node,
) -> None:
    a, b, c = unit("a.service"), unit("b.service"), unit("c.service")
    s = spec([a, b, c])
    assert (await node.engine.apply(s)).outcome is Outcome.CONVERGED
    (node.um.unit_dir / "a.service").write_text("[Service]\nExecStart=/bin/sleep 1000\n")
    (node.um.unit_dir / "b.service").unlink()
    node.um.systemctl("stop", "c.service", check=True)
    result = await node.engine.apply(s)
    assert result.outcome is Outcome.CONVERGED, result.error
    drift = sorted(P.describe(r.action) for r in result.actions if r.action.drift)
    assert "write a.service: drift: unit file edited by hand" in drift
    assert "write b.service: drift: unit file deleted by hand" in drift
    assert "start c.service: drift: stopped by hand" in drift
    assert result.drift >= 3
    for u in (a, b, c):
        assert (node.um.unit_dir / u.name).read_bytes() == u.content
        assert node.show(u.name, "ActiveState") == "active"
        assert node.show(u.name, "NeedDaemonReload") == "no"
    assert "/bin/sleep infinity" in node.show("a.service", "ExecStart")  # systemd reloaded ours
    assert await node.engine.plan(s) == ()


async def test_a_unit_file_newer_than_what_systemd_loaded_gets_a_daemon_reload(node: Node) -> None:
    # The plan has no write, so the engine reads NeedDaemonReload (it skips it when a
    # write brings a reload anyway) and adds the reload systemd asks for.
    s = spec([unit("a.service"), unit("b.service")])
    assert (await node.engine.apply(s)).outcome is Outcome.CONVERGED
    future = time.time() + 10  # systemd 252 flags only a NEWER mtime
    os.utime(node.um.unit_dir / "b.service", (future, future))
    assert node.show("b.service", "NeedDaemonReload") == "yes"
    result = await node.engine.apply(s)
    assert result.outcome is Outcome.CONVERGED, result.error
    assert [P.describe(r.action) for r in result.actions] == [
        "daemon-reload: unit files on disk are newer than what systemd loaded"
    ]
    assert node.show("b.service", "NeedDaemonReload") == "no"
    assert await node.engine.plan(s) == ()


async def test_a_unit_disabled_by_hand_after_an_apply_is_enabled_again(node: Node) -> None:
    """The engine reads the next pass's statuses while the health gate waits (Engine._warm):
    what it read then must not hide a later change by hand, made through systemctl or on disk."""
    a, b = unit("a.service"), unit("b.service")
    assert (await node.engine.apply(spec([a, b]))).outcome is Outcome.CONVERGED
    assert node.show("a.service", "UnitFileState") == "enabled"
    node.um.systemctl("disable", "a.service", check=True)
    (node.um.unit_dir / "default.target.wants" / "b.service").unlink()
    node.um.systemctl("daemon-reload", check=True)
    assert {n: node.show(n, "UnitFileState") for n in ("a.service", "b.service")} == {
        "a.service": "disabled",
        "b.service": "disabled",
    }
    result = await node.engine.apply(spec([a, b]))
    assert result.outcome is Outcome.CONVERGED, result.error
    assert sorted(P.describe(r.action) for r in result.actions) == [
        "enable a.service: drift: disabled by hand",
        "enable b.service: drift: disabled by hand",
    ]
    assert {n: node.show(n, "UnitFileState") for n in ("a.service", "b.service")} == {
        "a.service": "enabled",
        "b.service": "enabled",
    }
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "warm-observe"]


async def test_a_failing_unit_rolls_back_to_the_previous_units_running(node: Node) -> None:
    env = f"{node.root}{ENV}"
    good = [
        unit("db.service", f"EnvironmentFile={env}\n"),
        unit("web.service"),
        unit("cache.service"),
    ]
    r1 = spec(good, [FileSpec(ENV, b"V=1\n")])
    assert (await node.engine.apply(r1)).outcome is Outcome.CONVERGED
    before = node.invocations([u.name for u in good])
    broken = [good[0], unit("web.service", exec_start="/bin/false"), good[2], unit("new.service")]
    result = await node.engine.apply(spec(broken, [FileSpec(ENV, b"V=2\n")], rev="r2"))
    assert result.outcome is Outcome.ROLLED_BACK
    assert result.applied == "r1"
    assert not [
        t for t in asyncio.all_tasks() if t.get_name() == "warm-observe"
    ]  # gate's reads ended
    assert result.failure is not None and result.failure.unit == "web.service"
    assert "failed" in result.failure.state
    assert "web.service" in result.failure.detail and "status=1/FAILURE" in result.failure.detail
    for u in good:  # exactly the previous revision's units, running
        assert (node.um.unit_dir / u.name).read_bytes() == u.content
        assert node.show(u.name, "ActiveState") == "active", u.name
    assert (node.root / ENV.lstrip("/")).read_bytes() == b"V=1\n"
    assert not (node.um.unit_dir / "new.service").exists()
    assert node.show("new.service", "LoadState") == "not-found"
    after = node.invocations([u.name for u in good])
    assert after["cache.service"] == before["cache.service"]  # untouched by either pass
    undo = [P.describe(r.action) for r in result.rollback]
    assert "write web.service: rollback to r1 (unit file edited by hand)" in undo
    assert "delete new.service: rollback to r1 (no longer desired)" in undo
    assert not any(r.action.drift for r in result.rollback)
    inv = node.engine.inventory()
    assert inv.revision == "r1" and inv.pending is None and inv.failed_revision == "r2"
    assert await node.engine.plan(r1) == ()
    # r2's inventory, staged while the gate waited, was dropped: no temp file stays behind
    state = node.engine.store.path.parent
    kept = ["apply.lock", "inventory.json"]  # the lock file stays; only its flock goes
    for _ in range(50):
        if sorted(p.name for p in state.iterdir()) == kept:
            break
        await asyncio.sleep(0.02)
    assert sorted(p.name for p in state.iterdir()) == kept


LATE_CRASH = "/bin/sh -c 'sleep 0.4; exit 1'"  # up for 0.4 s: longer than the default window


async def test_a_units_own_settle_window_catches_a_crash_after_the_default_window(
    node: Node,
) -> None:
    good = [unit("a.service"), unit("late.service")]
    assert (await node.engine.apply(spec(good))).outcome is Outcome.CONVERGED
    strict = unit("late.service", exec_start=LATE_CRASH, settle=1.0, timeout=5.0)
    node.engine.settle = 0.0  # the engine-wide override: the unit's own window wins
    result = await node.engine.apply(spec([good[0], strict], rev="r2"))
    assert result.outcome is Outcome.ROLLED_BACK
    assert result.failure is not None and result.failure.unit == "late.service"
    assert "status=1/FAILURE" in result.failure.detail
    assert (node.um.unit_dir / "late.service").read_bytes() == good[1].content
    assert node.show("late.service", "ActiveState") == "active"
    assert node.engine.inventory().revision == "r1"


@pytest.mark.parametrize("settle", [0.0, None], ids=["settle-0", "default-window"])
async def test_without_a_long_enough_window_the_late_crash_is_accepted(
    node: Node, settle: float | None
) -> None:
    good = [unit("a.service"), unit("late.service")]
    assert (await node.engine.apply(spec(good))).outcome is Outcome.CONVERGED
    lenient = unit("late.service", exec_start=LATE_CRASH, settle=settle)
    result = await node.engine.apply(spec([good[0], lenient], rev="r2"))
    assert result.outcome is Outcome.CONVERGED, result.error  # the gate saw it active
    assert (node.um.unit_dir / "late.service").read_bytes() == lenient.content
    assert node.engine.inventory().revision == "r2"
    for _ in range(100):  # and then it died, after the gate had passed it
        if node.show("late.service", "ActiveState") == "failed":
            break
        await asyncio.sleep(0.05)
    assert node.show("late.service", "ActiveState") == "failed"


# r2's plan: stop k3 (1), three writes in parallel (2-4), daemon-reload (5), restarts (6-8),
# start k9 (9), enable/disable, prune: killed after the first write lands (others in flight),
# after the reload (nothing restarted yet), and after the restarts.
@pytest.mark.parametrize("kill_after", [2, 5, 8])
async def test_apply_killed_midway_is_finished_by_the_next_run(
    node: Node, tmp_path: Path, kill_after: int
) -> None:
    env = f"{node.root}{ENV}"
    units = [unit(f"k{i}.service", f"EnvironmentFile=-{env}\n") for i in range(4)]
    r1 = spec(units, [FileSpec(ENV, b"V=1\n")])
    assert (await node.engine.apply(r1)).outcome is Outcome.CONVERGED
    before = node.invocations([u.name for u in units])
    r2_units = [units[0], unit("k1.service", "Environment=X=2\n"), units[2], unit("k9.service")]
    r2 = spec(r2_units, [FileSpec(ENV, b"V=2\n")], rev="r2")
    spec_file = tmp_path / "spec.pickle"
    spec_file.write_bytes(pickle.dumps(r2))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.crash_apply",
        str(spec_file),
        str(node.engine.store.path.parent),
        str(node.root),
        node.um.private_address,
        str(node.um.unit_dir),
        str(kill_after),
        cwd=Path(__file__).parent.parent,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert await proc.wait() == -signal.SIGKILL
    assert node.engine.inventory().pending is not None  # it died holding the marker
    result = await node.engine.apply(r2)
    assert result.outcome is Outcome.CONVERGED, result.error
    assert result.resumed
    for u in r2_units:
        assert (node.um.unit_dir / u.name).read_bytes() == u.content
        assert node.show(u.name, "ActiveState") == "active"
    assert not (node.um.unit_dir / "k3.service").exists()
    assert node.show("k3.service", "ActiveState") == "inactive"
    after = node.invocations(["k0.service", "k1.service", "k2.service"])
    assert all(
        after[n] != before[n] for n in after
    )  # all read the env file: restarted once at least
    assert node.show("k1.service", "Environment") == "X=2"
    pid = node.show("k0.service", "MainPID")
    environ = await asyncio.to_thread(Path(f"/proc/{pid}/environ").read_bytes)
    assert "V=2" in environ.decode().split("\0")
    inv = node.engine.inventory()
    assert inv.revision == "r2" and inv.pending is None
    assert await node.engine.plan(r2) == ()


async def test_a_write_that_fails_rolls_back_and_names_the_path(node: Node) -> None:
    good = [unit("a.service")]
    assert (await node.engine.apply(spec(good))).outcome is Outcome.CONVERGED
    (node.root / "etc").mkdir(parents=True, exist_ok=True)
    (node.root / "etc/blocker").write_text("a file where a directory is wanted")
    result = await node.engine.apply(
        spec([*good, unit("b.service")], [FileSpec("/etc/blocker/x.conf", b"x")], rev="r2")
    )
    assert result.outcome is Outcome.ROLLED_BACK
    assert "/etc/blocker/x.conf" in result.error and result.failure is None
    assert not (node.um.unit_dir / "b.service").exists()
    assert node.show("a.service", "ActiveState") == "active"
    assert node.engine.inventory().revision == "r1"


async def test_rollback_gives_adopted_units_and_files_back_as_they_were(node: Node) -> None:
    theirs = "[Service]\nExecStart=/bin/sleep 123456\n[Install]\nWantedBy=default.target\n"
    (node.um.unit_dir / "adopt.service").write_text(theirs)
    (node.root / "etc").mkdir(parents=True)
    (node.root / "etc/motd").write_text("their motd\n")
    (node.root / "etc/motd").chmod(0o640)
    node.um.systemctl("daemon-reload", check=True)
    node.um.systemctl("enable", "--now", "adopt.service", check=True)
    good = [unit("a.service")]
    assert (await node.engine.apply(spec(good))).outcome is Outcome.CONVERGED
    broken = spec(
        [*good, unit("adopt.service"), unit("bad.service", exec_start="/bin/false")],
        [FileSpec("/etc/motd", b"ours\n")],
        rev="r2",
    )
    result = await node.engine.apply(broken)
    assert result.outcome is Outcome.ROLLED_BACK
    assert (node.um.unit_dir / "adopt.service").read_text() == theirs
    assert (node.root / "etc/motd").read_text() == "their motd\n"
    assert stat.S_IMODE((node.root / "etc/motd").stat().st_mode) == 0o640
    assert node.show("adopt.service", "ActiveState") == "active"
    assert node.show("adopt.service", "UnitFileState") == "enabled"
    assert "123456" in node.show("adopt.service", "ExecStart")
    assert not (node.um.unit_dir / "bad.service").exists()
    inv = node.engine.inventory()
    assert [u.name for u in inv.units] == ["a.service"] and inv.files == () and inv.pending is None
    assert await node.engine.plan(spec(good)) == ()  # theirs again: not ours to touch


async def test_a_unit_systemd_refuses_to_load_rolls_back_and_is_named(node: Node) -> None:
    good = [unit("a.service"), unit("b.service")]
    assert (await node.engine.apply(spec(good))).outcome is Outcome.CONVERGED
    bad = UnitSpec(
        UnitName("b.service"), b"[Service]\nExecStart=relative/path\n"
    )  # systemd: bad-setting
    result = await node.engine.apply(spec([good[0], bad], rev="r2"))
    assert result.outcome is Outcome.ROLLED_BACK
    assert result.failure is not None and result.failure.unit == "b.service"
    assert (node.um.unit_dir / "b.service").read_bytes() == good[1].content
    assert node.show("b.service", "ActiveState") == "active"
    assert node.show("b.service", "LoadState") == "loaded"
