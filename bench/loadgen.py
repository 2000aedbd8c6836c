"""Scale study: N light clients doing what N agents do to etcd per revision, no agents.

Starts one real etcd and P ``etcd grpc-proxy`` processes on loopback, then W worker
processes that each play N/W nodes over a few gRPC channels. Every node, like an agent:

- holds a lease kept alive every 10/3 s over a LeaseKeepAlive stream (``--leases``);
- watches ``desired/revision`` through its proxy (node i uses proxy i mod P);
- on the event: reads the revision's artifact with one range request (linearizable, or
  ``--serializable`` so a proxy may answer from its cache), then does the rollout gate's
  snapshot read, takes a rollout slot with its ``applying`` status (``--max-unavailable``
  slots; a node that finds none free waits on a watch of the slots prefix) and releases it
  with its ``converged`` status: a manager's requests. ``--shortcut`` plays a worker whose
  watches hold the rollout markers: it first tries up to eight slots in one transaction
  guarded by those keys (``reconciler.etcd.ops.first_absent``), and reads only if that fails.

Per revision it prints: the time from publish until all nodes saw the event, read the
artifact and wrote their final status (p50/p99/max over nodes); etcd server and proxy CPU;
requests handled by etcd. The clients share the machine's cores with etcd and the proxies,
so latencies are upper bounds: the CPU figures are what to compare. Every loop is bounded by
``--timeout`` seconds per revision.

Usage: python bench/loadgen.py --nodes 1000 [--workers 4] [--proxies 2] [--revisions 3]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
import zlib
from contextlib import ExitStack
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

P = "/lg"
DESIRED = f"{P}/desired/revision"
SLOTS = f"{P}/rollout/slots/worker/"


def _end(key: bytes) -> bytes:
    from aetcd.utils import prefix_range_end

    return bytes(prefix_range_end(key))


class Node:
    """One simulated agent: its channel's stubs and what it measured per revision."""

    def __init__(self, name: str, kv: Any, watch: Any, lease: Any) -> None:
        self.name, self.kv, self.watch_stub, self.lease_stub = name, kv, watch, lease
        self.times: dict[str, tuple[float, float, float] | None] = {}  # event, read, done
        self.errors: collections.Counter[str] = collections.Counter()

    async def run(
        self, a: argparse.Namespace, ready: asyncio.Event, stop: asyncio.Event,
        progress: asyncio.Event,
    ) -> None:  # fmt: skip
        from aetcd import rpc

        lease_id = 0
        if a.leases:
            lease_id = (await self._grant(rpc)).ID
        q: asyncio.Queue[Any] = asyncio.Queue()
        await q.put(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(key=DESIRED.encode())))

        async def reqs() -> Any:
            while True:
                yield await q.get()

        stream = self.watch_stub.Watch(reqs())
        keep = asyncio.create_task(self._keepalive(rpc, lease_id)) if lease_id else None
        try:
            async for resp in stream:
                if resp.created:
                    ready.set()
                for ev in resp.events:
                    rev = ev.kv.value.decode()
                    t_event = time.time()
                    try:
                        t_read = await self._read(rpc, rev, a.serializable)
                        if not a.reads_only and not (
                            a.shortcut
                            and await self._shortcut(rpc, rev, a.max_unavailable, lease_id)
                        ):
                            await self._pass(rpc, rev, a.max_unavailable, lease_id, a.timeout)
                        self.times[rev] = (t_event, t_read, time.time())
                    except Exception as e:  # counted and reported: a bench must finish its round
                        self.errors[_why(e)] += 1
                        self.times[rev] = None
                    progress.set()
                if stop.is_set():
                    break
        finally:
            if keep is not None:
                keep.cancel()
            stream.cancel()

    async def _grant(self, rpc: Any) -> Any:
        return await self.lease_stub.LeaseGrant(rpc.LeaseGrantRequest(TTL=10))

    async def _keepalive(self, rpc: Any, lease_id: int) -> None:
        async def pings() -> Any:
            while True:
                yield rpc.LeaseKeepAliveRequest(ID=lease_id)
                await asyncio.sleep(10 / 3)

        async for _ in self.lease_stub.LeaseKeepAlive(pings()):
            pass

    async def _read(self, rpc: Any, rev: str, serializable: bool) -> float:
        base = f"{P}/revisions/{rev}/".encode()
        resp = await self.kv.Range(rpc.RangeRequest(key=base, range_end=_end(base),
                                                    serializable=serializable))  # fmt: skip
        if not any(kv.key.endswith(b"/meta") for kv in resp.kvs):
            raise RuntimeError("no artifact")
        return time.time()

    async def _shortcut(self, rpc: Any, rev: str, slots: int, lease_id: int) -> bool:
        """The worker's first request, as the gate makes it: the first free of its first
        ``SLOTS_PER_TRY`` slots, guarded by the keys its watches hold; then the release."""
        from reconciler.etcd import ops
        from reconciler.rollout.gate import SLOTS_PER_TRY, slot_order

        tried = [f"{SLOTS}{i}" for i in slot_order(self.name, range(slots))[:SLOTS_PER_TRY]]
        status_key = f"{P}/nodes/{self.name}/status"
        applying = json.dumps({"node": self.name, "state": "applying", "revision": rev})
        guards = (ops.value_is(DESIRED, rev), ops.absent(f"{P}/rollout/halted"),
                  ops.absent(f"{P}/rollout/failed"))  # fmt: skip
        req = ops.first_absent(tried, self.name, lease_id, {status_key: applying}, guards)
        took = ops.created_key(tried, await self.kv.Txn(req))
        if took is None:
            return False
        done = json.dumps({"node": self.name, "state": "converged", "revision": rev})
        await self.kv.Txn(ops.put_and_release(status_key, done, took, self.name.encode()))
        return True

    async def _pass(self, rpc: Any, rev: str, slots: int, lease_id: int, limit: float) -> None:
        status_key = f"{P}/nodes/{self.name}/status".encode()
        gate = rpc.TxnRequest(success=[
            rpc.RequestOp(request_range=rpc.RangeRequest(key=DESIRED.encode())),
            rpc.RequestOp(request_range=rpc.RangeRequest(key=f"{P}/rollout/".encode(),
                                                         range_end=_end(f"{P}/rollout/".encode()))),
        ])  # fmt: skip
        applying = json.dumps({"node": self.name, "state": "applying", "revision": rev}).encode()
        done = json.dumps({"node": self.name, "state": "converged", "revision": rev}).encode()
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            snap = await self.kv.Txn(gate)
            taken = {kv.key for r in snap.responses for kv in r.response_range.kvs}
            free = [i for i in range(slots) if f"{SLOTS}{i}".encode() not in taken]
            k = zlib.crc32(self.name.encode()) % len(free) if free else 0
            for i in (*free[k:], *free[:k]):  # as the gate: start at a slot of its own
                slot = f"{SLOTS}{i}".encode()
                took = await self.kv.Txn(rpc.TxnRequest(
                    compare=[rpc.Compare(key=slot, target=rpc.Compare.CREATE,
                                         result=rpc.Compare.EQUAL, create_revision=0)],
                    success=[rpc.RequestOp(request_put=rpc.PutRequest(
                                 key=slot, value=self.name.encode(), lease=lease_id)),
                             rpc.RequestOp(request_put=rpc.PutRequest(key=status_key,
                                                                      value=applying))]))  # fmt: skip
                if took.succeeded:
                    await self.kv.Txn(rpc.TxnRequest(success=[
                        rpc.RequestOp(request_put=rpc.PutRequest(key=status_key, value=done)),
                        rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=slot)),
                    ]))  # fmt: skip
                    return
            await self._wait_slot(rpc, snap.header.revision, deadline)
        raise TimeoutError("no rollout slot in time")

    async def _wait_slot(self, rpc: Any, after: int, deadline: float) -> None:
        """Like the gate: wait for the next change under the slots prefix, then retry."""
        req = rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
            key=SLOTS.encode(), range_end=_end(SLOTS.encode()), start_revision=after + 1))  # fmt: skip

        async def reqs() -> Any:
            yield req
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))

        stream = self.watch_stub.Watch(reqs())
        try:
            async with asyncio.timeout(max(0.01, deadline - time.monotonic())):
                async for resp in stream:
                    if resp.events:
                        return
        except TimeoutError:
            return
        finally:
            stream.cancel()


