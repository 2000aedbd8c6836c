"""The systemd actuator against real ``systemd --user`` managers (tests/fixtures/systemd_user.py).

Every test checks what systemd really holds afterwards, through ``systemctl --user`` (a
different client than the one under test) or through the unit's own side effects.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from reconciler.actuators.dbus import Endpoint, Scope, call, candidate_endpoints
from reconciler.actuators.describe import describe_from_properties, exit_text
from reconciler.actuators.systemd import Systemd, UnitStatus, unit_path
from reconciler.errors import SystemdError
from tests.fixtures.systemd_user import UserManager

pytestmark = pytest.mark.timeout(60)

SLEEPER = """\
[Unit]
Description=sleeper {tag}
StartLimitIntervalSec=0
[Service]
ExecStart=/bin/sleep 1000
[Install]
WantedBy=default.target
"""


def _write(um: UserManager, name: str, content: str) -> Path:
    path = um.unit_dir / name
    path.write_text(content)
    return path


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b""


def _show(um: UserManager, name: str, prop: str) -> str:
    return um.systemctl("show", "-P", prop, name).stdout.strip()


async def _connect(um: UserManager, address: str | None = None) -> Systemd:
    return await Systemd.connect(
        Scope.USER, address=address, runtime_dir=str(um.runtime_dir), home=str(um.home)
    )


# Tests where the transport matters (jobs, signals, unit refs, pipelining) run on both;
# the others on one, chosen with indirect parametrization, to keep the file fast.
@pytest.fixture(params=["bus", "private"])
async def sd(request: pytest.FixtureRequest, systemd_user: UserManager) -> AsyncIterator[Systemd]:
    """Connected through the node's dbus-daemon and through the manager's private socket."""
    address = systemd_user.bus_address if request.param == "bus" else systemd_user.private_address
    conn = await _connect(systemd_user, address)
    assert conn.endpoint.peer_to_peer is (request.param == "private")
    yield conn
    await conn.close()


async def test_default_connection_uses_the_socket_activated_user_bus(
    systemd_user: UserManager,
) -> None:
    assert (systemd_user.runtime_dir / "bus").is_socket()  # dbus.socket listens from the start
    conn = await _connect(systemd_user)
    try:
        assert conn.endpoint.address == systemd_user.bus_address
        assert conn.unit_dir == systemd_user.unit_dir
        await conn.status(["default.target"])
        assert systemd_user.systemctl("is-active", "dbus.service").stdout.strip() == "active"
    finally:
        await conn.close()


async def test_start_restart_stop_change_invocation_id(
    sd: Systemd, systemd_user: UserManager
) -> None:
    _write(systemd_user, "web.service", SLEEPER.format(tag="web"))
    await sd.daemon_reload()
    assert await sd.start("web.service") == "done"
    first = (await sd.status(["web.service"]))["web.service"]
    assert (first.load_state, first.active_state, first.sub_state) == (
        "loaded",
        "active",
        "running",
    )
    assert first.invocation_id == _show(systemd_user, "web.service", "InvocationID") != ""
    assert first.main_pid == int(_show(systemd_user, "web.service", "MainPID")) > 0
    assert (first.service_type, first.result, first.unit_file_state) == (
        "simple",
        "success",
        "disabled",
    )

    assert await sd.start("web.service") == "done"  # already running: same invocation
    assert (await sd.status(["web.service"]))["web.service"].invocation_id == first.invocation_id

    assert await sd.restart("web.service") == "done"
    second = (await sd.status(["web.service"]))["web.service"]
    assert second.invocation_id == _show(systemd_user, "web.service", "InvocationID")
    assert second.invocation_id not in ("", first.invocation_id)
    assert second.main_pid not in (0, first.main_pid)

    assert await sd.stop("web.service") == "done"
    assert systemd_user.systemctl("is-active", "web.service").stdout.strip() == "inactive"
    stopped = (await sd.status(["web.service"]))["web.service"]
    assert (stopped.active_state, stopped.main_pid) == ("inactive", 0)
    assert b"sleep" not in _cmdline(second.main_pid)


async def test_concurrent_starts_share_one_job(
    sd: Systemd, systemd_user: UserManager, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    _write(
        systemd_user,
        "shared.service",
        f"""\
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'echo run >> {runs}; sleep 0.3'
""",
    )
    await sd.daemon_reload()
    # systemd merges the second start into the first job: both callers get its result
    results = await asyncio.wait_for(
        asyncio.gather(sd.start("shared.service"), sd.start("shared.service")), 20
    )
    assert results == ["done", "done"]
    assert runs.read_text() == "run\n"
    assert systemd_user.systemctl("is-active", "shared.service").stdout.strip() == "active"


async def test_a_job_whose_signal_never_comes_raises_instead_of_hanging(
    systemd_user: UserManager,
) -> None:
    conn = await _connect(systemd_user, systemd_user.bus_address)
    try:
        # undo our own subscription on the bus daemon: JobRemoved no longer reaches us
        await call(
            conn._bus,
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member="RemoveMatch",
            signature="s",
            body=[
                "type='signal',sender='org.freedesktop.systemd1',"
                "interface='org.freedesktop.systemd1.Manager'"
            ],
        )
        conn.job_check_interval = 0.3
        _write(systemd_user, "quick.service", "[Service]\nType=oneshot\nExecStart=/bin/true\n")
        await conn.daemon_reload()
        with pytest.raises(SystemdError, match="without a JobRemoved"):
            await asyncio.wait_for(conn.start("quick.service"), 10)
        # the job itself ran: systemd holds the oneshot's success
        assert _show(systemd_user, "quick.service", "Result") == "success"
    finally:
        await conn.close()


@pytest.mark.parametrize("sd", ["private"], indirect=True)
async def test_reload_keeps_main_pid(
    sd: Systemd, systemd_user: UserManager, tmp_path: Path
) -> None:
    marker = tmp_path / "hups"
    _write(
        systemd_user,
        "hup.service",
        f"""\
