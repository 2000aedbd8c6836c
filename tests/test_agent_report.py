"""The end of a pass, in process, against a real etcd: the node's final status and the
release of its rollout slot are one transaction, and a release that fails (etcd down) is
not forgotten: the slot would otherwise block the rollout until the node's lease ends."""

from __future__ import annotations

import asyncio
from pathlib import Path

from reconciler import keys
from reconciler.actuators.dry import DrySystemd
from reconciler.agent.agent import Agent, AgentSettings
from reconciler.agent.passes import PassResult
from reconciler.apply.engine import Engine
from reconciler.etcd.client import Etcd
from reconciler.models import Role
from reconciler.status import NodeState, NodeStatus
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.gitrepo import StateRepo

P = "/sk"


def _agent(etcd: Etcd, ep: str, repo: StateRepo, tmp: Path) -> Agent:
    settings = AgentSettings(node="w1", role=Role.WORKER, address="127.0.0.1", repo=repo.url,
                             branch="main", state_dir=tmp / "state", etcd=(ep,), prefix=P)  # fmt: skip
    engine = Engine(DrySystemd(tmp / "units"), tmp / "state", root=tmp / "root",
                    unit_dir=tmp / "units")  # fmt: skip
    return Agent(settings, etcd, engine)


def _status(state: NodeState, revision: str, rollout: str = "") -> NodeStatus:
    return NodeStatus(node="w1", role="worker", state=state, revision=revision, desired="new",
                      rollout=rollout)  # fmt: skip


async def _read_status(e: Etcd) -> NodeStatus:
    kv = await e.get(keys.node_status(P, "w1"))
    assert kv is not None
    return NodeStatus.from_json(kv.value)


async def test_unreleased_slot_goes_with_the_next_status(
    etcd_server: EtcdServer, state_repo: StateRepo, tmp_path: Path
) -> None:
    e = await Etcd.connect([etcd_server.endpoint], timeout=1.0, retry_for=1.0)
    try:
        agent = _agent(e, etcd_server.endpoint, state_repo, tmp_path)
        agent.lease = await e.lease(30)
        await e.put(keys.desired_revision(P), "new")
        slot = await agent.reporter.acquire("new", "old", Role.WORKER, 1,
                                    _status(NodeState.APPLYING, "old"),
                                    _status(NodeState.CONVERGED, "old", "waiting"))  # fmt: skip
        assert slot is not None and slot.key == keys.rollout_slot(P, Role.WORKER, 0)
        assert (await _read_status(e)).state is NodeState.APPLYING  # written with the slot

        await asyncio.to_thread(etcd_server.stop)
        res = PassResult(_status(NodeState.CONVERGED, "new"), new_revision=True, slot=slot)
        _, written = await agent.reporter.report(res)
        assert not written  # status unwritten: the worker retries the pass with backoff
        await asyncio.to_thread(etcd_server.start)

        # the retried pass finds the node converged and takes no slot of its own: the
        # final status still frees the slot left over from the failed release
        await agent.reporter.report(PassResult(_status(NodeState.CONVERGED, "new")))
        assert await e.get(slot.key) is None
        st = await _read_status(e)
        assert (st.state, st.revision) == (NodeState.CONVERGED, "new")

        # and a later report does not touch a slot another node has taken since
        await e.put(slot.key, '{"node": "w2"}')
        await agent.reporter.report(PassResult(_status(NodeState.CONVERGED, "new")))
        kv = await e.get(slot.key)
        assert kv is not None and kv.value == b'{"node": "w2"}'
    finally:
        await e.close()
