"""Waiting on the cluster from outside, the way an operator would look at it.

etcd through ``etcdctl`` on the forwarded endpoints, swarm through ``docker node ls`` inside a
manager (``nsenter``), convergence through ``swarmkeeper status --json``. Each wait polls
until its condition holds or the deadline passes, and then says what it last saw.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from reconciler.sandbox import host, images, node

REPO_ROOT = images.REPO_ROOT
POLL = 1.0


def _etcdctl(endpoints: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["etcdctl", f"--endpoints={','.join(endpoints)}",
                           "--dial-timeout=2s", "--command-timeout=3s", *args],
                          capture_output=True, text=True, timeout=15,
                          env={**os.environ, "ETCDCTL_API": "3"})  # fmt: skip


def members(endpoints: list[str]) -> list[str]:
    out = _etcdctl(endpoints, "member", "list", "-w", "json")
    if out.returncode != 0:
        return []
    return [m.get("name", "") for m in json.loads(out.stdout).get("members", [])]


def etcd_formed(endpoints: list[str], size: int, deadline: float) -> None:
    """``size`` members, every endpoint healthy."""
    seen = "nothing"
    while time.monotonic() < deadline:
        names = members(endpoints)
        health = _etcdctl(endpoints, "endpoint", "health")
        seen = f"members {names}, health: {(health.stdout + health.stderr).strip()[-300:]}"
        if len(names) == size and all(names) and health.returncode == 0:
            return
        time.sleep(POLL)
    raise host.SandboxError(f"etcd did not form {size} healthy members in time; last: {seen}")


def swarm_nodes(leader_pid: int) -> list[dict[str, str]]:
    out = host.run(node.nsenter(leader_pid, "docker", "node", "ls", "--format", "{{json .}}"),
                   check=False)  # fmt: skip
    if out.returncode != 0:
        return []
    return [json.loads(line) for line in out.stdout.decode().splitlines() if line.strip()]


def swarm_formed(manager_pids: list[int], managers: int, workers: int, deadline: float) -> None:
    """``docker node ls`` on a manager (the first that answers): every node Ready and
    Active, ``managers`` of them managers."""
    seen: list[dict[str, str]] = []
    while time.monotonic() < deadline:
        for pid in manager_pids:
            seen = swarm_nodes(pid)
            if seen:
                break
        seen = [n for n in seen if n.get("Availability") == "Active"]
        ready = [n for n in seen if n.get("Status") == "Ready"]
        mgrs = [n for n in ready if n.get("ManagerStatus") in ("Leader", "Reachable")]
        if len(ready) == managers + workers and len(mgrs) == managers:
            return
        time.sleep(POLL)
    rows = [(n.get("Hostname"), n.get("Status"), n.get("ManagerStatus")) for n in seen]
    raise host.SandboxError(
        f"swarm did not form ({managers} managers, {workers} workers) in time; last: {rows}"
    )


def status(endpoint: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "reconciler", "status", "--etcd", endpoint,
                          "--json"], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})  # fmt: skip
    # exit 3: some node is not converged (the document is complete all the same)
    if out.returncode not in (0, 3) or not out.stdout.strip():
        return {"nodes": []}
    snap: dict[str, Any] = json.loads(out.stdout)
    return snap


def desired_revision(endpoint: str) -> str:
    return str(status(endpoint).get("desired", ""))


def in_swarm(leader_pid: int, manager: bool, deadline: float) -> None:
    """The node's own engine is an active swarm member (with a manager's control plane)."""
    want = f"active {'true' if manager else 'false'}"
    seen = ""
    while time.monotonic() < deadline:
        out = host.run(node.nsenter(leader_pid, "docker", "info", "--format",
                                    "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"),
                       check=False)  # fmt: skip
        seen = out.stdout.decode().strip()
        if seen == want:
            return
        time.sleep(POLL)
    raise host.SandboxError(f"the node's engine is not '{want}' in the swarm; last: {seen!r}")


def converged(endpoint: str, names: list[str], rev: str, deadline: float,
              say: Callable[[str], None], fresh: dict[str, float] | None = None) -> None:  # fmt: skip
    """Every node reports ``converged`` on ``rev``, alive and a swarm member; prints each
    change of the picture. ``fresh`` maps nodes to a ``time.monotonic()``: their report must
    be newer than that (a rebooted node's status from before the crash does not count)."""
    fresh = fresh or {}
    last: object = None
    rows: list[tuple[str, str, str]] = []
    while time.monotonic() < deadline:
        snap = status(endpoint)
        rows = sorted((r["node"], r["state"], r["revision"][:12]) for r in snap["nodes"])
        if rows != last:
            say("status: " + ", ".join(f"{n} {s} {r}" for n, s, r in rows))
            last = rows
        now = time.monotonic()
        done = {r[0] for r in rows} >= set(names) and all(
            r["state"] == "converged" and r["revision"] == rev and r["alive"]
            and (r.get("swarm") or {}).get("state") == "member"
            and (r["node"] not in fresh or (r.get("reported_age") or 1e9) < now - fresh[r["node"]])
            for r in snap["nodes"] if r["node"] in names
        )  # fmt: skip
        if done:
            return
        time.sleep(POLL)
    raise host.SandboxError(f"not every node converged on {rev[:12]} in time; last: {rows}")