[Service]
ExecStart=/bin/sh -c 'trap "echo hup >> {marker}" HUP; while :; do sleep 1 & wait $!; done'
ExecReload=/bin/kill -HUP $MAINPID
""",
    )
    await sd.daemon_reload()
    assert await sd.start("hup.service") == "done"
    before = (await sd.status(["hup.service"]))["hup.service"]
    await asyncio.sleep(0.2)  # let the shell install its trap before the first HUP
    assert await sd.reload("hup.service") == "done"
    after = (await sd.status(["hup.service"]))["hup.service"]
    assert after.active_state == "active"
    assert (after.main_pid, after.invocation_id) == (before.main_pid, before.invocation_id)
    for _ in range(100):
        if marker.exists() and marker.read_text() == "hup\n":
            break
        await asyncio.sleep(0.05)
    assert marker.read_text() == "hup\n"  # the main process really got ExecReload's HUP


@pytest.mark.parametrize("sd", ["bus"], indirect=True)
async def test_reload_of_an_inactive_unit_is_invalid_and_starts_nothing(
    sd: Systemd, systemd_user: UserManager
) -> None:
    _write(
        systemd_user, "ror.service", "[Service]\nExecStart=/bin/sleep 1000\nExecReload=/bin/true\n"
    )
    await sd.daemon_reload()
    assert await sd.reload("ror.service") == "invalid"
    assert (await sd.status(["ror.service"]))["ror.service"].active_state == "inactive"


@pytest.mark.parametrize("sd", ["bus"], indirect=True)
async def test_failing_simple_unit(sd: Systemd, systemd_user: UserManager) -> None:
    _write(systemd_user, "bad.service", "[Service]\nExecStart=/bin/false\n")
    await sd.daemon_reload()
    assert await sd.start("bad.service") == "done"  # simple: the job ends once forked
    st = await sd.wait_healthy("bad.service", timeout=10)
    assert (st.active_state, st.result) == ("failed", "exit-code")
    assert st.failed and not st.healthy
    assert systemd_user.systemctl("is-failed", "bad.service").stdout.strip() == "failed"
    text = await sd.describe_failure("bad.service")
    assert "bad.service" in text
    assert "exit-code" in text
    assert "status=1/FAILURE" in text
    # no journald on this machine: the text says so instead of ending silently
    assert text.splitlines()[-1].startswith("(no journal lines: ")

    await sd.reset_failed("bad.service")
    assert systemd_user.systemctl("is-failed", "bad.service").stdout.strip() != "failed"


@pytest.mark.parametrize("sd", ["private"], indirect=True)
async def test_describe_failure_appends_journal_lines_when_journald_is_there(
    sd: Systemd, systemd_user: UserManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No journald runs here, so a stand-in journalctl shows what we ask it and that its
    lines are appended (the status part is real; see test_failing_simple_unit)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "journalctl"
    fake.write_text('#!/bin/sh\necho "journal: $*"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    journal = _listening_socket(tmp_path / "journal.sock")
    sd.reader.journal_socket = tmp_path / "journal.sock"
    _write(systemd_user, "bad.service", "[Service]\nExecStart=/bin/false\n")
    try:
        await sd.daemon_reload()
        await sd.start("bad.service")
        assert (await sd.wait_healthy("bad.service", timeout=10)).failed
        text = await sd.describe_failure("bad.service", lines=5)
    finally:
        journal.close()
    status, _, journal_text = text.partition("\n\n")
    assert "Result: exit-code: the main process exited with a non-zero status" in status
    invocation = status.split("Invocation: ")[1].split()[0]
    assert len(invocation) == 32  # this run's id: only its lines are asked for
    assert journal_text == (
        f"journal: --user --no-pager -q -o short-iso -n 5 _SYSTEMD_INVOCATION_ID={invocation} "
        f"+ INVOCATION_ID={invocation} + USER_INVOCATION_ID={invocation}"
    )


@pytest.mark.parametrize("sd", ["private"], indirect=True)
async def test_failing_oneshot_job_result_is_failed(sd: Systemd, systemd_user: UserManager) -> None:
    _write(systemd_user, "badshot.service", "[Service]\nType=oneshot\nExecStart=/bin/false\n")
    await sd.daemon_reload()
    assert await sd.start("badshot.service") == "failed"
    st = (await sd.status(["badshot.service"]))["badshot.service"]
    assert (st.active_state, st.result, st.service_type) == ("failed", "exit-code", "oneshot")


@pytest.mark.parametrize(("remain", "state"), [("no", "inactive"), ("yes", "active")])
async def test_oneshot_success(
    sd: Systemd, systemd_user: UserManager, tmp_path: Path, remain: str, state: str
) -> None:
    out = tmp_path / "ran"
    _write(
        systemd_user,
        "once.service",
        f"""\
