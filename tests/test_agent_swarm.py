"""Agents manage Docker Swarm membership: three agent processes, three real dockerd engines.

Each node is a systemd user manager plus an agent started with ``--docker`` pointing at its
own engine (each engine in its own network namespace, on a private bridge). The state says
one manager and two workers; the agents must form exactly that swarm and report it in their
status keys.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.fixtures.dockernet import DockerLab
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.gitrepo import git
from tests.test_agent import Cluster, publish
from tests.test_agent import make_cluster as make_cluster  # the fixture, used by name

pytestmark = pytest.mark.slow


def engine_info(host: str) -> dict[str, object]:
    out = subprocess.run(
        ["docker", "-H", host, "info", "--format", "{{json .Swarm}}"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    info: dict[str, object] = json.loads(out.stdout)
    return info


def test_agents_form_the_swarm_the_state_describes(
    etcd_server: EtcdServer,
    docker_lab: DockerLab,
    make_cluster: Callable[..., Cluster],
) -> None:
    engines = docker_lab.nodes[:3]
    docker_lab.wipe_swarm(engines)
    roles = {"m1": "manager", "w1": "worker", "w2": "worker"}
    extra = {
        name: ["--docker", e.docker_host, "--address", e.address]
        for name, e in zip(roles, engines, strict=True)
    }
    c = make_cluster(etcd_server.endpoint, roles, per_node_extra=extra)
    rev = git(c.repo.work, "rev-parse", "HEAD")
    publish(c.endpoints, rev)
    c.wait(
        lambda s: s["revision"] == rev and (s.get("swarm") or {}).get("state") == "member",
        "every node a swarm member", timeout=90,
    )  # fmt: skip
    st = c.status()
    assert {n: st[n]["swarm"]["role"] for n in roles} == roles
    assert [n for n in roles if st[n]["swarm"]["leader"]] == ["m1"]
    infos = [engine_info(e.docker_host) for e in engines]
    assert {i["LocalNodeState"] for i in infos} == {"active"}
    # exactly one swarm: the manager's node list holds every engine's node id
    listed = subprocess.run(
        ["docker", "-H", engines[0].docker_host, "node", "ls", "--format", "{{.ID}}"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.split()  # fmt: skip
    assert sorted(listed) == sorted(str(i["NodeID"]) for i in infos)
    assert {st[n]["swarm"]["node_id"] for n in roles} == set(listed)
    assert infos[0]["ControlAvailable"] is True and infos[0]["Nodes"] == 3
    assert [i["ControlAvailable"] for i in infos[1:]] == [False, False]
    # the operator's table shows it too
    table = subprocess.run(
        [sys.executable, "-m", "reconciler", "status", "--etcd", c.endpoints],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rows = {line.split()[0]: line for line in table.splitlines()[2:5]}
    assert "manager* 1/1" in rows["m1"] and "worker" in rows["w1"] and "worker" in rows["w2"]
