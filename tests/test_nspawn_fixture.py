"""The PID-1 node fixture itself: systemd is PID 1 of a system manager, the node's writes stay
in its own overlay, this checkout's code runs inside, and teardown leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.nspawn import Node, node_root, pid1_node

pytestmark = pytest.mark.slow


def _mounts() -> str:
    return Path("/proc/self/mountinfo").read_text()


def test_boots_systemd_as_pid1_and_cleans_up(tmp_path: Path) -> None:
    root = node_root()
    t0 = time.monotonic()

    def before_boot(root: Path) -> None:  # e.g. Ignition's files stage, in the sandbox
        unit = root / "etc/systemd/system/early.service"
        unit.write_text(
            "[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n"
        )
        (root / "etc/systemd/system/multi-user.target.wants").mkdir(parents=True, exist_ok=True)
        (root / "etc/systemd/system/multi-user.target.wants/early.service").symlink_to(
            "/etc/systemd/system/early.service"
        )

    units = ("basic.target", "systemd-journald.service", "early.service")
    with pid1_node(tmp_path, "n1", units=units, before_boot=before_boot) as node:
        boot = time.monotonic() - t0
        # PID 1 inside is systemd, and the host sees it as the leader
        assert node.run("cat", "/proc/1/comm", check=True).stdout.strip() == "systemd"
        assert Path(f"/proc/{node.leader_pid}/comm").read_text().strip() == "systemd"
        assert node.run("hostname", check=True).stdout.strip() == "n1"
        # a system manager, reached the way systemctl does as root
        assert node.show("-.mount", "Id")["Id"] == "-.mount"
        assert node.systemctl("show", "-PVirtualization").stdout.strip() == "systemd-nspawn"
        # writes land in the node's upper layer, never in the cached root
        node.run("sh", "-c", "echo hi > /etc/written-inside", check=True)
        assert (node.dir / "upper/etc/written-inside").read_text() == "hi\n"
        assert not (root / "etc/written-inside").exists()
        node.path("/etc/written-outside").write_text("ho\n")
        assert node.run("cat", "/etc/written-outside", check=True).stdout == "ho\n"
        # this checkout's code runs inside
        out = node.swarmkeeper("--help")
        assert out.returncode == 0, out.stderr
        assert "apply" in out.stdout
        leader, cgroups, merged = node.leader_pid, node.cgroups, node.root
        assert all(cg.is_dir() for cg in cgroups)
        assert str(merged) in _mounts()
        print(f"boot to basic.target: {boot:.2f}s")
    assert not Path(f"/proc/{leader}").exists()
    assert not any(cg.exists() for cg in cgroups)
    assert str(merged) not in _mounts()
    assert not (tmp_path / "n1").exists()


def test_two_nodes_do_not_share_cgroups(pid1_node_factory: Callable[..., Node]) -> None:
    """Stopping a unit on one node leaves the same-named unit on the other running."""
    a, b = pid1_node_factory("a"), pid1_node_factory("b", binds=())
    for n in (a, b):
        n.run("systemd-run", "--unit=sleeper.service", "sleep", "600", check=True)
    a.systemctl("stop", "sleeper.service", check=True)
    assert b.systemctl("is-active", "sleeper.service").stdout.strip() == "active"
    assert a.systemctl("is-active", "sleeper.service").stdout.strip() != "active"
    assert a.cgroups != b.cgroups


def test_own_network_namespace(tmp_path: Path) -> None:
    ns = f"sk-nspawn-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        with pid1_node(tmp_path, "netted", netns=ns, binds=()) as node:
            links = node.run("ip", "-o", "link", "show", check=True).stdout
            assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]
            host_ns = os.readlink("/proc/self/ns/net")
            assert os.readlink(f"/proc/{node.leader_pid}/ns/net") != host_ns
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=True)


def test_boot_failure_cleans_up(tmp_path: Path) -> None:
    """A node that never gets its units up is torn down like any other."""
    before = {p.name for p in Path("/sys/fs/cgroup/unified").iterdir() if p.is_dir()}
    with (
        pytest.raises(RuntimeError, match=r"no-such\.service"),
        pid1_node(tmp_path, "bad", units=("no-such.service",), boot_timeout=3.0),
    ):
        pass
    after = {p.name for p in Path("/sys/fs/cgroup/unified").iterdir() if p.is_dir()}
    assert not {n for n in after - before if n.startswith("swarmkeeper-node-bad")}
    assert not (tmp_path / "bad").exists()
