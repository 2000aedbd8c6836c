"""N agents against one etcd and one git remote: how fast does a publish reach every node?

Starts a real etcd, a real git remote, and N ``swarmkeeper agent`` processes with the dry
actuator (fifty systemd managers do not fit two cores; the engine runs exactly as in
production, only systemd's calls are recorded instead of executed). It does so once per
source — ``git`` (every node fetches the commit) and ``artifact`` (every node reads the
revision's artifact from etcd) — then publishes revisions and prints, side by side:

- publish-to-all-converged latency, p50 and p95 over the revisions;
- git processes the agents started per node per revision (counted by a ``git`` shim put
  first on their PATH: the server side of a fetch is not included) and git fetches;
- etcd requests per revision (counted by etcd itself, all clients) and per agent;
- CPU per agent per revision (the agent itself, and its child processes), etcd server CPU;
- idle CPU (% of one core) and RSS per agent, measured over a quiet window;
- raw floors: etcd delivering the publish to N bare watchers; N plain git mirrors fetching
  and reading one new commit all at once; N bare etcd clients, each reading the revision's
  artifact as soon as its watch sees the publish (the floor of the artifact path).

The machine's load average is printed with the figures: on a shared machine they are noisy.

Usage: python bench/converge.py [--agents 50] [--revisions 5] [--sources git,artifact]
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
from reconciler.revisions.artifact import Artifact  # noqa: E402
from reconciler.revisions.store import build, publish, read  # noqa: E402
from tests.fixtures.etcd import etcd_server, free_ports  # noqa: E402
from tests.fixtures.gitrepo import StateRepo, make_state_repo  # noqa: E402

PREFIX = "/swarmkeeper"
GIT_SHIM = """#!/bin/sh
echo x >> "$SK_GIT_COUNT"
exec {git} "$@"
"""
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


def etcd_unary(client_url: str) -> dict[str, float]:
    """Unary requests etcd has handled, by method (Range, Txn, Put, ...): no stream messages."""
    out: dict[str, float] = {}
    with urllib.request.urlopen(f"{client_url}/metrics", timeout=5) as r:
        for ln in r.read().decode().splitlines():
            if ln.startswith("grpc_server_handled_total") and 'grpc_type="unary"' in ln:
                method = ln.split('grpc_method="', 1)[1].split('"', 1)[0]
                out[method] = out.get(method, 0.0) + float(ln.rsplit(" ", 1)[1])
    return out


BENCH_UNARY: list[int] = []  # unary requests the bench itself sent while publishing


async def converge_on(
    etcd_ep: str, nodes: list[str], rev: str, *, limit: float, art: Artifact | None = None
) -> float:
    """Publish ``rev`` (with its artifact, if given: built beforehand, as a publisher does
    before it writes) and return the seconds until every node's status says it converged
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
        await publish(e, PREFIX, rev, art)
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
            BENCH_UNARY.append(e.request_count - 1)  # its watch is a stream, not unary
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


async def _read_on_event(c: Etcd, watch: object, rev: str, sha256: str) -> None:
    await anext(watch)  # type: ignore[call-overload]
    got = await read(c, PREFIX, rev)
    assert got is not None and got.sha256 == sha256


async def raw_artifact_baseline(etcd_ep: str, n: int, repo: StateRepo, rounds: int) -> list[float]:
    """The floor of the artifact path: n bare etcd clients (one channel each, in this
    process), each reading the revision's artifact as soon as its watch sees the publish."""
    clients = [await Etcd.connect([etcd_ep]) for _ in range(n)]
    key = f"{PREFIX}/desired/revision"
    try:
        lat = []
        for r in range(rounds):
            rev = repo.commit({"units/b.service": UNIT.format(rev=f"rawart{r}")}, f"rawart {r}")
            art = build(repo.work, rev)
            kv = await clients[0].get(key)
            at = kv.mod_revision if kv else 0
            gens = [c.watch_prefix(key, start_revision=at + 1) for c in clients]

            tasks = [asyncio.create_task(_read_on_event(c, g, rev, art.sha256))
                     for c, g in zip(clients, gens, strict=True)]  # fmt: skip
            await asyncio.sleep(0.2)  # every watch is established before the publish
            t0 = time.perf_counter()
            await publish(clients[0], PREFIX, rev, art)
            await asyncio.gather(*tasks)
            lat.append(time.perf_counter() - t0)
            for g in gens:
                await g.aclose()  # type: ignore[attr-defined]
        return lat
    finally:
        for c in clients:
            await c.close()


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


def pct(xs: list[float], q: float) -> float:
    return sorted(xs)[max(0, round(q * len(xs)) - 1)]