def worker(names: list[str], endpoints: list[str], a: argparse.Namespace, conn: Connection) -> None:
    asyncio.run(_worker(names, endpoints, a, conn))


async def _worker(
    names: list[str], endpoints: list[str], a: argparse.Namespace, conn: Connection
) -> None:
    import grpc.aio  # type: ignore[import-untyped]
    from aetcd import rpc

    # a few channels per endpoint carry every node's streams (N sockets would not fit here)
    chans = {ep: [grpc.aio.insecure_channel(ep) for _ in range(a.channels)] for ep in endpoints}
    nodes = []
    for i, name in enumerate(names):
        ep = endpoints[int(name.rsplit("-", 1)[1]) % len(endpoints)]
        ch = chans[ep][i % a.channels]
        nodes.append(Node(name, rpc.KVStub(ch), rpc.WatchStub(ch), rpc.LeaseStub(ch)))
    stop, progress = asyncio.Event(), asyncio.Event()
    readies = [asyncio.Event() for _ in nodes]
    tasks = [asyncio.create_task(n.run(a, r, stop, progress))
             for n, r in zip(nodes, readies, strict=True)]  # fmt: skip
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), a.timeout)
    conn.send("ready")
    loop = asyncio.get_running_loop()
    while True:
        cmd = await loop.run_in_executor(None, conn.recv)
        if cmd == "stop":
            break
        rev, want_until = cmd  # report once every node is done with rev (or the deadline)
        while time.time() < want_until and not all(rev in n.times for n in nodes):
            progress.clear()
            try:
                await asyncio.wait_for(progress.wait(), want_until - time.time())
            except TimeoutError:
                break
        conn.send(
            (
                [n.times.get(rev) for n in nodes],
                sum((n.errors for n in nodes), collections.Counter()),
            )
        )
        for n in nodes:
            n.errors.clear()
    stop.set()
    for t in tasks:
        t.cancel()
    for lst in chans.values():
        for ch in lst:
            await ch.close()


