"""Time from the agents' start to a complete 3-manager swarm, on real engines.

Three dockerd engines in their own network namespaces (tests/fixtures/dockernet), one etcd.
Each round: fresh engines without swarm state, then three membership agents started at the
same instant (race for the etcd claim, init, publish, watch, join); the clock stops when the
engines themselves report one swarm with three reachable managers.

In the same run, a raw baseline on the same engines: ``swarm init`` on node1, then the two
manager joins issued directly with the token in hand (what a perfect script that already
knows who goes first would do). Prints the median of each and the ratio.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler import log
from reconciler.actuators.swarm import SwarmEngine
from reconciler.models import Role
from tests.fixtures.dockernet import DockerLab
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.swarmagents import SwarmAgents, one_swarm, reset_engines, wait_for

ROUNDS = 5
NAMES = ["node1", "node2", "node3"]
ROLES = {n: Role.MANAGER for n in NAMES}


async def formed(lab: DockerLab) -> None:
    async def done() -> bool:
        return await one_swarm(lab, NAMES, 3) is not None

    await wait_for(done, 120, "a 3-manager swarm")


async def agents_round(lab: DockerLab, srv: EtcdServer, i: int) -> float:
    await reset_engines(lab, NAMES)
    async with SwarmAgents(lab, srv.endpoint, f"/bench{i}", ROLES) as agents:
        t0 = time.perf_counter()
        await agents.start(*NAMES)
        await formed(lab)
        return time.perf_counter() - t0


async def raw_round(lab: DockerLab) -> float:
    await reset_engines(lab, NAMES)
    n1, n2, n3 = (lab.node(n) for n in NAMES)
    async with (
        SwarmEngine(n1.docker_host) as e1,
        SwarmEngine(n2.docker_host) as e2,
        SwarmEngine(n3.docker_host) as e3,
    ):
        t0 = time.perf_counter()
        await e1.init(n1.address, heartbeat=1.0)
        token = (await e1.tokens()).manager
        remote = [f"{n1.address}:2377"]
        await asyncio.gather(e2.join(remote, token, n2.address), e3.join(remote, token, n3.address))
        await formed(lab)
        return time.perf_counter() - t0


async def main(lab: DockerLab, srv: EtcdServer) -> None:
    agents, raw = [], []
    for i in range(ROUNDS):
        raw.append(await raw_round(lab))
        agents.append(await agents_round(lab, srv, i))
    a, r = statistics.median(agents), statistics.median(raw)
    print(f"rounds: {ROUNDS} (3 managers, engines fresh each round)")
    print(
        f"agents start -> complete swarm: median {a:.2f} s "
        f"(min {min(agents):.2f}, max {max(agents):.2f})"
    )
    print(
        f"raw init + 2 joins baseline:    median {r:.2f} s (min {min(raw):.2f}, max {max(raw):.2f})"
    )
    print(f"ratio agents/raw: {a / r:.2f}x")


if __name__ == "__main__":
    log.configure("warning")
    t = time.perf_counter()
    with DockerLab(3) as lab, EtcdServer() as srv:
        print(f"lab: 3 engines up in {time.perf_counter() - t:.2f} s")
        asyncio.run(main(lab, srv))