def agent_argv(node: str, etcd: str, repo: str, d: Path, port: int, source: str) -> list[str]:
    """``swarmkeeper`` arguments of one bench agent: dry actuator, its own dirs, no timers."""
    return ["--log-level", os.environ.get("LOG_LEVEL", "warning"), "agent",
            "--node", node, "--role", "worker", "--repo", repo, "--etcd", etcd,
            "--scope", "user", "--state-dir", str(d / "state"), "--root", str(d / "root"),
            "--unit-dir", str(d / "units"), "--actuator", "dry", "--listen", f"127.0.0.1:{port}",
            "--poll-interval", "3600", "--resync-interval", "3600", "--source",
            "git" if source == "git" else "auto"]  # fmt: skip


def run_source(source: str, a: argparse.Namespace, base: Path) -> dict[str, float]:
    """One fleet of agents on its own etcd and repo, rendering from ``source``."""
    base = base / source
    procs: list[subprocess.Popen[bytes]] = []
    shim = base / "bin"
    shim.mkdir(parents=True)
    real_git = shutil.which("git") or "git"
    (shim / "git").write_text(GIT_SHIM.format(git=real_git))
    (shim / "git").chmod(0o755)
    count = base / "git-count"
    count.touch()
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}", "SK_GIT_COUNT": str(count)}
    out: dict[str, float] = {}
    try:
        with etcd_server() as etcd:
            repo = make_state_repo(base / "repo", state(a.agents))
            ports = free_ports(a.agents)
            t_start = time.perf_counter()
            for i in range(a.agents):
                node = f"node-{i:03}"
                d = base / "nodes" / node
                d.mkdir(parents=True)
                args = [sys.executable, "-m", "reconciler",
                        *agent_argv(node, etcd.endpoint, repo.url, d, ports[i], source)]  # fmt: skip
                log = (d / "agent.log").open("wb")
                procs.append(subprocess.Popen(args, cwd=REPO, stdout=log, stderr=log, env=env))
            nodes = [f"node-{i:03}" for i in range(a.agents)]

            def art_of(rev: str) -> Artifact | None:
                return build(repo.work, rev) if source == "artifact" else None

            head = subprocess.run(["git", "-C", str(repo.work), "rev-parse", "HEAD"], capture_output=True,
                                  text=True, check=True).stdout.strip()  # fmt: skip
            asyncio.run(converge_on(etcd.endpoint, nodes, head, limit=300, art=art_of(head)))
            print(f"[{source}] {a.agents} agents started and converged on the first revision in "
                  f"{time.perf_counter() - t_start:.1f} s")  # fmt: skip
            time.sleep(2)

            cpu0 = sum(proc_stats(p.pid, children=True)[0] for p in procs)
            own0 = sum(proc_stats(p.pid)[0] for p in procs)
            fetch0 = sum(metric(p, "swarmkeeper_git_fetches_total") for p in ports)
            unary0, BENCH_UNARY[:] = etcd_unary(etcd.client_url), []
            gits0 = len(count.read_text().splitlines())
            rpc0 = etcd_rpcs(etcd.client_url)
            assert etcd.pid is not None
            etcd_cpu0 = proc_stats(etcd.pid)[0]
            lat = []
            load = os.getloadavg()[0]
            for r in range(1, a.revisions + 1):
                rev = repo.commit({"units/b.service": UNIT.format(rev=r)}, f"rev {r}")
                art = art_of(rev)
                lat.append(asyncio.run(converge_on(etcd.endpoint, nodes, rev, limit=120, art=art)))
                time.sleep(1.0)
            n = a.agents * a.revisions
            out["p50"], out["p95"] = statistics.median(lat) * 1000, pct(lat, 0.95) * 1000
            out["load"] = (load + os.getloadavg()[0]) / 2
            out["git_procs"] = (len(count.read_text().splitlines()) - gits0) / n
            out["fetches"] = (
                sum(metric(p, "swarmkeeper_git_fetches_total") for p in ports) - fetch0
            ) / n
            out["etcd_rpcs"] = (etcd_rpcs(etcd.client_url) - rpc0) / a.revisions
            # unary requests etcd handled, less the bench's own: what the agents asked per
            # revision (their watch and keepalive streams are long-lived, not per revision)
            unary = etcd_unary(etcd.client_url)
            by_method = {m: (v - unary0.get(m, 0.0)) / n for m, v in unary.items()}
            out["agent_rpcs"] = sum(by_method.values()) - sum(BENCH_UNARY) / n
            print(f"[{source}] unary requests per node per revision by method (the bench's own "
                  f"{sum(BENCH_UNARY) / n:.2f} included): "
                  + ", ".join(f"{m} {v:.2f}" for m, v in sorted(by_method.items()) if v))  # fmt: skip
            cpu_rev = (sum(proc_stats(p.pid, children=True)[0] for p in procs) - cpu0) / a.revisions
            own_rev = (sum(proc_stats(p.pid)[0] for p in procs) - own0) / a.revisions
            out["cpu"], out["cpu_own"] = cpu_rev / a.agents * 1000, own_rev / a.agents * 1000
            out["etcd_cpu"] = (proc_stats(etcd.pid)[0] - etcd_cpu0) / a.revisions * 1000

            # idle: nothing published, resync far away
            before = {p.pid: proc_stats(p.pid) for p in procs}
            time.sleep(a.idle_window)
            after = {p.pid: proc_stats(p.pid) for p in procs}
            cpu = [(after[pid][0] - before[pid][0]) / a.idle_window * 100 for pid in before]
            rss = [after[pid][1] / 2**20 for pid in after]
            out["idle_mean"], out["idle_max"] = statistics.mean(cpu), max(cpu)
            out["rss_mean"], out["rss_max"] = statistics.mean(rss), max(rss)

            _stop(procs)
            procs = []
            raw = asyncio.run(raw_watch_baseline(etcd.endpoint, a.agents, 20))
            out["raw_watch"] = statistics.median(raw) * 1000
            if source == "git":
                out["raw_floor"] = statistics.median(
                    asyncio.run(raw_git_baseline(repo, base, a.agents, 3))) * 1000  # fmt: skip
            else:
                out["raw_floor"] = statistics.median(
                    asyncio.run(raw_artifact_baseline(etcd.endpoint, a.agents, repo, 5))) * 1000  # fmt: skip
    finally:
        _stop(procs)
    return out


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


