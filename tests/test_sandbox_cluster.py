"""The whole job on one machine: three managers and a worker booted by the real Ignition.

Runs ``swarmkeeper sandbox up`` as an operator would and checks the result only from outside,
through ``DIR/cluster.json``: etcd's members with the host's ``etcdctl`` on the forwarded
endpoints, the swarm with ``docker node ls`` inside a manager (``nsenter -t leader_pid``),
convergence and Vault's registration with ``swarmkeeper status`` and ``services``. Then a
commit to the state repo is published and reaches every node, a manager is killed outright
and comes back (etcd member, swarm manager, converged), and ``down`` leaves no process, mount,
namespace or cgroup behind.

Needs root, systemd-container, ignition and the cached node root (``make node-root``); about
3 minutes here. Its own lane: ``make test-sandbox`` (``.ci/run`` runs it after ``make test``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.sandbox import preflight, spec, watch

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(1200)]


def sk(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler", *args], capture_output=True,
                          text=True, timeout=timeout, env=ENV)  # fmt: skip


def wait_converged(endpoint: str, rev: str, names: list[str], timeout: float = 180) -> float:
    """Seconds until every node reports converged on ``rev`` (alive, a swarm member)."""
    start = time.monotonic()
    watch.converged(endpoint, names, rev, start + timeout, print)
    return time.monotonic() - start


def in_node(pid: int, *argv: str) -> str:
    out = subprocess.run(["nsenter", "-t", str(pid), "-a", *argv], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    d = tmp_path_factory.mktemp("sandbox") / "cluster"
    up = sk(
        "sandbox", "up", "--managers", "3", "--workers", "1", "--dir", str(d), "--timeout", "400"
    )
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        print(up.stdout)
        yield d
    finally:
        if (d / "sandbox.json").exists():
            sk("sandbox", "down", "--dir", str(d))


def cluster(d: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((d / "cluster.json").read_text())
    return doc


def test_up_writes_the_contracted_cluster_json(sandbox: Path) -> None:
    doc = cluster(sandbox)
    assert set(doc) == {"etcd", "prefix", "repo", "nodes"}
    assert doc["prefix"] == "/swarmkeeper" and Path(doc["repo"]).is_dir()
    assert [(n["name"], n["role"]) for n in doc["nodes"]] == [
        ("manager-1", "manager"), ("manager-2", "manager"), ("manager-3", "manager"),
        ("worker-1", "worker"),
    ]  # fmt: skip
    for n in doc["nodes"]:  # PID 1 of the node, as the host sees it
        assert in_node(n["leader_pid"], "cat", "/proc/1/comm").strip() == "systemd"
        assert in_node(n["leader_pid"], "hostname").strip() == n["name"]
    assert all(e.startswith("127.0.0.1:") for e in doc["etcd"]) and len(doc["etcd"]) == 3


def test_nodes_were_provisioned_by_ignition(sandbox: Path) -> None:
    for n in cluster(sandbox)["nodes"]:
        result = json.loads(in_node(n["leader_pid"], "cat", "/etc/.ignition-result.json"))
        assert result["userConfigProvided"] is True
        etcd_unit = "etcd-member.service" if n["role"] == "manager" else "etcd-proxy.service"
        active = in_node(n["leader_pid"], "systemctl", "is-active", "docker.service",
                         etcd_unit, "swarmkeeper-agent.service")  # fmt: skip
        assert active.split() == ["active"] * 3


def test_etcd_has_three_members_reachable_from_the_host(sandbox: Path) -> None:
    doc = cluster(sandbox)
    out = subprocess.run(["etcdctl", f"--endpoints={','.join(doc['etcd'])}", "member", "list",
                          "-w", "json"], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "ETCDCTL_API": "3"})  # fmt: skip
    assert out.returncode == 0, out.stderr
    names = sorted(m["name"] for m in json.loads(out.stdout)["members"])
    assert names == ["manager-1", "manager-2", "manager-3"]


def test_swarm_has_every_node_and_three_managers(sandbox: Path) -> None:
    m1 = cluster(sandbox)["nodes"][0]["leader_pid"]
    rows = [json.loads(line) for line in
            in_node(m1, "docker", "node", "ls", "--format", "{{json .}}").splitlines()]  # fmt: skip
    assert sorted(r["Hostname"] for r in rows) == ["manager-1", "manager-2", "manager-3", "worker-1"]  # fmt: skip
    assert all(r["Status"] == "Ready" for r in rows)
    assert sorted(r["ManagerStatus"] for r in rows) == ["", "Leader", "Reachable", "Reachable"]


def test_every_node_converged_and_vault_registered(sandbox: Path) -> None:
    doc = cluster(sandbox)
    snap = watch.status(doc["etcd"][0])
    assert len(snap["nodes"]) == 4 and snap["desired"]
    for r in snap["nodes"]:
        assert (r["state"], r["revision"], r["alive"]) == ("converged", snap["desired"], True)
    # each agent registers Vault on its own health-check interval (15 s in state/roles)
    registered: set[tuple[str, str]] = set()
    for _ in range(60):
        out = sk("services", "--etcd", doc["etcd"][0], "--json", timeout=60)
        assert out.returncode == 0, out.stderr
        registered = {(r["service"], r["node"]) for r in json.loads(out.stdout)["items"]}
        if registered == {("vault", f"manager-{i}") for i in (1, 2, 3)}:
            break
        time.sleep(1)
    assert registered == {("vault", f"manager-{i}") for i in (1, 2, 3)}


def test_a_published_change_reaches_every_node(sandbox: Path) -> None:
    doc = cluster(sandbox)
    work = sandbox / "state-work"
    git = ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@localhost"]
    for role in ("manager", "worker"):
        p = work / f"state/roles/{role}.yaml"
        p.write_text(p.read_text().replace("changes here are overwritten", "sandbox change"))
    subprocess.run([*git, "commit", "-qam", "motd: sandbox change"], check=True)
    subprocess.run([*git, "push", "-q", doc["repo"], "HEAD:main"], check=True)
    rev = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                         check=True).stdout.strip()  # fmt: skip
    out = sk("publish", "--repo", str(work), "--etcd", doc["etcd"][0], rev, timeout=60)
    assert out.returncode == 0, out.stderr
    took = wait_converged(doc["etcd"][0], rev, [n["name"] for n in doc["nodes"]])
    print(f"publish -> 4 nodes converged in {took:.1f} s")
    for n in doc["nodes"]:
        assert "sandbox change" in in_node(n["leader_pid"], "cat", "/etc/motd")


def test_a_killed_manager_comes_back_and_converges(sandbox: Path) -> None:
    before = cluster(sandbox)
    out = sk("sandbox", "reboot", "manager-2", "--dir", str(sandbox), "--timeout", "300")
    assert out.returncode == 0, out.stdout + out.stderr
    print(out.stdout)
    after = cluster(sandbox)
    old, new = before["nodes"][1]["leader_pid"], after["nodes"][1]["leader_pid"]
    assert old != new and not Path(f"/proc/{old}").exists()
    assert in_node(new, "docker", "info", "--format",
                   "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}").strip() == "active true"  # fmt: skip
    snap = watch.status(after["etcd"][1])  # through the rebooted member's own endpoint
    assert all(
        r["state"] == "converged" and r["revision"] == snap["desired"] for r in snap["nodes"]
    )


def test_down_leaves_nothing_behind(sandbox: Path) -> None:
    lay = spec.layout(sandbox, 3, 1)
    out = sk("sandbox", "down", "--dir", str(sandbox))
    assert out.returncode == 0, out.stdout + out.stderr
    assert preflight.leftovers(lay) == []
    assert not sandbox.exists()
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"sk{lay.tag}-" not in netns  # the veths lived in these namespaces only