[Service]
Type=oneshot
RemainAfterExit={remain}
ExecStart=/bin/sh -c 'echo ran > {out}'
""",
    )
    await sd.daemon_reload()
    assert await sd.start("once.service") == "done"
    assert out.read_text() == "ran\n"
    st = await sd.wait_healthy("once.service", timeout=5)
    assert (st.active_state, st.result, st.remain_after_exit) == (state, "success", remain == "yes")
    assert st.healthy
    assert systemd_user.systemctl("is-active", "once.service").stdout.strip() == state


async def test_wait_healthy_waits_for_activation_and_times_out(
    sd: Systemd, systemd_user: UserManager
) -> None:
    sd.reader.poll_interval = 60.0  # only a PropertiesChanged signal can wake the waits below
    _write(
        systemd_user,
        "slow.service",
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sleep 0.6\n",
    )
    _write(systemd_user, "slower.service", "[Service]\nType=oneshot\nExecStart=/bin/sleep 30\n")
    await sd.daemon_reload()
    loop = asyncio.get_running_loop()
    assert (
        systemd_user.systemctl("start", "--no-block", "slow.service", "slower.service").returncode
        == 0
    )
    t0 = loop.time()
    st = await sd.wait_healthy("slow.service", timeout=10)
    assert st.active_state == "active" and st.healthy
    assert 0.3 < loop.time() - t0 < 5

    t0 = loop.time()
    st = await sd.wait_healthy("slower.service", timeout=0.5)
    assert st.active_state == "activating" and not st.healthy and not st.failed
    assert 0.4 < loop.time() - t0 < 3
    assert await sd.stop("slower.service") == "done"


@pytest.mark.parametrize("sd", ["bus"], indirect=True)
async def test_enable_and_disable_manage_the_wants_symlink(
    sd: Systemd, systemd_user: UserManager
) -> None:
    unit = _write(systemd_user, "svc.service", SLEEPER.format(tag="svc"))
    link = systemd_user.unit_dir / "default.target.wants/svc.service"
    await sd.daemon_reload()
    await sd.enable(["svc.service"])
    assert link.is_symlink() and link.resolve() == unit.resolve()
    assert systemd_user.systemctl("is-enabled", "svc.service").stdout.strip() == "enabled"
    assert (await sd.status(["svc.service"]))["svc.service"].unit_file_state == "enabled"
    await sd.disable(["svc.service"])
    assert not link.exists() and not link.is_symlink()
    assert systemd_user.systemctl("is-enabled", "svc.service").stdout.strip() == "disabled"
    assert (await sd.status(["svc.service"]))["svc.service"].unit_file_state == "disabled"
    # deferring the reload: the symlink is there at once, the manager's view after the reload
    calls = sd.mutating_calls
    await sd.enable(["svc.service"], reload=False)
    assert link.is_symlink() and sd.mutating_calls == calls + 1
    await sd.daemon_reload()
    assert (await sd.status(["svc.service"]))["svc.service"].unit_file_state == "enabled"


@pytest.mark.parametrize("sd", ["private"], indirect=True)
async def test_unknown_units(sd: Systemd) -> None:
    got = await sd.status(["nope.service", "not a unit name", "nope.timer"])
    assert {n: s.load_state for n, s in got.items()} == {
        "nope.service": "not-found",
        "not a unit name": "not-found",
        "nope.timer": "not-found",
    }
    assert got["nope.service"].active_state == "inactive"
    assert await sd.stop("nope.service") == "done"
    await sd.reset_failed("nope.service")
    with pytest.raises(SystemdError, match=r"nope\.service"):
        await sd.start("nope.service")


@pytest.mark.parametrize("sd", ["bus"], indirect=True)
async def test_mutating_calls_counts_only_changes(sd: Systemd, systemd_user: UserManager) -> None:
    _write(systemd_user, "m.service", SLEEPER.format(tag="m"))
    assert sd.mutating_calls == 0
    await sd.daemon_reload()
    await sd.status(["m.service", "nope.service"])
    await sd.wait_healthy("m.service", timeout=0.1)
    await sd.describe_failure("m.service")
    await sd.enable([])
    await sd.disable([])
    assert sd.mutating_calls == 1
    await sd.start("m.service")
    await sd.restart("m.service")
    await sd.stop("m.service")
    await sd.reset_failed("m.service")
    assert sd.mutating_calls == 5
    await sd.enable(["m.service"])  # EnableUnitFiles + the daemon-reload systemctl also does
    assert sd.mutating_calls == 7
    await sd.enable(["m.service"])  # already enabled: no symlink changed, no reload
    assert sd.mutating_calls == 8


@pytest.mark.parametrize("sd", ["private"], indirect=True)
async def test_need_daemon_reload_is_read_fresh(sd: Systemd, systemd_user: UserManager) -> None:
    path = _write(systemd_user, "edit.service", SLEEPER.format(tag="v1"))
    await sd.daemon_reload()
    await sd.start("edit.service")
    assert not (await sd.status(["edit.service"]))["edit.service"].need_daemon_reload
    path.write_text(SLEEPER.format(tag="v2"))
    future = time.time() + 10  # systemd 252 flags only a NEWER mtime; never the same tick
    os.utime(path, (future, future))
    assert (await sd.status(["edit.service"]))["edit.service"].need_daemon_reload
    # not asked for: not read (the engine asks only when no unit file is to be written)
    assert not (await sd.status(["edit.service"], need_reload=False))[
        "edit.service"
    ].need_daemon_reload
    assert await sd.need_daemon_reload(["edit.service"]) == {"edit.service": True}
    assert (await sd.status(["edit.service"]))["edit.service"].need_daemon_reload
    await sd.daemon_reload()
    assert not (await sd.status(["edit.service"]))["edit.service"].need_daemon_reload
    assert await sd.need_daemon_reload(["edit.service"]) == {"edit.service": False}
    assert _show(systemd_user, "edit.service", "Description") == "sleeper v2"


async def test_status_of_many_units_in_one_call(sd: Systemd, systemd_user: UserManager) -> None:
    names = [f"many{i}.service" for i in range(60)]
    for i, n in enumerate(names):
        _write(
            systemd_user,
            n,
            SLEEPER.format(tag=i) if i % 2 else "[Service]\nType=oneshot\nExecStart=/bin/true\n",
        )
    await sd.daemon_reload()
    await asyncio.gather(*(sd.start(n) for n in names))
    # ~420 pipelined calls: dbus-fast 5.2 dropped the connection on EAGAIN before the fix
    got = await sd.status(names)
    assert list(got) == names
    assert all(s.healthy for s in got.values())
    listed = systemd_user.systemctl(
        "list-units", "--plain", "--no-legend", "--state=active", "many*"
    ).stdout
    assert {line.split()[0] for line in listed.splitlines()} == set(names[1::2])
    again = await sd.status(names)  # served mostly from the signal-invalidated cache
    assert again == got


async def test_warm_fills_the_status_cache_but_starts_nothing_after_its_deadline(
    sd: Systemd, systemd_user: UserManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [f"warm{i}.service" for i in range(7)]
    for i, n in enumerate(names):
        _write(systemd_user, n, SLEEPER.format(tag=i))
    await sd.daemon_reload()
    await asyncio.gather(*(sd.start(n) for n in names))
    await sd.daemon_reload()  # systemd recomputes UnitFileState; our cache is empty again
    calls: list[str] = []
    real_call = sd.reader.call

    async def counted(member: str, *args: Any, **kwargs: Any) -> list[Any]:
        calls.append(member)
        return await real_call(member, *args, **kwargs)

    monkeypatch.setattr(sd.reader, "call", counted)
    loop = asyncio.get_running_loop()
    await sd.warm([*names, "nothere.service"], loop.time() - 1)
    assert calls == ["ListUnitsByNames"]  # past its deadline: no property read
    await sd.warm([*names, "nothere.service"], loop.time() + 30)
    assert calls.count("ListUnitsByNames") == 2 and "Get" in calls
    calls.clear()
    got = await sd.status(names, need_reload=False)
    assert calls == ["ListUnitsByNames"]  # everything else came from the warmed cache
    for n in names:  # ...and is what systemd says
        assert (got[n].unit_file_state, got[n].main_pid, got[n].invocation_id) == (
            _show(systemd_user, n, "UnitFileState"),
            int(_show(systemd_user, n, "MainPID")),
            _show(systemd_user, n, "InvocationID"),
        )


async def test_status_sees_changes_made_by_another_client(
    sd: Systemd, systemd_user: UserManager
) -> None:
    _write(systemd_user, "drift.service", SLEEPER.format(tag="d"))
    await sd.daemon_reload()
    await sd.start("drift.service")
    first = (await sd.status(["drift.service"]))["drift.service"]
    systemd_user.systemctl("restart", "drift.service", check=True)
    second = (await sd.status(["drift.service"]))["drift.service"]
    assert second.invocation_id not in ("", first.invocation_id)
    assert second.invocation_id == _show(systemd_user, "drift.service", "InvocationID")
    systemd_user.systemctl("stop", "drift.service", check=True)
    assert (await sd.status(["drift.service"]))["drift.service"].active_state == "inactive"
    # systemctl outside the manager's mount namespace thinks it is offline: `enable` only
    # writes the symlink; the manager's UnitFileState follows at the admin's daemon-reload
    systemd_user.systemctl("enable", "drift.service", check=True)
    systemd_user.systemctl("daemon-reload", check=True)
    assert (await sd.status(["drift.service"]))["drift.service"].unit_file_state == "enabled"


async def test_two_managers_do_not_affect_each_other(
    systemd_user_factory: Callable[[str], UserManager],
) -> None:
    a, b = systemd_user_factory("a"), systemd_user_factory("b")
    conns = [await _connect(a), await _connect(b, b.private_address)]
    try:
        for um, conn in zip((a, b), conns, strict=True):
            _write(um, "same.service", SLEEPER.format(tag=um.name))
            await conn.daemon_reload()
            assert await conn.start("same.service") == "done"
        pid_b = (await conns[1].status(["same.service"]))["same.service"].main_pid
        assert await conns[0].stop("same.service") == "done"
        assert a.systemctl("is-active", "same.service").stdout.strip() == "inactive"
        assert b.systemctl("is-active", "same.service").stdout.strip() == "active"
        assert int(_show(b, "same.service", "MainPID")) == pid_b
        assert b"sleep" in _cmdline(pid_b)
    finally:
        for conn in conns:
            await conn.close()


async def test_private_socket_connects_50_times_without_hanging(systemd_user: UserManager) -> None:
    """systemd 252 stalls when Hello shares a read with BEGIN (3 of 40 before the cure)."""
    for _ in range(50):
        async with asyncio.timeout(5):
            conn = await _connect(systemd_user, systemd_user.private_address)
            st = await conn.status(["default.target"])
            await conn.close()
        assert st["default.target"].active_state == "active"


def _gone(pid: int) -> bool:
    """Exited: a zombie (the fixture reaps it at teardown) or no process at all."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


