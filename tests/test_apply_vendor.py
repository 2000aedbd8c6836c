"""The engine on units nobody here wrote: vendor units, oneshots, conditions, rollbacks.

Each test drives a real ``systemd --user`` manager whose vendor directory
(``~/.local/share/systemd/user``, read by the user manager after ``~/.config/systemd/user``)
plays the part of ``/usr/lib/systemd/system`` on a host, and asserts on what systemd reports
afterwards (ActiveState, UnitFileState, InvocationID, MainPID's command line, files).
"""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.actuators.systemd import Scope, Systemd
from reconciler.apply.engine import Engine
from reconciler.models import FileSpec, UnitName, UnitSpec
from reconciler.plan import planner as P
from reconciler.plan.result import Outcome
from tests.fixtures.systemd_user import UserManager
from tests.specs import spec, unit


@dataclass
class Node:
    um: UserManager
    sd: Systemd
    engine: Engine
    state: Path
    root: Path

    @property
    def vendor(self) -> Path:
        d = self.um.home / ".local/share/systemd/user"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def show(self, unit: str, prop: str) -> str:
        return self.um.systemctl("show", "-P", prop, unit).stdout.strip()

    def cmdline(self, unit: str) -> str:
        pid = self.show(unit, "MainPID")
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()

    async def fresh(self) -> tuple[Systemd, Engine]:
        """A new connection and engine: what the next `swarmkeeper apply` process sees."""
        sd = await Systemd.connect(
            Scope.USER, address=self.um.private_address, unit_dir=self.um.unit_dir
        )
        return sd, Engine(sd, self.state, root=self.root)


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
            tmp_path / "state",
            tmp_path / "root",
        )
    finally:
        await sd.close()


def raw(name: str, text: str) -> UnitSpec:
    return UnitSpec(UnitName(name), text.encode())


def socket_unit(name: str) -> str:
    return (
        f"[Unit]\nDescription=vendor {name}\n[Socket]\nListenStream=%t/{name}.sock\n"
        "[Install]\nWantedBy=sockets.target\n"
    )


SOCKET_SERVICE = "[Service]\nExecStart=/bin/sleep infinity\n"
VENDOR_SERVICE = (
    "[Unit]\nDescription=vendor\n[Service]\nExecStart=/bin/sleep 111111\n"
    "[Install]\nWantedBy=default.target\n"
)


async def test_rollback_gives_back_running_vendor_sockets_and_an_overridden_service(
    node: Node,
) -> None:
    for s in ("va", "vb"):
        (node.vendor / f"{s}.socket").write_text(socket_unit(s))
        (node.vendor / f"{s}.service").write_text(SOCKET_SERVICE)
    (node.vendor / "vs.service").write_text(VENDOR_SERVICE)
    node.um.systemctl("daemon-reload", check=True)
    node.um.systemctl("enable", "--now", "va.socket", "vb.socket", "vs.service", check=True)
    before = node.show("vs.service", "InvocationID")
    adopted = [
        raw("va.socket", socket_unit("va")),
        raw("vb.socket", socket_unit("vb")),
        unit("vs.service", exec_start="/bin/sleep 222222"),  # overrides the vendor one
    ]
    result = await node.engine.apply(spec([*adopted, unit("bad.service", exec_start="/bin/false")]))
    assert result.outcome is Outcome.ROLLED_BACK
    for name in ("va.socket", "vb.socket", "vs.service"):
        assert node.show(name, "ActiveState") == "active", name
        assert node.show(name, "UnitFileState") == "enabled", name
        assert not (node.um.unit_dir / name).exists(), name  # the vendor definition again
        assert node.show(name, "NeedDaemonReload") == "no", name
    assert "111111" in node.cmdline("vs.service")  # the vendor definition runs again
    assert node.show("vs.service", "InvocationID") != before  # restarted back to it
    assert not (node.um.unit_dir / "bad.service").exists()
    assert await node.engine.plan(spec([])) == ()


COUNTING = (
    "[Unit]\nDescription=counts its runs\n[Service]\nType=oneshot\n"
    "ExecStart=/bin/sh -c 'echo run >> {log}'\n[Install]\nWantedBy=default.target\n"
)