def _why(e: BaseException) -> str:
    details = getattr(e, "details", None)
    return f"{type(e).__name__}: {details() if callable(details) else e}"[:120]


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _handled(client_url: str) -> tuple[float, float]:
    """(unary requests etcd handled, messages it received on streams) so far."""
    import urllib.request

    unary = stream = 0.0
    with urllib.request.urlopen(f"{client_url}/metrics", timeout=5) as r:
        for ln in r.read().decode().splitlines():
            if ln.startswith("grpc_server_handled_total") and 'grpc_type="unary"' in ln:
                unary += float(ln.rsplit(" ", 1)[1])
            elif ln.startswith("grpc_server_msg_received_total") and "stream" in ln:
                stream += float(ln.rsplit(" ", 1)[1])
    return unary, stream


def _q(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")


async def _publish(ep: str, rev: str, art: Any) -> None:
    from reconciler.etcd.client import Etcd
    from reconciler.revisions.store import publish

    async with await Etcd.connect([ep]) as e:
        await publish(e, P, rev, art)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=4, help="client processes")
    ap.add_argument("--channels", type=int, default=8, help="gRPC channels per worker and endpoint")
    ap.add_argument("--proxies", type=int, default=2, help="grpc-proxies (0: straight to etcd)")
    ap.add_argument("--revisions", type=int, default=3)
    ap.add_argument("--max-unavailable", type=int, default=0, help="worker slots (0: one per node)")
    ap.add_argument("--serializable", action="store_true", help="serializable artifact reads")
    ap.add_argument("--no-leases", dest="leases", action="store_false")
    ap.add_argument("--reads-only", action="store_true", help="no gate, slot or status writes")
    ap.add_argument(
        "--shortcut",
        action="store_true",
        help="workers take a slot first, guarded, and read only if that fails",
    )
    ap.add_argument("--artifact-kib", type=int, default=0, help="pad the artifact to ~this size")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per revision, at most")
    a = ap.parse_args()
    a.max_unavailable = a.max_unavailable or a.nodes

    from reconciler.revisions.store import build
    from tests.fixtures.etcd import etcd_proxy, etcd_server
    from tests.fixtures.gitrepo import make_state_repo

    sys.path.insert(0, str(REPO / "bench"))
    from converge import UNIT, state

    with ExitStack() as stack:
        etcd = stack.enter_context(etcd_server(extra_args=["--quota-backend-bytes", str(4 << 30)]))
        proxies = [stack.enter_context(etcd_proxy([etcd.endpoint])) for _ in range(a.proxies)]
        endpoints = [p.endpoint for p in proxies] or [etcd.endpoint]
        files = state(50)
        if a.artifact_kib:  # incompressible: the archive is about this big
            files["files/blob.bin"] = os.urandom(a.artifact_kib * 1024)
        repo = make_state_repo(Path(tempfile.mkdtemp(prefix="sk-loadgen-")) / "repo", files)
        names = [f"n-{i:05}" for i in range(a.nodes)]
        ctx = mp.get_context("spawn")
        pipes, procs = [], []
        for w in range(a.workers):
            parent, child = ctx.Pipe()
            pr = ctx.Process(target=worker, args=(names[w :: a.workers], endpoints, a, child))
            pr.start()
            pipes.append(parent)
            procs.append(pr)
        try:
            t_ready = time.perf_counter()
            for p in pipes:
                if not p.poll(a.timeout) or p.recv() != "ready":
                    raise SystemExit("a worker did not get its watches up in time")
            print(f"{a.nodes} nodes watching through {a.proxies} proxies "
                  f"(ready in {time.perf_counter() - t_ready:.1f} s); leases: {a.leases}; "
                  f"slots: {a.max_unavailable}; serializable reads: {a.serializable}; "
                  f"reads only: {a.reads_only}; worker shortcut: {a.shortcut}")  # fmt: skip
            time.sleep(2.0)
            idle0, t_idle = _cpu(etcd.pid or 0), time.time()
            time.sleep(5.0)
            idle = (_cpu(etcd.pid or 0) - idle0) / (time.time() - t_idle) * 100
            print(f"idle (leases kept alive): etcd {idle:.1f}% of a core")
            for r in range(a.revisions):
                rev = repo.commit({"units/b.service": UNIT.format(rev=f"lg{r}")}, f"lg {r}")
                art = build(repo.work, rev)
                cpu0 = _cpu(etcd.pid or 0)
                pcpu0 = sum(_cpu(p._proc.pid) for p in proxies if p._proc and p._proc.pid)
                h0 = _handled(etcd.client_url)
                t0 = time.time()
                asyncio.run(_publish(etcd.endpoint, rev, art))
                for p in pipes:
                    p.send((rev, t0 + a.timeout))
                times: list[Any] = []
                errors: collections.Counter[str] = collections.Counter()
                for p in pipes:
                    got, err = p.recv()
                    times += got
                    errors.update(err)
                done = [t for t in times if t is not None]
                ev = [t[0] - t0 for t in done]
                rd = [t[1] - t0 for t in done]
                fin = [t[2] - t0 for t in done]
                h1 = _handled(etcd.client_url)
                ecpu = (_cpu(etcd.pid or 0) - cpu0) * 1000
                pcpu = (
                    sum(_cpu(p._proc.pid) for p in proxies if p._proc and p._proc.pid) - pcpu0
                ) * 1000
                print(f"rev {r + 1}: {len(done)}/{a.nodes} done, {sum(errors.values())} errors | event p50 "
                      f"{_q(ev, .5):.0f} p99 {_q(ev, .99):.0f} max {_q(ev, 1):.0f} ms | artifact read "
                      f"p50 {_q(rd, .5):.0f} max {_q(rd, 1):.0f} ms | final status p50 {_q(fin, .5):.0f} "
                      f"max {_q(fin, 1):.0f} ms | etcd CPU {ecpu:.0f} ms, proxies {pcpu:.0f} ms | "
                      f"etcd unary requests {h1[0] - h0[0]:.0f}, stream messages {h1[1] - h0[1]:.0f}"
                      f" | load "
                      f"{os.getloadavg()[0]:.1f}")  # fmt: skip
                for why, k in errors.most_common(3):
                    print(f"    {k} x {why}")
                time.sleep(1.0)
            print(f"artifact: {len(art.payload)} bytes")
        finally:
            for p in pipes:
                p.send("stop")
            for pr in procs:
                pr.join(10)
                if pr.is_alive():
                    pr.kill()


if __name__ == "__main__":
    main()
