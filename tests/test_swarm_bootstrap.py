"""Bootstrap with real engines: simultaneous agents form exactly one swarm, every time."""

from __future__ import annotations

import asyncio

import pytest

from reconciler.actuators.swarm import SwarmEngine
from reconciler.actuators.swarmnodes import LocalState
from reconciler.etcd.client import Etcd
from reconciler.models import Role
from reconciler.swarm import records as rec
from tests.fixtures.dockernet import DockerLab
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.swarmagents import SwarmAgents, local_states, one_swarm, reset_engines, wait_for

pytestmark = pytest.mark.slow

M, W = Role.MANAGER, Role.WORKER
ROLES = {"node1": M, "node2": M, "node3": M, "node4": W}
NODES = list(ROLES)


async def _formed(lab: DockerLab) -> bool:
    return await one_swarm(lab, NODES, managers=3) is not None


@pytest.mark.parametrize("round_", range(5))
async def test_simultaneous_start_forms_exactly_one_swarm(
    docker_lab: DockerLab, etcd_server: EtcdServer, round_: int
) -> None:
    await reset_engines(docker_lab, NODES)
    prefix = f"/boot{round_}"
    async with SwarmAgents(docker_lab, etcd_server.endpoint, prefix, ROLES) as agents:
        await agents.start(*NODES)
        await wait_for(lambda: _formed(docker_lab), 60, "3 managers + 1 worker in one swarm")
        leader = await one_swarm(docker_lab, NODES, managers=3)
        assert leader is not None
        states = await local_states(docker_lab, NODES)
        cluster_ids = {s.cluster_id for s in states.values() if s.cluster_id}  # type: ignore[attr-defined]
        assert len(cluster_ids) == 1
        assert etcd_server and agents.etcd is not None
        snap = await rec.read(agents.etcd, prefix)
        assert snap.cluster.cluster_id == next(iter(cluster_ids))
        assert snap.tokens is not None and snap.tokens.worker.startswith("SWMTKN-1-")
        # every node published its record with its engine's node id and role
        assert {n: r.id for n, r in snap.nodes.items()} == {
            n: states[n].node_id
            for n in NODES  # type: ignore[attr-defined]
        }
        assert {n: r.role for n, r in snap.nodes.items()} == {n: str(r) for n, r in ROLES.items()}


async def test_restarting_an_agent_on_a_member_changes_nothing(
    docker_lab: DockerLab, etcd_server: EtcdServer
) -> None:
    await reset_engines(docker_lab, NODES)
    async with SwarmAgents(docker_lab, etcd_server.endpoint, "/restart", ROLES) as agents:
        await agents.start(*NODES)
        await wait_for(lambda: _formed(docker_lab), 60, "swarm formed")
        assert agents.etcd is not None
        before_states = await local_states(docker_lab, NODES)
        before_kv = await agents.etcd.get_prefix("/restart/swarm/")
        for name in ("node1", "node4"):  # the bootstrapper and the worker
            await agents.restart(name)
        await wait_for(lambda: _settled(agents, ["node1", "node4"]), 30, "restarted passes")
        after_states = await local_states(docker_lab, NODES)
        after_kv = await agents.etcd.get_prefix("/restart/swarm/")
        assert after_states == before_states
        # nothing was rewritten: same keys at the same modification revisions
        assert [(kv.key, kv.mod_revision) for kv in after_kv[0]] == [
            (kv.key, kv.mod_revision) for kv in before_kv[0]
        ]
        assert all(agents.last(n).state == "member" for n in ("node1", "node4"))  # type: ignore[union-attr]


async def _settled(agents: SwarmAgents, names: list[str]) -> bool:
    return all((s := agents.last(n)) is not None and s.state == "member" for n in names)


async def test_member_of_another_swarm_is_reported_never_left(
    docker_lab: DockerLab, etcd_server: EtcdServer
) -> None:
    await reset_engines(docker_lab, NODES)
    n4 = docker_lab.node("node4")
    async with SwarmEngine(n4.docker_host) as e:  # someone made node4 a swarm of its own
        await e.init(n4.address)
        foreign = (await e.local()).cluster_id
    async with SwarmAgents(docker_lab, etcd_server.endpoint, "/foreign", ROLES) as agents:
        await agents.start(*NODES)
        managers = ["node1", "node2", "node3"]
        await wait_for(lambda: _one(docker_lab, managers), 60, "the 3 managers' swarm")
        await wait_for(lambda: _state_is(agents, "node4", "conflict"), 30, "node4 conflict")
        status = agents.last("node4")
        assert status is not None and foreign in status.error
        # still in its own swarm: nothing left it
        st = (await local_states(docker_lab, ["node4"]))["node4"]
        assert st.cluster_id == foreign  # type: ignore[attr-defined]
        assert st.state is LocalState.ACTIVE  # type: ignore[attr-defined]


async def _one(lab: DockerLab, names: list[str]) -> bool:
    return await one_swarm(lab, names, managers=len(names)) is not None


async def _state_is(agents: SwarmAgents, name: str, state: str) -> bool:
    s = agents.last(name)
    return s is not None and s.state == state


async def test_a_claimer_that_dies_before_init_is_replaced(
    docker_lab: DockerLab, etcd_server: EtcdServer
) -> None:
    """The claim is bound to the claimer's lease: when that lease dies the watchers see the
    key vanish and one of them claims and initialises instead."""
    await reset_engines(docker_lab, NODES)
    async with SwarmAgents(docker_lab, etcd_server.endpoint, "/ghost", ROLES) as agents:
        assert agents.etcd is not None
        ghost = await Etcd.connect([etcd_server.endpoint])
        lease = await ghost.lease(2)
        assert await ghost.create_if_absent(
            "/ghost/swarm/cluster", rec.dumps({"phase": "claimed", "by": "ghost"}), lease=lease
        )
        await agents.start(*NODES)
        await asyncio.sleep(1.0)  # the agents are waiting on the ghost's claim meanwhile
        states = await local_states(docker_lab, NODES)
        assert all(s.state is LocalState.INACTIVE for s in states.values())  # type: ignore[attr-defined]
        await ghost.close()  # the ghost "dies": keepalives stop, the lease expires in ~2 s
        await wait_for(lambda: _formed(docker_lab), 60, "swarm formed after the ghost's lease")
        snap = await rec.read(agents.etcd, "/ghost")
        assert snap.cluster.claimed_by in ("node1", "node2", "node3")
