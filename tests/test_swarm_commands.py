"""``swarmkeeper drain`` and ``swarmkeeper swarm status`` through the CLI, on a real etcd."""

from __future__ import annotations

import asyncio
import json

import pytest

from reconciler import keys
from reconciler.cli import main
from reconciler.etcd.client import Etcd
from reconciler.swarm.records import dumps
from tests.fixtures.etcd import EtcdServer

TOKENS = {"worker": "SWMTKN-1-secretworker", "manager": "SWMTKN-1-secretmanager"}


async def _seed(endpoint: str, prefix: str) -> None:
    async with await Etcd.connect([endpoint]) as e:
        await e.put(
            keys.swarm_cluster(prefix),
            dumps({"phase": "ready", "cluster_id": "c1", "created_by": "node1"}),
        )
        await e.put(keys.swarm_managers(prefix), dumps(["10.0.0.1:2377"]))
        await e.put(keys.swarm_tokens(prefix), dumps(TOKENS))
        await e.put(
            keys.swarm_node(prefix, "node1"),
            dumps({"id": "n1", "addr": "10.0.0.1", "role": "manager", "state": "member"}),
        )
        await e.put(
            keys.swarm_node(prefix, "node4"),
            dumps({"id": "n4", "addr": "10.0.0.4", "role": "worker", "state": "member"}),
        )


async def _get(endpoint: str, key: str) -> bytes | None:
    async with await Etcd.connect([endpoint]) as e:
        kv = await e.get(key)
        return kv.value if kv else None


def test_drain_and_status(etcd_server: EtcdServer, capsys: pytest.CaptureFixture[str]) -> None:
    ep, prefix = etcd_server.endpoint, "/cmd"
    asyncio.run(_seed(ep, prefix))
    common = ["--etcd", ep, "--prefix", prefix]

    assert main(["drain", "node4", *common]) == 0
    assert "drain requested" in capsys.readouterr().out
    raw = asyncio.run(_get(ep, keys.swarm_drain(prefix, "node4")))
    assert raw is not None and "by" in json.loads(raw)
    assert main(["drain", "node4", *common]) == 0
    assert "already requested" in capsys.readouterr().out

    assert main(["swarm", "status", "--json", *common]) == 0
    out = capsys.readouterr().out
    d = json.loads(out)
    assert d["phase"] == "ready" and d["cluster_id"] == "c1"
    assert d["nodes"]["node4"]["drain_requested"] is True
    assert d["nodes"]["node1"]["drain_requested"] is False
    assert d["tokens_published"] is True
    assert main(["swarm", "status", *common]) == 0
    out += capsys.readouterr().out
    assert "SWMTKN" not in out  # the tokens are secrets: never printed

    assert main(["drain", "--undo", "node4", *common]) == 0
    assert "withdrawn" in capsys.readouterr().out
    assert asyncio.run(_get(ep, keys.swarm_drain(prefix, "node4"))) is None


def test_swarm_without_subcommand_is_a_usage_error(
    etcd_server: EtcdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["swarm"]) == 1
    assert "rotate-tokens" in capsys.readouterr().err


def test_desired_roles_from_a_validated_state() -> None:
    from reconciler.desired.tree import RepoTree
    from reconciler.desired.validate import load_state
    from reconciler.models import Role
    from reconciler.swarm.membership import desired_roles
    from tests.fixtures.gitrepo import MINIMAL_STATE

    files = {
        k: v.encode() if isinstance(v, str) else v
        for k, v in MINIMAL_STATE.items()
        if v is not None
    }
    files["state/nodes/node1.yaml"] = b"role: manager\n"
    files["state/nodes/node2.yaml"] = b"role: worker\n"
    files["state/nodes/node3.yaml"] = b"labels: {a: b}\n"  # role from the node's facts
    state = load_state(RepoTree(files))
    assert desired_roles(state) == {"node1": Role.MANAGER, "node2": Role.WORKER, "node3": None}
