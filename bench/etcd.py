"""What our etcd wrapper costs over the raw aetcd client, on one real local etcd.

Per operation, medians over N sequential calls (same etcd, same run, alternating blocks so
machine noise hits both sides): put, get, create_if_absent (a txn), and watch delivery
latency (put -> event in a prefix watch). Also the number of RPCs the wrapper sent and the
lease keepalive traffic of one lease over a quiet window. Prints figures and ratios.

Usage: python bench/etcd.py [--n 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aetcd

from reconciler.etcd.client import Etcd, WatchEvent
from tests.fixtures.etcd import etcd_server


async def timed(n: int, op: Callable[[int], Awaitable[object]]) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        await op(i)
        out.append(time.perf_counter() - t)
    return out


async def watch_latency(
    n: int, put: Callable[[int], Awaitable[object]], events: asyncio.Queue[float]
) -> list[float]:
    lat = []
    for i in range(n):
        t = time.perf_counter()
        await put(i)
        got = await asyncio.wait_for(events.get(), 5)
        lat.append(got - t)
    return lat


def ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1000


async def main(endpoint: str, n: int) -> None:
    host, port = endpoint.split(":")
    raw = aetcd.Client(host=host, port=int(port))
    ours = await Etcd.connect([endpoint])
    results: dict[str, tuple[list[float], list[float]]] = {}

    async def both(
        name: str,
        raw_op: Callable[[int], Awaitable[object]],
        our_op: Callable[[int], Awaitable[object]],
    ) -> None:
        r: list[float] = []
        o: list[float] = []
        for _ in range(4):  # alternate blocks
            r += await timed(n // 4, raw_op)
            o += await timed(n // 4, our_op)
        results[name] = (r, o)

    await raw.put(b"/bench/warm", b"x")
    await ours.put("/bench/warm", "x")
    await both(
        "put",
        lambda i: raw.put(f"/bench/r/{i % 50}".encode(), b"v"),
        lambda i: ours.put(f"/bench/o/{i % 50}", "v"),
    )
    await both(
        "get",
        lambda i: raw.get(f"/bench/r/{i % 50}".encode()),
        lambda i: ours.get(f"/bench/o/{i % 50}"),
    )

    async def raw_cas(i: int) -> object:
        k = f"/bench/rc/{i}".encode()
        return await raw.transaction(
            compare=[raw.transactions.create(k) == 0],
            success=[raw.transactions.put(k, b"v")],
            failure=[],
        )

    await both("create_if_absent", raw_cas, lambda i: ours.create_if_absent(f"/bench/oc/{i}", "v"))

    # Watch delivery: one watcher per client, events timestamped on arrival.
    rq: asyncio.Queue[float] = asyncio.Queue()
    oq: asyncio.Queue[float] = asyncio.Queue()
    raw_watch = await raw.watch_prefix(b"/bench/wr/")

    async def raw_pump() -> None:
        async for _ in raw_watch:
            rq.put_nowait(time.perf_counter())

    async def our_pump() -> None:
        _, rev = await ours.get_prefix("/bench/wo/")
        async for ev in ours.watch_prefix("/bench/wo/", start_revision=rev + 1):
            if isinstance(ev, WatchEvent):
                oq.put_nowait(time.perf_counter())

    tasks = [asyncio.create_task(raw_pump()), asyncio.create_task(our_pump())]
    await asyncio.sleep(0.2)
    wr: list[float] = []
    wo: list[float] = []
    for _ in range(4):
        wr += await watch_latency(n // 8, lambda i: raw.put(f"/bench/wr/{i}".encode(), b"v"), rq)
        wo += await watch_latency(n // 8, lambda i: ours.put(f"/bench/wo/{i}", "v"), oq)
    results["watch delivery"] = (wr, wo)

    before = ours.request_count
    lease = await ours.lease(6)
    await asyncio.sleep(6.5)
    keepalives = ours.keepalives
    lease_rpcs = ours.request_count - before
    await lease.revoke()

    print(f"etcd wrapper vs raw aetcd 1.0, {n} ops each, one local etcd 3.4 (medians)")
    print(f"{'operation':<18} {'raw ms':>8} {'ours ms':>8} {'ratio':>6}")
    for name, (r, o) in results.items():
        print(f"{name:<18} {ms(r):8.3f} {ms(o):8.3f} {ms(o) / ms(r):6.2f}")
    print(f"wrapper RPCs sent: {ours.request_count} (counted by request_count)")
    print(
        f"one lease (TTL 6 s) over 6.5 s: {keepalives} keepalives on one stream, "
        f"{lease_rpcs} RPC(s)/stream(s) opened (grant + stream)"
    )
    for t in tasks:
        t.cancel()
    await raw.close()
    await ours.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    a = ap.parse_args()
    with etcd_server() as srv:
        asyncio.run(main(srv.endpoint, a.n))