@pytest.mark.parametrize("via", ["bus", "private"])
async def test_lost_connection_raises_systemd_error(
    systemd_user_factory: Callable[[str], UserManager], via: str
) -> None:
    um = systemd_user_factory("gone")
    _write(um, "slow.service", "[Service]\nType=oneshot\nExecStart=/bin/sleep 30\n")
    conn = await _connect(um, um.bus_address if via == "bus" else um.private_address)
    try:
        await conn.daemon_reload()
        job = asyncio.create_task(conn.start("slow.service"), name="pending-job")
        st = await conn.wait_healthy("slow.service", timeout=0.3)
        assert st.active_state == "activating"
        um.systemctl("exit")
        # the pending start ends either way: systemd cancels it, or the connection drops
        with contextlib.suppress(SystemdError):
            assert await asyncio.wait_for(job, 15) == "canceled"
        for _ in range(200):
            if _gone(um.pid):
                break
            await asyncio.sleep(0.05)
        assert _gone(um.pid)
        with pytest.raises(SystemdError):
            await conn.status(["slow.service"])
        with pytest.raises(SystemdError):
            await conn.start("slow.service")
    finally:
        await conn.close()


async def test_connect_to_nothing_raises_systemd_error(tmp_path: Path) -> None:
    with pytest.raises(SystemdError, match="cannot connect"):
        await Systemd.connect(Scope.USER, runtime_dir=str(tmp_path), home=str(tmp_path))