ROWS = [  # (label, key, format)
    ("publish -> all converged p50 (ms; target < 1000)", "p50", "{:.0f}"),
    ("publish -> all converged p95 (ms; target < 1500)", "p95", "{:.0f}"),
    ("git processes per node per revision (target 0)", "git_procs", "{:.2f}"),
    ("git fetches per node per revision", "fetches", "{:.2f}"),
    ("etcd unary requests per node per revision (<= 4)", "agent_rpcs", "{:.2f}"),
    ("etcd requests per revision, server-side, all clients", "etcd_rpcs", "{:.0f}"),
    ("CPU per agent per revision (ms)", "cpu", "{:.1f}"),
    ("  of which the agent process itself (ms)", "cpu_own", "{:.1f}"),
    ("etcd server CPU per revision (ms)", "etcd_cpu", "{:.0f}"),
    ("idle CPU per agent, mean (% of a core; < 0.5)", "idle_mean", "{:.2f}"),
    ("idle CPU per agent, max", "idle_max", "{:.2f}"),
    ("RSS per agent, mean (MiB; < 80 MB)", "rss_mean", "{:.0f}"),
    ("RSS per agent, max", "rss_max", "{:.0f}"),
    ("raw: one put to N bare watchers p50 (ms)", "raw_watch", "{:.1f}"),
    ("raw floor of the source, p50 (ms)", "raw_floor", "{:.0f}"),
    ("converge p50 / raw floor", "ratio", "{:.2f}"),
    ("load average (1 min) while timed", "load", "{:.2f}"),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=50)
    ap.add_argument("--revisions", type=int, default=5)
    ap.add_argument("--idle-window", type=float, default=20.0)
    ap.add_argument("--sources", default="git,artifact", help="comma-separated: git, artifact")
    a = ap.parse_args()
    sources = [x for x in a.sources.split(",") if x]
    if not sources or any(x not in ("git", "artifact") for x in sources):
        raise SystemExit("--sources: a comma-separated list of git, artifact")
    base = Path(tempfile.mkdtemp(prefix="sk-bench-"))
    try:
        res = {src: run_source(src, a, base) for src in sources}
    finally:
        if os.environ.get("KEEP") is None:
            shutil.rmtree(base, ignore_errors=True)
    for r in res.values():
        r["ratio"] = r["p50"] / r["raw_floor"] if r["raw_floor"] else 0.0
    print(f"\n{a.agents} agents, {a.revisions} revisions, {os.cpu_count()} cores "
          "(raw floor: git = N mirrors fetch+archive at once; artifact = N bare etcd clients "
          "read the artifact on the watch event)")  # fmt: skip
    print(f"{'':58}" + "".join(f"{src:>10}" for src in sources))
    for label, key, fmt in ROWS:
        print(f"{label:58}" + "".join(f"{fmt.format(res[src][key]):>10}" for src in sources))
    for src in sources:
        print(f"{src}: etcd requests per agent per revision "
              f"{res[src]['etcd_rpcs'] / a.agents:.1f} (server-side count: unary calls, watch and "
              "keepalive stream messages, the bench's own watch and publish)")  # fmt: skip


if __name__ == "__main__":
    main()