async def test_a_finished_oneshot_runs_once_across_fresh_processes(node: Node) -> None:
    log = node.root / "runs.log"
    node.root.mkdir(parents=True, exist_ok=True)
    s = spec([raw("count.service", COUNTING.format(log=log)), unit("a.service")])
    assert (await node.engine.apply(s)).outcome is Outcome.CONVERGED
    assert log.read_text().count("run") == 1
    for _ in range(3):  # three `swarmkeeper apply` runs on a converged node
        sd, engine = await node.fresh()
        try:
            assert await engine.plan(s) == ()
            result = await engine.apply(s)
            assert result.outcome is Outcome.CONVERGED and result.actions == ()
        finally:
            await sd.close()
    assert log.read_text().count("run") == 1
    changed = spec(
        [raw("count.service", COUNTING.format(log=log) + "# v2\n"), unit("a.service")], rev="r2"
    )
    assert (await node.engine.apply(changed)).outcome is Outcome.CONVERGED
    assert log.read_text().count("run") == 2  # once per change
    sd, engine = await node.fresh()
    try:
        assert await engine.plan(changed) == ()
    finally:
        await sd.close()


CONDITION_FALSE = (
    "[Unit]\nDescription=skipped here\nConditionPathExists=/nonexistent/swarmkeeper\n"
    "[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=default.target\n"
)
TIMER_CONDITION_FALSE = (
    "[Unit]\nConditionPathExists=/nonexistent/swarmkeeper\n[Timer]\nOnCalendar=weekly\n"
    "[Install]\nWantedBy=timers.target\n"
)


async def test_a_condition_skipped_start_is_neither_a_failure_nor_drift(node: Node) -> None:
    units = [
        raw("skip.service", CONDITION_FALSE),
        raw("trim.timer", TIMER_CONDITION_FALSE),
        raw("trim.service", "[Service]\nType=oneshot\nExecStart=/bin/true\n"),
        unit("a.service"),
    ]
    s = spec(units)
    result = await node.engine.apply(s)
    assert result.outcome is Outcome.CONVERGED, (result.error, result.failure)
    assert node.show("skip.service", "ActiveState") == "inactive"
    assert node.show("trim.timer", "ActiveState") == "inactive"
    assert await node.engine.plan(s) == ()
    sd, engine = await node.fresh()
    try:
        assert await engine.plan(s) == ()
    finally:
        await sd.close()


async def test_a_failed_assert_is_a_failure(node: Node) -> None:
    good = [unit("a.service")]
    assert (await node.engine.apply(spec(good))).outcome is Outcome.CONVERGED
    asserting = raw(
        "asserts.service",
        "[Unit]\nAssertPathExists=/nonexistent/swarmkeeper\n[Service]\nExecStart=/bin/sleep 1d\n",
    )
    result = await node.engine.apply(spec([*good, asserting], rev="r2"))
    assert result.outcome is Outcome.ROLLED_BACK
    assert result.failure is not None and result.failure.unit == "asserts.service"
    assert "assert" in result.failure.state
    assert not (node.um.unit_dir / "asserts.service").exists()


async def test_a_desired_unit_overriding_a_running_vendor_unit_restarts_it(node: Node) -> None:
    (node.vendor / "vs.service").write_text(VENDOR_SERVICE)
    node.um.systemctl("daemon-reload", check=True)
    node.um.systemctl("enable", "--now", "vs.service", check=True)
    assert "111111" in node.cmdline("vs.service")
    s = spec([unit("vs.service", exec_start="/bin/sleep 222222")])
    p = await node.engine.plan(s)
    assert any(a.VERB == "restart" and getattr(a, "unit", "") == "vs.service" for a in p), p
    assert (await node.engine.apply(s)).outcome is Outcome.CONVERGED
    assert "222222" in node.cmdline("vs.service")
    assert await node.engine.plan(s) == ()


WANTS_HELPER = (
    "[Unit]\nWants=helper.service\n[Service]\nExecStart=/bin/sleep infinity\n"
    "[Install]\nWantedBy=default.target\n"
)