def test_unit_status_health_table() -> None:
    def st(
        active: str,
        result: str = "success",
        stype: str = "simple",
        load: str = "loaded",
        inv: str = "ab",
    ) -> UnitStatus:
        return UnitStatus("u.service", load, active, "", "", inv, 0, result, stype, False)

    assert st("active").healthy
    assert not st("inactive").healthy
    assert st("inactive", stype="oneshot").healthy
    assert st("inactive", stype="oneshot", inv="").healthy  # ran, then garbage-collected
    assert not st("failed", result="exit-code").healthy
    assert st("failed", result="exit-code").failed
    assert st("inactive", load="not-found").failed
    assert not st("activating").failed


# -- pure parts: address/unit-dir resolution, object paths, status text ---------------------


def _listening_socket(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    return s


def test_first_candidate_endpoint_table(tmp_path: Path) -> None:
    with_bus, without_bus = tmp_path / "rt1", tmp_path / "rt2"
    with_bus.mkdir()
    without_bus.mkdir()
    (without_bus / "bus").write_text("a plain file is not a bus")
    sock = _listening_socket(with_bus / "bus")
    env = {"HOME": "/home/core", "XDG_RUNTIME_DIR": str(with_bus)}
    cases: list[tuple[dict[str, Any], Endpoint]] = [
        (
            # as root the private socket would come first: tests/test_system_scope.py
            {"scope": Scope.SYSTEM, "environ": env, "uid": 1000},
            Endpoint("unix:path=/run/dbus/system_bus_socket", False, Path("/etc/systemd/system")),
        ),
        (
            {"scope": Scope.SYSTEM, "unit_dir": Path("/x"), "environ": {}, "uid": 1000},
            Endpoint("unix:path=/run/dbus/system_bus_socket", False, Path("/x")),
        ),
        (
            {"scope": Scope.USER, "environ": env},
            Endpoint(f"unix:path={with_bus}/bus", False, Path("/home/core/.config/systemd/user")),
        ),
        (
            {"scope": Scope.USER, "environ": {**env, "XDG_RUNTIME_DIR": str(without_bus)}},
            Endpoint(
                f"unix:path={without_bus}/systemd/private",
                True,
                Path("/home/core/.config/systemd/user"),
            ),
        ),
        (
            {"scope": Scope.USER, "environ": {**env, "XDG_CONFIG_HOME": "/cfg"}},
            Endpoint(f"unix:path={with_bus}/bus", False, Path("/cfg/systemd/user")),
        ),
        # an explicit home is another user's home: the caller's XDG_CONFIG_HOME does not apply
        (
            {
                "scope": Scope.USER,
                "home": "/n1",
                "runtime_dir": str(without_bus),
                "environ": {**env, "XDG_CONFIG_HOME": "/cfg"},
            },
            Endpoint(
                f"unix:path={without_bus}/systemd/private", True, Path("/n1/.config/systemd/user")
            ),
        ),
        (
            {"scope": Scope.USER, "environ": {"HOME": "/h"}, "uid": 500},
            Endpoint(
                "unix:path=/run/user/500/systemd/private", True, Path("/h/.config/systemd/user")
            ),
        ),
        (
            {"scope": Scope.USER, "address": "unix:path=/r/systemd/private", "environ": env},
            Endpoint("unix:path=/r/systemd/private", True, Path("/home/core/.config/systemd/user")),
        ),
        (
            {
                "scope": Scope.USER,
                "address": "unix:path=/r/bus",
                "unit_dir": Path("/u"),
                "environ": {},
            },
            Endpoint("unix:path=/r/bus", False, Path("/u")),
        ),
    ]
    try:
        for kwargs, expected in cases:
            scope = kwargs.pop("scope")
            assert candidate_endpoints(scope, **kwargs)[0] == expected, kwargs
    finally:
        sock.close()
    with pytest.raises(SystemdError, match="unit dir"):
        candidate_endpoints(Scope.USER, environ={})


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("web.service", "/org/freedesktop/systemd1/unit/web_2eservice"),
        ("etcd-member.service", "/org/freedesktop/systemd1/unit/etcd_2dmember_2eservice"),
        ("a@b.service", "/org/freedesktop/systemd1/unit/a_40b_2eservice"),
        ("-.slice", "/org/freedesktop/systemd1/unit/_2d_2eslice"),
    ],
)
def test_unit_path_matches_systemd(name: str, path: str) -> None:
    assert unit_path(name) == path


