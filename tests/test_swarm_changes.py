"""Membership changes with real engines: promote/demote, leave, partition, token rotation."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from reconciler.actuators.swarm import API_VERSION, SwarmEngine, TokenRefused
from reconciler.actuators.swarmnodes import LocalState
from reconciler.commands.drain import drain
from reconciler.models import Role
from reconciler.swarm import records as rec
from reconciler.swarm.membership import Membership
from reconciler.swarm.plan import ClusterRecord, LocalView, Phase, Step, local_action
from tests.clihelp import check_schema, cli
from tests.fixtures.dockernet import DockerLab
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.swarmagents import (
    FAST,
    SwarmAgents,
    local_states,
    node_list,
    one_swarm,
    reset_engines,
    wait_for,
)

pytestmark = pytest.mark.slow

M, W = Role.MANAGER, Role.WORKER
ROLES = {"node1": M, "node2": M, "node3": M, "node4": W}
NODES = list(ROLES)


async def _form(agents: SwarmAgents, lab: DockerLab, names: list[str], managers: int) -> None:
    await agents.start(*names)
    await wait_for(lambda: _one(lab, names, managers), 60, f"{names} in one swarm")


async def _one(lab: DockerLab, names: list[str], managers: int) -> bool:
    return await one_swarm(lab, names, managers) is not None


async def _role_is(lab: DockerLab, name: str, role: Role) -> bool:
    local = (await local_states(lab, [name]))[name]
    ctl = local.control_available  # type: ignore[attr-defined]
    if ctl is not (role is Role.MANAGER):
        return False
    nodes = await node_list(lab, "node1")
    me = next(n for n in nodes if n.id == local.node_id)  # type: ignore[attr-defined]
    if role is Role.MANAGER:
        return me.role is Role.MANAGER and me.reachability == "reachable"
    return me.role is Role.WORKER and not me.reachability


async def test_promote_then_demote_in_state(docker_lab: DockerLab, etcd_server: EtcdServer) -> None:
    await reset_engines(docker_lab, NODES)
    async with SwarmAgents(docker_lab, etcd_server.endpoint, "/roles", ROLES, managers=5) as agents:
        await _form(agents, docker_lab, NODES, 3)
        agents.set_roles({**ROLES, "node4": M})
        await wait_for(lambda: _role_is(docker_lab, "node4", M), 40, "node4 a reachable manager")
        await wait_for(lambda: _one(docker_lab, NODES, 4), 20, "4 reachable managers")
        agents.set_roles({**ROLES, "node2": W})  # node4 back to worker too (state as before)
        await wait_for(lambda: _role_is(docker_lab, "node4", W), 40, "node4 demoted")
        await wait_for(lambda: _role_is(docker_lab, "node2", W), 40, "node2 demoted")
        await wait_for(lambda: _one(docker_lab, NODES, 2), 20, "2 reachable managers")
        assert agents.etcd is not None
        etcd = agents.etcd
        want = {f"{docker_lab.node(n).address}:2377" for n in ("node1", "node3")}

        async def published() -> bool:  # the leader republishes right after its own view
            return set((await rec.read(etcd, "/roles")).cluster.manager_addrs) == want

        await wait_for(published, 10, "the manager list in etcd", agents=agents)


async def test_never_more_managers_than_cluster_allows(
    docker_lab: DockerLab, etcd_server: EtcdServer
) -> None:
    await reset_engines(docker_lab, NODES)
    async with SwarmAgents(docker_lab, etcd_server.endpoint, "/limit", ROLES, managers=3) as agents:
        await _form(agents, docker_lab, NODES, 3)
        agents.set_roles({**ROLES, "node4": M})  # a 4th manager where cluster.yaml says 3
        await wait_for(lambda: _settled(agents, ["node4"], "changing-role"), 20, "node4 pass")
        nodes = await node_list(docker_lab, "node1")
        assert sum(n.role is Role.MANAGER for n in nodes) == 3


async def _settled(agents: SwarmAgents, names: list[str], state: str) -> bool:
    return all((s := agents.last(n)) is not None and s.state == state for n in names)


@pytest.mark.parametrize("how", ["state", "drain"])
async def test_node_removed_leaves_and_disappears(
    docker_lab: DockerLab, etcd_server: EtcdServer, how: str
) -> None:
    await reset_engines(docker_lab, NODES)
    prefix = f"/leave{how}"
    async with SwarmAgents(docker_lab, etcd_server.endpoint, prefix, ROLES) as agents:
        await _form(agents, docker_lab, NODES, 3)
        gone = (await local_states(docker_lab, ["node4"]))["node4"].node_id  # type: ignore[attr-defined]
        if how == "state":
            agents.set_roles({k: v for k, v in ROLES.items() if k != "node4"})
        else:
            assert agents.etcd is not None
            assert await drain(agents.etcd, prefix, "node4")

        assert agents.etcd is not None
        etcd = agents.etcd

        async def left() -> bool:
            st = (await local_states(docker_lab, ["node4"]))["node4"]
            ids = {n.id for n in await node_list(docker_lab, "node1")}
            # the leader deletes the node's record right after removing it
            gone_from_etcd = "node4" not in (await rec.read(etcd, prefix)).nodes
            return st.state is LocalState.INACTIVE and gone not in ids and gone_from_etcd  # type: ignore[attr-defined]

        await wait_for(left, 40, "node4 left, removed from node ls and from etcd", agents=agents)
        assert await one_swarm(docker_lab, ["node1", "node2", "node3"], 3) is not None


async def test_partitioned_manager_during_bootstrap_joins_after_heal(
    docker_lab: DockerLab, etcd_server: EtcdServer
) -> None:
    await reset_engines(docker_lab, NODES)
    n3 = docker_lab.node("node3")
    docker_lab.partition(n3)
    try:
        async with SwarmAgents(docker_lab, etcd_server.endpoint, "/part", ROLES) as agents:
            await agents.start(*NODES)
            assert agents.etcd is not None
            etcd = agents.etcd

            async def ready() -> bool:
                return (await rec.read(etcd, "/part")).cluster.cluster_id != ""

            await wait_for(ready, 30, "the swarm record")
            cid = (await rec.read(etcd, "/part")).cluster.cluster_id
            # Whoever won the claim (node3 itself, or one of the others), while the link is
            # down no engine may hold a swarm other than the published one.
            for _ in range(15):
                states = await local_states(docker_lab, NODES)
                assert {s.cluster_id for s in states.values() if s.cluster_id} <= {cid}  # type: ignore[attr-defined]
                await asyncio.sleep(0.2)
            docker_lab.heal(n3)
            await wait_for(lambda: _one(docker_lab, NODES, 3), 90, "all four joined after heal")
            states = await local_states(docker_lab, NODES)
            assert {s.cluster_id for s in states.values() if s.cluster_id} == {cid}  # type: ignore[attr-defined]
    finally:
        docker_lab.heal(n3)


async def test_token_rotation(docker_lab: DockerLab, etcd_server: EtcdServer) -> None:
    spare = docker_lab.node("node5")
    await asyncio.to_thread(docker_lab.start_node, spare)
    try:
        await reset_engines(docker_lab, [*NODES, "node5"])
        roles = {**ROLES, "node5": W}
        managers = ["node1", "node2", "node3"]
        async with SwarmAgents(docker_lab, etcd_server.endpoint, "/rot", roles) as agents:
            await _form(agents, docker_lab, managers, 3)
            assert agents.etcd is not None
            stale = await rec.read(agents.etcd, "/rot")
            old = stale.tokens
            assert old is not None
            # as an operator runs it: the CLI, whose JSON names what was rotated, never a token
            r = await asyncio.to_thread(
                cli, "swarm", "rotate-tokens", "--docker", docker_lab.node("node1").docker_host,
                "--prefix", "/rot", "--json", ep=etcd_server.endpoint)  # fmt: skip
            assert r.returncode == 0, r.stderr
            doc = check_schema(r.stdout, "TokenRotation")
            assert doc["rotated"] == ["worker", "manager"] and "SWMTKN" not in r.stdout
            new = (await rec.read(agents.etcd, "/rot")).tokens
            assert new is not None
            assert new.worker != old.worker and new.manager != old.manager

            async def refused() -> None:  # the swarm refuses the old token outright
                async with SwarmEngine(spare.docker_host) as e:
                    with pytest.raises(TokenRefused):
                        await e.join(list(stale.cluster.manager_addrs), old.worker, spare.address)
                    assert (await e.local()).state is LocalState.INACTIVE

            async def stale_join() -> None:  # read before the rotation: re-read and retry
                n4 = docker_lab.node("node4")
                async with SwarmEngine(n4.docker_host) as e:
                    m = Membership(agents.etcd, e, "node4", n4.address, "/rot", FAST)  # type: ignore[arg-type]
                    await m.join(stale, W)
                    assert (await e.local()).state is LocalState.ACTIVE

            await asyncio.gather(refused(), stale_join())
            # new nodes still join, with the republished token
            await agents.start("node4", "node5")
            await wait_for(
                lambda: _one(docker_lab, [*NODES, "node5"], 3), 40, "node4 and node5 joined"
            )
    finally:
        await asyncio.to_thread(docker_lab.stop_nodes, [spare])


async def _autolock(docker_host: str) -> None:
    """Turn manager autolock on as an operator would (``docker swarm update --autolock``):
    the agent never does, so the engine wrapper has no call for it."""
    connector = aiohttp.UnixConnector(path=docker_host.removeprefix("unix://"))
    async with aiohttp.ClientSession(connector=connector) as s:
        base = f"http://localhost/{API_VERSION}/swarm"
        async with s.get(base) as r:
            sw = await r.json()
        spec = {**sw["Spec"]}
        spec["EncryptionConfig"] = {
            **(spec.get("EncryptionConfig") or {}),
            "AutoLockManagers": True,
        }
        params = {"version": str(sw["Version"]["Index"])}
        async with s.post(f"{base}/update", params=params, json=spec) as r:
            assert r.status == 200, await r.text()


async def test_autolock_unlock_key_and_locked_engine(docker_lab: DockerLab) -> None:
    n = docker_lab.node("node1")
    await reset_engines(docker_lab, ["node1"])
    async with SwarmEngine(n.docker_host) as e:
        await e.init(n.address)
        assert await e.unlock_key() == ""
        await _autolock(n.docker_host)
        key = await e.unlock_key()
        assert key.startswith("SWMKEY-1-")
    await asyncio.to_thread(docker_lab.stop_nodes, [n])
    await asyncio.to_thread(docker_lab.start_node, n)
    async with SwarmEngine(n.docker_host) as e:
        local = await e.local()
        assert local.state is LocalState.LOCKED
        # membership reports it and does nothing else
        act = local_action(M, LocalView(local.state.value), ClusterRecord(Phase.READY))
        assert act.step is Step.BROKEN and "unlock" in act.reason
        await e.unlock(key)
        assert (await e.local()).state is LocalState.ACTIVE