async def test_deleting_unit_files_reloads_systemd(node: Node) -> None:
    # a.service wants helper.service: systemd keeps helper loaded after its file is gone,
    # pointing at the deleted file, until a daemon-reload
    good = [raw("a.service", WANTS_HELPER)]
    assert (await node.engine.apply(spec(good))).outcome is Outcome.CONVERGED
    helper = unit("helper.service")
    result = await node.engine.apply(
        spec([*good, helper, unit("bad.service", exec_start="/bin/false")], rev="r2")
    )
    assert result.outcome is Outcome.ROLLED_BACK
    assert not (node.um.unit_dir / "helper.service").exists()
    assert node.show("helper.service", "NeedDaemonReload") == "no"
    assert node.show("helper.service", "LoadState") == "not-found"
    # a plain prune too
    assert (await node.engine.apply(spec([*good, helper], rev="r3"))).outcome is Outcome.CONVERGED
    assert node.show("helper.service", "LoadState") == "loaded"
    assert (await node.engine.apply(spec(good, rev="r4"))).outcome is Outcome.CONVERGED
    assert node.show("helper.service", "NeedDaemonReload") == "no"
    assert node.show("helper.service", "LoadState") == "not-found"


THEIRS = (
    "[Unit]\nDescription=theirs\n[Service]\nExecStart=/bin/sleep 333333\n"
    "[Install]\nWantedBy=default.target\n"
)


async def test_adoption_is_planned_recorded_and_a_prune_gives_the_originals_back(
    node: Node,
) -> None:
    (node.um.unit_dir / "own.service").write_text(THEIRS)
    (node.vendor / "vs.service").write_text(VENDOR_SERVICE)
    (node.vendor / "idle.service").write_text(VENDOR_SERVICE.replace("111111", "444444"))
    (node.root / "etc").mkdir(parents=True)
    (node.root / "etc/motd").write_text("their motd\n")
    (node.root / "etc/motd").chmod(0o640)
    node.um.systemctl("daemon-reload", check=True)
    node.um.systemctl("enable", "--now", "own.service", "vs.service", check=True)
    s = spec(
        [
            unit("own.service", exec_start="/bin/sleep 555555"),
            unit("vs.service", exec_start="/bin/sleep 222222"),
            unit("idle.service", exec_start="/bin/sleep 666666"),  # vendor, not running
            unit("a.service"),
        ],
        [FileSpec("/etc/motd", b"ours\n")],
    )
    p = await node.engine.plan(s)
    assert [P.describe(a) for a in p if a.PHASE is P.Phase.ADOPT] == [
        "adopt /etc/motd: was unmanaged: mode 0640",
        "adopt own.service: was unmanaged: own file, active, enabled",
        "adopt vs.service: was unmanaged: vendor definition, active, enabled",
        "adopt idle.service: was unmanaged: vendor definition",
    ]
    result = await node.engine.apply(s)
    assert result.outcome is Outcome.CONVERGED, result.error
    assert [P.describe(r.action) for r in result.actions][:4] == [P.describe(a) for a in p][:4]
    assert "555555" in node.cmdline("own.service") and "222222" in node.cmdline("vs.service")
    inv = node.engine.inventory()
    own = inv.unit("own.service")
    assert own is not None and own.original is not None
    assert own.original.content == THEIRS.encode() and own.original.active
    vs = inv.unit("vs.service")
    assert vs is not None and vs.original is not None and vs.original.vendor
    assert await node.engine.plan(s) == ()
    # a later revision drops them: each one is given back as it was
    result = await node.engine.apply(spec([unit("a.service")], rev="r2"))
    assert result.outcome is Outcome.CONVERGED, result.error
    assert (node.um.unit_dir / "own.service").read_text() == THEIRS
    assert not (node.um.unit_dir / "vs.service").exists()
    assert not (node.um.unit_dir / "idle.service").exists()
    assert "333333" in node.cmdline("own.service") and "111111" in node.cmdline("vs.service")
    for name in ("own.service", "vs.service"):
        assert node.show(name, "ActiveState") == "active", name
        assert node.show(name, "UnitFileState") == "enabled", name
        assert node.show(name, "NeedDaemonReload") == "no", name
    assert node.show("idle.service", "ActiveState") == "inactive"
    assert node.show("idle.service", "UnitFileState") == "disabled"
    assert "444444" in node.show("idle.service", "ExecStart")
    assert (node.root / "etc/motd").read_text() == "their motd\n"
    assert stat.S_IMODE((node.root / "etc/motd").stat().st_mode) == 0o640
    inv = node.engine.inventory()
    assert [u.name for u in inv.units] == ["a.service"] and inv.files == ()
    assert await node.engine.plan(spec([unit("a.service")], rev="r2")) == ()