@pytest.mark.parametrize(
    ("code", "status", "text"),
    [
        (1, 0, "code=exited, status=0/SUCCESS"),
        (1, 1, "code=exited, status=1/FAILURE"),
        (1, 42, "code=exited, status=42"),
        (2, 15, "code=killed, signal=TERM"),
        (3, 11, "code=dumped, signal=SEGV"),
    ],
)
def test_exit_text(code: int, status: int, text: str) -> None:
    assert exit_text(code, status) == text


def test_describe_from_properties_without_journal() -> None:
    props = {
        "Description": "web server",
        "FragmentPath": "/u/web.service",
        "UnitFileState": "enabled",
        "Result": "exit-code",
        "InactiveEnterTimestamp": 1_700_000_000_000_000,
        "ExecMainCode": 1,
        "ExecMainStatus": 2,
        "ExecMainPID": 77,
        "ExecStart": [("/bin/web", ["/bin/web", "-x"], False, 0, 0, 0, 0, 77, 1, 2)],
        "InvocationID": b"\x00" * 16,  # never started in this boot: no id to show
    }
    text = describe_from_properties("web.service", "loaded", "failed", "failed", props)
    assert text.splitlines() == [
        "× web.service - web server",
        "     Loaded: loaded (/u/web.service; enabled)",
        "     Active: failed (Result: exit-code: the main process exited with a non-zero status) "
        "since 2023-11-14 22:13:20 UTC",
        "    Process: 77 ExecStart=/bin/web -x (code=exited, status=2/INVALIDARGUMENT)",
        "   Main PID: 77 (code=exited, status=2/INVALIDARGUMENT)",
    ]


@pytest.mark.parametrize(
    ("invocation", "user", "tail"),
    [
        ("ab" * 16, False, ["_SYSTEMD_INVOCATION_ID=" + "ab" * 16, "+",
                            "INVOCATION_ID=" + "ab" * 16, "+", "USER_INVOCATION_ID=" + "ab" * 16]),
        ("", False, ["-u", "web.service"]),
        ("", True, ["-u", "web.service"]),
    ],
)  # fmt: skip
def test_journal_args_select_one_invocation(invocation: str, user: bool, tail: list[str]) -> None:
    from reconciler.actuators.describe import journal_args

    args = journal_args("web.service", invocation, 7, user=user)
    assert (args[0] == "--user") is user
    assert args[-len(tail) :] == tail and args[args.index("-n") + 1] == "7"


@pytest.mark.parametrize(
    ("result", "words"),
    [("resources", "resources: systemd could not set it up"),
     ("oom-kill", "oom-kill: the kernel's OOM killer stopped it"),
     ("something-new", "something-new")],
)  # fmt: skip
def test_result_in_words(result: str, words: str) -> None:
    from reconciler.actuators.describe import result_text

    assert result_text(result).startswith(words)
