"""The systemd user-manager fixture itself: isolation from the host, teardown that leaves
nothing behind even when the manager will not exit, and independent managers side by side."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.fixtures.systemd_user import UserManager, user_manager

STUBBORN = """\
[Service]
ExecStart=/bin/sh -c 'trap "" TERM; echo $$$$ > {pidfile}; while :; do sleep 0.2; done'
KillMode=mixed
TimeoutStopSec=120
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _wait_for(path: Path) -> str:
    for _ in range(200):
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.02)
    raise AssertionError(f"{path} never written")


def test_manager_runs_in_its_own_cgroup_and_leaves_the_host_alone(tmp_path: Path) -> None:
    host_run_system = Path("/run/systemd/system").exists()
    with user_manager(tmp_path, "iso") as um:
        assert um.systemctl("show", "-P", "SystemState").stdout.strip() in ("running", "degraded")
        assert Path("/run/systemd/system").exists() == host_run_system
        assert (um.runtime_dir.stat().st_mode & 0o777) == 0o700
        assert um.unit_dir == um.home / ".config/systemd/user" and um.unit_dir.is_dir()
        assert b"systemd" in Path(f"/proc/{um.pid}/cmdline").read_bytes()
        cgroup = Path(f"/proc/{um.pid}/cgroup").read_text()
        for cg in um.cgroups:
            assert cg.is_dir()
            assert f"/{cg.name}/" in cgroup  # unified and name=systemd both below our dir
        # the manager's mount namespace has its own /run/systemd, with the user generators
        # masked so that daemon-reload stays cheap
        ns_run = Path(f"/proc/{um.pid}/root/run/systemd")
        assert (ns_run / "system").is_dir()
        masked = ns_run / "user-generators/systemd-xdg-autostart-generator"
        assert masked.is_symlink() and str(masked.readlink()) == "/dev/null"
        cgroups, pid = um.cgroups, um.pid
    assert not _alive(pid)
    assert not any(cg.exists() for cg in cgroups)


def test_teardown_kills_a_manager_that_does_not_exit(tmp_path: Path) -> None:
    pidfile = tmp_path / "stubborn.pid"
    with user_manager(tmp_path, "stuck", stop_timeout=0.5) as um:
        (um.unit_dir / "stubborn.service").write_text(STUBBORN.format(pidfile=pidfile))
        um.systemctl("daemon-reload", check=True)
        um.systemctl("start", "stubborn.service", check=True)
        child = int(_wait_for(pidfile))
        assert _alive(child)
        manager, cgroups = um.pid, um.cgroups
    # `exit` waits for the TERM-ignoring unit (120 s); the fixture killed the manager
    # after 0.5 s and the leftover through cgroup.kill, then removed the cgroups
    assert not _alive(manager)
    assert not _alive(child)
    assert not any(cg.exists() for cg in cgroups)


def test_same_unit_in_two_managers_lives_in_two_cgroups(tmp_path: Path) -> None:
    unit = "[Service]\nExecStart=/bin/sleep 1000\n"
    with user_manager(tmp_path, "n1") as a, user_manager(tmp_path, "n2") as b:
        pids = []
        for um in (a, b):
            (um.unit_dir / "same.service").write_text(unit)
            um.systemctl("daemon-reload", check=True)
            um.systemctl("start", "same.service", check=True)
            pids.append(int(um.systemctl("show", "-P", "MainPID", "same.service").stdout))
        for um, pid in zip((a, b), pids, strict=True):
            assert um.cgroups[0].name in Path(f"/proc/{pid}/cgroup").read_text()
        a.systemctl("stop", "same.service", check=True)
        assert not _alive(pids[0])
        assert _alive(pids[1])
        assert b.systemctl("is-active", "same.service").stdout.strip() == "active"


def _manager_names(um: UserManager) -> set[str]:
    out = um.systemctl("list-units", "--plain", "--no-legend", "--all", "dbus.socket").stdout
    return {line.split()[0] for line in out.splitlines()}


def test_env_reaches_the_manager_through_systemctl_and_the_bus(tmp_path: Path) -> None:
    with user_manager(tmp_path, "env") as um:
        assert _manager_names(um) == {"dbus.socket"}
        # the node's dbus.socket is socket-activated on first use of the bus address
        out = subprocess.run(
            ["busctl", "--user", "--no-pager", "list"],
            env=um.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        assert "org.freedesktop.systemd1" in out
        assert um.systemctl("is-active", "dbus.service").stdout.strip() == "active"