def environ(node: Node, unit: str) -> list[str]:
    pid = node.show(unit, "MainPID")
    return Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")


def flags(value: str) -> UnitSpec:
    return raw("vd.service.d/10-flags.conf", f"[Service]\nEnvironment=FLAGS={value}\n")


async def test_a_drop_in_configures_a_running_vendor_unit_and_its_removal_restores_it(
    node: Node,
) -> None:
    (node.vendor / "vd.service").write_text(VENDOR_SERVICE)
    node.um.systemctl("daemon-reload", check=True)
    node.um.systemctl("enable", "--now", "vd.service", check=True)
    assert not any(e.startswith("FLAGS=") for e in environ(node, "vd.service"))
    base = [unit("a.service")]
    result = await node.engine.apply(spec([*base, flags("one")]))
    assert result.outcome is Outcome.CONVERGED, result.error
    assert "FLAGS=one" in environ(node, "vd.service")
    assert (node.um.unit_dir / "vd.service.d/10-flags.conf").exists()
    assert not (node.um.unit_dir / "vd.service").exists()  # the unit itself stays theirs
    assert await node.engine.plan(spec([*base, flags("one")])) == ()
    before = node.show("vd.service", "InvocationID")
    s2 = spec([*base, flags("two")], rev="r2")
    assert [P.describe(a) for a in await node.engine.plan(s2)] == [
        "write vd.service.d/10-flags.conf: unit changed",
        "daemon-reload: unit files changed",
        "restart vd.service: vd.service.d/10-flags.conf unit changed",
        "verify vd.service: health gate for started and restarted units",
    ]
    assert (await node.engine.apply(s2)).outcome is Outcome.CONVERGED
    assert "FLAGS=two" in environ(node, "vd.service")
    assert node.show("vd.service", "InvocationID") != before
    # a failing revision that changes the drop-in: rolled back to "two", running
    bad = spec([*base, flags("three"), unit("bad.service", exec_start="/bin/false")], rev="r3")
    assert (await node.engine.apply(bad)).outcome is Outcome.ROLLED_BACK
    assert "FLAGS=two" in environ(node, "vd.service")
    # removed: the vendor behaviour again
    result = await node.engine.apply(spec(base, rev="r4"))
    assert result.outcome is Outcome.CONVERGED, result.error
    assert not (node.um.unit_dir / "vd.service.d/10-flags.conf").exists()
    assert not any(e.startswith("FLAGS=") for e in environ(node, "vd.service"))
    assert node.show("vd.service", "ActiveState") == "active"
    assert node.show("vd.service", "UnitFileState") == "enabled"
    assert node.show("vd.service", "NeedDaemonReload") == "no"
    assert node.show("vd.service", "DropInPaths") == ""
    assert await node.engine.plan(spec(base, rev="r4")) == ()


async def test_a_masked_unit_adopted_runs_and_a_prune_masks_it_again(node: Node) -> None:
    (node.vendor / "mk.service").write_text(VENDOR_SERVICE)
    node.um.systemctl("daemon-reload", check=True)
    node.um.systemctl("mask", "mk.service", check=True)
    assert node.show("mk.service", "LoadState") == "masked"
    s = spec([unit("mk.service", exec_start="/bin/sleep 777777"), unit("a.service")])
    p = await node.engine.plan(s)
    assert P.describe(p[0]) == "adopt mk.service: was unmanaged: masked"
    assert (await node.engine.apply(s)).outcome is Outcome.CONVERGED
    assert "777777" in node.cmdline("mk.service")
    assert await node.engine.plan(s) == ()
    result = await node.engine.apply(spec([unit("a.service")], rev="r2"))
    assert result.outcome is Outcome.CONVERGED, result.error
    assert node.show("mk.service", "LoadState") == "masked"
    assert node.show("mk.service", "ActiveState") == "inactive"
    assert (node.um.unit_dir / "mk.service").resolve() == Path("/dev/null")
    assert await node.engine.plan(spec([unit("a.service")], rev="r2")) == ()
