"""N agents against one etcd and one git remote: how fast does a publish reach every node?

Starts a real etcd, a real git remote, and N ``swarmkeeper agent`` processes with the dry
actuator (fifty systemd managers do not fit two cores; the engine runs exactly as in
production, only systemd's calls are recorded instead of executed). Then it publishes
revisions and prints:

- publish-to-all-converged latency, p50 and p95 over the revisions;
- git fetches per node per revision (from each agent's /metrics);
- etcd requests per revision (counted by etcd itself, all clients) and per agent;
- idle CPU (% of one core) and RSS per agent, measured over a quiet window;
- two raw baselines and the ratios: the time etcd takes to deliver the same publish to N
  bare watchers in this process, and the time N plain git mirrors take to fetch and read
  one new commit all at once (on two shared cores, the floor for any agent design).

Usage: python bench/converge.py [--agents 50] [--revisions 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from reconciler.etcd.client import Etcd, Resynced  # noqa: E402
from tests.fixtures.etcd import etcd_server, free_ports  # noqa: E402
from tests.fixtures.gitrepo import StateRepo, make_state_repo  # noqa: E402

PREFIX = "/swarmkeeper"
UNIT = "[Service]\nExecStart=/bin/sleep infinity\nEnvironment=REV={rev}\n"


def state(n: int) -> dict[str, str | bytes | None]:
    files: dict[str, str | bytes | None] = {
        # every worker may update at once: the benchmark measures propagation, not pacing
        "state/cluster.yaml": f"name: bench\nmanagers: 1\nrollout: {{max_unavailable: {n}}}\n",
        "state/roles/manager.yaml": "units: [a.service, b.service]\n",
        "state/roles/worker.yaml": "units: [a.service, b.service]\n",
        "units/a.service": UNIT.format(rev=0),
        "units/b.service": UNIT.format(rev=0),
        "state/nodes/node-000.yaml": "role: manager\n",
    }
    return files


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def etcd_rpcs(client_url: str) -> float:
    """Every gRPC request the etcd server handled or received on a stream."""
    with urllib.request.urlopen(f"{client_url}/metrics", timeout=5) as r:
        total = 0.0
        for line in r.read().decode().splitlines():
            if line.startswith(("grpc_server_handled_total", "grpc_server_msg_received_total")):
                total += float(line.rsplit(" ", 1)[1])
        return total


async def converge_on(etcd_ep: str, nodes: list[str], rev: str, *, limit: float) -> float:
    """Publish ``rev`` and return the seconds until every node's status says it converged
    on it. One connection and one watch: polling etcd from here would steal the very CPU
    the agents are being timed on."""
    async with await Etcd.connect([etcd_ep]) as e:
        kvs, at = await e.get_prefix(f"{PREFIX}/nodes/")
        done: set[str] = set()

        def absorb(key: bytes, value: bytes) -> None:
            if key.endswith(b"/status"):
                st = json.loads(value)
                name = key.decode().split("/")[-2]
                if st.get("revision") == rev and st.get("state") == "converged":
                    done.add(name)
                else:
                    done.discard(name)

        for kv in kvs:
            absorb(kv.key, kv.value)
        watch = e.watch_prefix(f"{PREFIX}/nodes/", start_revision=at + 1)
        t0 = time.perf_counter()
        await e.put(f"{PREFIX}/desired/revision", rev)
        try:
            while not done.issuperset(nodes):
                item = await asyncio.wait_for(anext(watch), limit - (time.perf_counter() - t0))
                if isinstance(item, Resynced):
                    done.clear()
                    for kv in item.kvs:
                        absorb(kv.key, kv.value)
                elif item.kind == "put":
                    absorb(item.kv.key, item.kv.value)
        except TimeoutError:
            raise SystemExit(
                f"revision {rev[:12]} did not converge in {limit:.0f} s "
                f"({len(done)}/{len(nodes)} nodes)"
            ) from None
        finally:
            await watch.aclose()  # type: ignore[attr-defined]
        return time.perf_counter() - t0


def proc_stats(pid: int, *, children: bool = False) -> tuple[float, int]:
    """(cpu seconds, rss bytes); with ``children``, plus its reaped children's CPU."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    if children:
        cpu += (int(fields[13]) + int(fields[14])) / ticks
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss


