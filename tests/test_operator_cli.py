"""The operator commands (status, publish, pause, resume, rollout) run as real subprocesses
against a real etcd; assertions read back what etcd holds afterwards."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler import keys
from reconciler.etcd.client import Etcd
from reconciler.status import NodeState, NodeStatus, utcnow
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.gitrepo import StateRepo

P = "/swarmkeeper"
A, B = "a" * 40, "b" * 40
ROOT = Path(__file__).resolve().parent.parent


def cli(ep: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SWARMKEEPER_ETCD": ep, "PYTHONPATH": str(ROOT)}
    env.pop("SWARMKEEPER_PREFIX", None)
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=cwd or ROOT,
    )


async def etcd_get(ep: str, key: str) -> bytes | None:
    async with await Etcd.connect([ep]) as e:
        kv = await e.get(key)
        return kv.value if kv else None


@pytest.fixture
def cluster_state(etcd_server: EtcdServer) -> Iterator[str]:
    """desired = A; m1 converged on A and alive; w1 degraded on B, dead, paused."""
    ep = etcd_server.endpoint

    async def setup() -> Etcd:
        e = await Etcd.connect([ep])
        await e.put(keys.desired_revision(P), A)
        lease = await e.lease(5)
        await e.put(keys.node_alive(P, "m1"), "{}", lease=lease)
        await e.put(
            keys.node_status(P, "m1"),
            NodeStatus(
                node="m1",
                role="manager",
                state=NodeState.CONVERGED,
                revision=A,
                desired=A,
                units={"a.service": "active"},
                updated_at=utcnow(),
            ).to_json(),
        )
        await e.put(
            keys.node_status(P, "w1"),
            NodeStatus(
                node="w1",
                role="worker",
                state=NodeState.DEGRADED,
                revision=B,
                desired=A,
                error="a.service failed to start\nsecond line",
                updated_at=utcnow(),
            ).to_json(),
        )
        await e.put(keys.node_pause(P, "w1"), "{}")
        return e

    # m1's lease must be kept alive while the test runs its subprocesses: the client lives
    # on an event loop running in a thread of its own.
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="m1-agent", daemon=True)
    thread.start()
    e = asyncio.run_coroutine_threadsafe(setup(), loop).result(30)
    try:
        yield ep
    finally:
        asyncio.run_coroutine_threadsafe(e.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_status_table(cluster_state: str) -> None:
    r = cli(cluster_state, "status")
    assert r.returncode == 3, r.stderr  # w1 is dead: not everything converged
    lines = r.stdout.splitlines()
    assert lines[0].startswith("desired aaaaaaaa")
    assert lines[1].split() == [
        "NODE",
        "ROLE",
        "STATE",
        "APPLIED",
        "DESIRED",
        "ALIVE",
        "HEARTBEAT",
        "REPORTED",
        "SWARM",
        "ERROR",
    ]
    m1 = next(ln for ln in lines if ln.startswith("m1 "))
    w1 = next(ln for ln in lines if ln.startswith("w1 "))
    assert m1.split()[:6] == ["m1", "manager", "converged", "aaaaaaaa", "aaaaaaaa", "yes"]
    # its lease is gone: what it last reported (degraded) is not current, so it shows dead
    assert "dead (pause set)" in w1 and "bbbbbbbb *" in w1 and " NO " in w1
    assert w1.endswith("a.service failed to start")  # first line of the error only
    assert lines[-1].startswith("1 converged, 1 dead  (1/2 converged on the desired revision)")


def test_status_json(cluster_state: str) -> None:
    r = cli(cluster_state, "status", "--json")
    assert r.returncode == 3, r.stderr
    snap = json.loads(r.stdout)
    assert (snap["apiVersion"], snap["kind"]) == ("swarmkeeper/v1", "Status")
    assert snap["desired"] == A and snap["converged"] is False
    assert snap["counts"] == {"converged": 1, "dead": 1}
    rows = {n["node"]: n for n in snap["nodes"]}
    assert rows["m1"]["alive"] is True and 0 <= rows["m1"]["heartbeat_age"] <= 5
    assert rows["m1"]["units"] == {"a.service": "active"}
    assert rows["w1"]["alive"] is False and rows["w1"]["paused"] is True
    assert rows["w1"]["state"] == "dead" and rows["w1"]["reported"] == "degraded"
    assert rows["w1"]["revision"] == B


def test_status_watch_redraws_on_change(cluster_state: str) -> None:
    env = {**os.environ, "SWARMKEEPER_ETCD": cluster_state, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "status", "--json", "--watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["desired"] == A
        asyncio.run(_put(cluster_state, keys.desired_revision(P), B))
        while True:  # every change prints a frame; the publish must show up
            frame = json.loads(proc.stdout.readline())
            if frame["desired"] == B:
                break
    finally:
        proc.terminate()
        proc.wait(10)


async def _put(ep: str, key: str, value: str) -> None:
    async with await Etcd.connect([ep]) as e:
        await e.put(key, value)


def test_pause_and_resume(cluster_state: str) -> None:
    ep = cluster_state
    r = cli(ep, "pause", "nosuchnode")
    assert r.returncode == 1 and "no node 'nosuchnode'" in r.stderr
    assert asyncio.run(etcd_get(ep, keys.node_pause(P, "nosuchnode"))) is None
    r = cli(ep, "pause", "m1", "--reason", "kernel upgrade")
    assert r.returncode == 0, r.stderr
    raw = asyncio.run(etcd_get(ep, keys.node_pause(P, "m1")))
    assert raw is not None and json.loads(raw)["reason"] == "kernel upgrade"
    assert "@" in json.loads(raw)["by"]
    assert "converged (pause set)" in cli(ep, "status").stdout
    r = cli(ep, "resume", "m1")
    assert r.returncode == 0 and "resumed m1" in r.stdout
    assert asyncio.run(etcd_get(ep, keys.node_pause(P, "m1"))) is None
    assert "was not paused" in cli(ep, "resume", "m1").stdout
    assert cli(ep, "pause", "later", "--force").returncode == 0
    assert asyncio.run(etcd_get(ep, keys.node_pause(P, "later"))) is not None


def test_rollout_halt_status_resume(cluster_state: str) -> None:
    ep = cluster_state
    assert "rollout: running" in cli(ep, "rollout", "status").stdout
    r = cli(ep, "rollout", "halt", "--reason", "investigating")
    assert r.returncode == 0, r.stderr
    assert asyncio.run(etcd_get(ep, keys.rollout_halted(P))) is not None
    out = cli(ep, "rollout", "status").stdout
    assert "HALTED by" in out and "investigating" in out
    asyncio.run(
        _put(
            ep,
            keys.rollout_failed(P),
            json.dumps({"revision": A, "node": "w1", "error": "a.service failed", "at": utcnow()}),
        )
    )
    out = cli(ep, "rollout", "status").stdout
    assert "revision aaaaaaaa failed on w1" in out
    assert "converged on the desired revision: 1/2; not yet: w1 (dead)" in out
    assert "ROLLOUT HALTED: aaaaaaaa failed on w1" in cli(ep, "status").stdout
    j = json.loads(cli(ep, "rollout", "status", "--json").stdout)
    assert j["rollout"]["failed"]["node"] == "w1"
    r = cli(ep, "rollout", "resume")
    assert r.returncode == 0 and "rollout resumed" in r.stdout
    assert asyncio.run(etcd_get(ep, keys.rollout_halted(P))) is None
    assert asyncio.run(etcd_get(ep, keys.rollout_failed(P))) is None


def test_publish_validates_first(etcd_server: EtcdServer, state_repo: StateRepo) -> None:
    ep = etcd_server.endpoint
    good = state_repo.commit({"units/b.service": "[Service]\nExecStart=/bin/true\n"}, "good")
    r = cli(ep, "publish", "HEAD", "--repo", str(state_repo.work))
    assert r.returncode == 0, r.stderr
    assert asyncio.run(etcd_get(ep, keys.desired_revision(P))) == good.encode()
    # with its artifact, which nodes render from without git
    assert "artifact" in r.stdout
    assert asyncio.run(etcd_get(ep, keys.revision_artifact(P, good) + "meta")) is not None
    r = cli(ep, "publish", "HEAD", "--repo", str(state_repo.work), "--keep-artifacts", "-1")
    assert r.returncode == 1 and "--keep-artifacts must be >= 0" in r.stderr
    # An invalid commit: nothing is published, every problem is listed as path:line.
    bad = state_repo.commit({"state/cluster.yaml": "name: test\nmanagers: [oops\n"}, "bad")
    r = cli(ep, "publish", bad, "--repo", str(state_repo.work))
    assert r.returncode == 1
    assert "state/cluster.yaml:" in r.stderr
    assert asyncio.run(etcd_get(ep, keys.desired_revision(P))) == good.encode()
    # Publishing the good one again is fine and says so; a wrong prefix is refused.
    r = cli(ep, "publish", good[:10], "--repo", str(state_repo.work))
    assert r.returncode == 0 and "already the desired revision" in r.stdout
    r = cli(ep, "publish", good, "--repo", str(state_repo.work), "--prefix", "/elsewhere")
    assert r.returncode == 1
    assert "prefix is /swarmkeeper, but the etcd prefix in use is /elsewhere" in r.stderr
    assert asyncio.run(etcd_get(ep, "/elsewhere/desired/revision")) is None
    r = cli(ep, "publish", "no-such-rev", "--repo", str(state_repo.work))
    assert r.returncode == 1 and "not found" in r.stderr


def test_publish_only_moves_forward_and_records_a_rollback(
    etcd_server: EtcdServer, state_repo: StateRepo
) -> None:
    from tests.fixtures.gitrepo import git

    ep, repo = etcd_server.endpoint, str(state_repo.work)
    c1 = state_repo.commit({"units/b.service": "[Service]\nExecStart=/bin/true\n"}, "c1")
    assert cli(ep, "publish", c1, "--repo", repo).returncode == 0
    c2 = state_repo.commit({"units/b.service": "[Service]\nExecStart=/bin/false\n"}, "c2")
    assert cli(ep, "publish", c2, "--repo", repo).returncode == 0
    # back to an ancestor: refused unless asked for, and the refusal says how
    r = cli(ep, "publish", c1, "--repo", repo)
    assert r.returncode == 1
    assert f"{c1[:12]} does not descend from the desired revision {c2[:12]}" in r.stderr
    assert "--allow-rollback" in r.stderr
    assert asyncio.run(etcd_get(ep, keys.desired_revision(P))) == c2.encode()
    # a sibling (a commit on another branch) is not a descendant either
    git(state_repo.work, "checkout", "-q", "-b", "side", c1)
    side = state_repo.commit({"units/b.service": "[Service]\nExecStart=/bin/echo\n"}, "side")
    git(state_repo.work, "checkout", "-q", "main")
    assert cli(ep, "publish", side, "--repo", repo).returncode == 1
    # on purpose: published, and who, when, from and to are recorded in etcd
    r = cli(ep, "publish", c1, "--repo", repo, "--allow-rollback")
    assert r.returncode == 0 and "a rollback, recorded" in r.stdout, r.stderr
    assert asyncio.run(etcd_get(ep, keys.desired_revision(P))) == c1.encode()

    async def rollbacks() -> list[dict[str, str]]:
        async with await Etcd.connect([ep]) as e:
            kvs, _ = await e.get_prefix(f"{P}/desired/rollbacks/")
            return [json.loads(kv.value) for kv in kvs]

    (record,) = asyncio.run(rollbacks())
    assert record["from"] == c2 and record["to"] == c1 and "@" in record["by"] and record["at"]
    # forward again needs nothing
    assert cli(ep, "publish", c2, "--repo", repo).returncode == 0


def test_publish_uses_the_prefix_in_use_not_the_commits(
    etcd_server: EtcdServer, state_repo: StateRepo
) -> None:
    ep, repo = etcd_server.endpoint, str(state_repo.work)
    lab = state_repo.commit({"state/cluster.yaml": "name: test\nmanagers: 1\nprefix: /lab\n"})
    r = cli(ep, "publish", lab, "--repo", repo)
    assert r.returncode == 1
    assert "prefix is /lab, but the etcd prefix in use is /swarmkeeper" in r.stderr
    assert asyncio.run(etcd_get(ep, "/lab/desired/revision")) is None
    assert cli(ep, "publish", lab, "--repo", repo, "--prefix", "/lab").returncode == 0
    assert asyncio.run(etcd_get(ep, "/lab/desired/revision")) == lab.encode()


def test_commands_fail_cleanly_without_etcd() -> None:
    from tests.fixtures.etcd import free_ports

    r = cli(f"127.0.0.1:{free_ports(1)[0]}", "status", "--etcd-timeout", "0.5")
    assert r.returncode == 4  # an outage, not bad input
    assert "unavailable" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("swarm", "shown"),
    [
        ({}, "-"),
        ({"state": "member", "role": "manager", "leader": True, "managers": 3, "managers_reachable": 3},
         "manager* 3/3"),
        ({"state": "member", "role": "manager", "leader": False, "managers": 3, "managers_reachable": 2},
         "manager 2/3"),
        ({"state": "member", "role": "worker", "leader": False, "managers": 0}, "worker"),
        ({"state": "conflict", "role": "worker"}, "conflict"),
    ],
)  # fmt: skip
def test_swarm_column(swarm: dict[str, object], shown: str) -> None:
    from reconciler.commands.status import _swarm

    assert _swarm(swarm) == shown