async def raw_watch_baseline(etcd_ep: str, n: int, rounds: int) -> list[float]:
    """Time from a put to its delivery at all of n bare watchers (one client, n streams)."""
    async with await Etcd.connect([etcd_ep]) as e:
        key = "/bench/raw/"
        _, rev = await e.get_prefix(key)
        gens = [e.watch_prefix(key, start_revision=rev + 1) for _ in range(n)]
        lat = []
        for i in range(rounds):
            t0 = time.perf_counter()
            await e.put(key + "x", str(i))
            await asyncio.gather(*(anext(g) for g in gens))
            lat.append(time.perf_counter() - t0)
        for g in gens:
            await g.aclose()  # type: ignore[attr-defined]
        return lat


async def raw_git_baseline(repo: StateRepo, base: Path, n: int, rounds: int) -> list[float]:
    """The floor no agent can beat here: n bare mirrors, all at once, each fetching one new
    commit and reading it with ``git archive``. Plain processes, no agent, no etcd."""
    mirrors = [base / "raw-git" / f"m{i}" for i in range(n)]

    async def git(*args: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            "git", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        if await proc.wait() != 0:
            raise SystemExit(f"raw baseline: git {args[2]} failed")

    async def one(m: Path, rev: str) -> None:
        await git("-C", str(m), "fetch", "-q", "--no-tags", "--no-write-fetch-head", repo.url,
                  "+refs/heads/*:refs/heads/*")  # fmt: skip
        await git("-C", str(m), "archive", "--format=tar", rev)

    for m in mirrors:
        await git("init", "-q", "--bare", str(m))
        await git("-C", str(m), "fetch", "-q", repo.url, "+refs/heads/*:refs/heads/*")
    lat = []
    for r in range(rounds):
        rev = repo.commit({"units/b.service": UNIT.format(rev=f"raw{r}")}, f"raw {r}")
        t0 = time.perf_counter()
        await asyncio.gather(*(one(m, rev) for m in mirrors))
        lat.append(time.perf_counter() - t0)
    return lat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=50)
    ap.add_argument("--revisions", type=int, default=5)
    ap.add_argument("--idle-window", type=float, default=20.0)
    a = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="sk-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with etcd_server() as etcd:
            repo = make_state_repo(base / "repo", state(a.agents))
            ports = free_ports(a.agents)
            t_start = time.perf_counter()
            for i in range(a.agents):
                node = f"node-{i:03}"
                d = base / "nodes" / node
                d.mkdir(parents=True)
                args = [sys.executable, "-m", "reconciler", "--log-level", os.environ.get("LOG_LEVEL", "warning"), "agent",
                        "--node", node, "--role", "worker", "--repo", repo.url, "--etcd", etcd.endpoint,
                        "--scope", "user", "--state-dir", str(d / "state"), "--root", str(d / "root"),
                        "--unit-dir", str(d / "units"), "--actuator", "dry", "--listen", f"127.0.0.1:{ports[i]}",
                        "--poll-interval", "3600", "--resync-interval", "3600"]  # fmt: skip
                log = (d / "agent.log").open("wb")
                procs.append(subprocess.Popen(args, cwd=REPO, stdout=log, stderr=log))
            nodes = [f"node-{i:03}" for i in range(a.agents)]

            head = subprocess.run(["git", "-C", str(repo.work), "rev-parse", "HEAD"], capture_output=True,
                                  text=True, check=True).stdout.strip()  # fmt: skip
            asyncio.run(converge_on(etcd.endpoint, nodes, head, limit=300))
            print(
                f"{a.agents} agents started and converged on the first revision in {time.perf_counter() - t_start:.1f} s"
            )
            time.sleep(2)

            cpu0 = sum(proc_stats(p.pid, children=True)[0] for p in procs)
            own0 = sum(proc_stats(p.pid)[0] for p in procs)
            fetch0 = sum(metric(p, "swarmkeeper_git_fetches_total") for p in ports)
            rpc0 = etcd_rpcs(etcd.client_url)
            assert etcd.pid is not None
            etcd_cpu0 = proc_stats(etcd.pid)[0]
            lat = []
            for r in range(1, a.revisions + 1):
                rev = repo.commit({"units/b.service": UNIT.format(rev=r)}, f"rev {r}")
                lat.append(asyncio.run(converge_on(etcd.endpoint, nodes, rev, limit=120)))
                time.sleep(1.0)
            fetches = sum(metric(p, "swarmkeeper_git_fetches_total") for p in ports) - fetch0
            rpcs = etcd_rpcs(etcd.client_url) - rpc0
            # CPU the agents (and the git processes they spawn: children are reaped, so
            # counted in cutime/cstime) spent per revision: on 2 shared cores this, not any
            # waiting, bounds how fast 50 agents can all converge
            cpu_rev = (sum(proc_stats(p.pid, children=True)[0] for p in procs) - cpu0) / a.revisions
            own_rev = (sum(proc_stats(p.pid)[0] for p in procs) - own0) / a.revisions
            etcd_cpu_rev = (proc_stats(etcd.pid)[0] - etcd_cpu0) / a.revisions

            # idle: nothing published, resync far away
            before = {p.pid: proc_stats(p.pid) for p in procs}
            time.sleep(a.idle_window)
            after = {p.pid: proc_stats(p.pid) for p in procs}
            cpu = [(after[pid][0] - before[pid][0]) / a.idle_window * 100 for pid in before]
            rss = [after[pid][1] / 2**20 for pid in after]

            raw = asyncio.run(raw_watch_baseline(etcd.endpoint, a.agents, 20))
            raw_git = asyncio.run(raw_git_baseline(repo, base, a.agents, 3))
            p50 = statistics.median(lat)
            p95 = sorted(lat)[max(0, round(0.95 * len(lat)) - 1)]
            print(f"publish -> all {a.agents} converged: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms "
                  f"over {len(lat)} revisions (target p50 < 1000 ms)")  # fmt: skip
            print(
                f"git fetches per node per revision: {fetches / (a.agents * a.revisions):.2f} (target 1.00)"
            )
            print(f"CPU per agent per revision: {cpu_rev / a.agents * 1000:.0f} ms (the agent "
                  f"{own_rev / a.agents * 1000:.0f} ms + its git processes "
                  f"{(cpu_rev - own_rev) / a.agents * 1000:.0f} ms); "
                  f"all {a.agents} agents: {cpu_rev:.2f} CPU-s per revision on {os.cpu_count()} cores "
                  f"(a floor of {cpu_rev / (os.cpu_count() or 1) * 1000:.0f} ms here; on separate machines "
                  f"each node pays only its own share)")  # fmt: skip
            print(f"etcd requests per revision (server-side, all clients): {rpcs / a.revisions:.0f} "
                  f"= {rpcs / a.revisions / a.agents:.1f} per agent; etcd server CPU "
                  f"{etcd_cpu_rev * 1000:.0f} ms per revision")  # fmt: skip
            print(f"idle CPU per agent: mean {statistics.mean(cpu):.2f}% max {max(cpu):.2f}% of one core "
                  f"(target < 0.5%)")  # fmt: skip
            print(
                f"RSS per agent: mean {statistics.mean(rss):.0f} MiB max {max(rss):.0f} MiB (target < 80 MB)"
            )
            rp50 = statistics.median(raw)
            print(f"raw baseline: etcd delivers one put to {a.agents} bare watchers in p50 {rp50 * 1000:.1f} ms; "
                  f"converge/raw ratio {p50 / rp50:.0f}x")  # fmt: skip
            gp50 = statistics.median(raw_git)
            print(f"raw git floor: {a.agents} mirrors fetch and archive one new commit, all at once, "
                  f"in p50 {gp50 * 1000:.0f} ms; converge/raw-git ratio {p50 / gp50:.2f}x")  # fmt: skip
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        if os.environ.get("KEEP") is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
