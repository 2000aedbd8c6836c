"""reconciler.etcd.client when etcd misbehaves: restarts, compaction, a hung member, leader loss,
lease keepalive directly and through ``etcd grpc-proxy``. All against real etcd processes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from structlog.testing import capture_logs

from reconciler.etcd.client import Etcd, Resynced, WatchEvent
from tests.fixtures.etcd import EtcdCluster, EtcdServer, etcd_proxy


@contextlib.asynccontextmanager
async def collecting(
    e: Etcd, prefix: str, start_revision: int | None = None
) -> AsyncIterator[list[WatchEvent | Resynced]]:
    got: list[WatchEvent | Resynced] = []

    async def run() -> None:
        async for item in e.watch_prefix(prefix, start_revision=start_revision):
            got.append(item)

    task = asyncio.create_task(run(), name="collect")
    try:
        yield got
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_for(pred: object, limit: float, what: str) -> float:
    """Poll a condition (cheap, in-process) until true; returns the seconds it took."""
    assert callable(pred)
    t0 = time.monotonic()
    while not pred():
        assert time.monotonic() - t0 < limit, f"timed out after {limit}s waiting for {what}"
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


def values(got: list[WatchEvent | Resynced]) -> list[bytes]:
    return [g.kv.value for g in got if isinstance(g, WatchEvent) and g.kind == "put"]


async def test_watch_resumes_across_restart_without_losing_events(
    etcd_server: EtcdServer,
) -> None:
    n = 300
    watcher = await Etcd.connect([etcd_server.endpoint], timeout=2)
    writer = await Etcd.connect([etcd_server.endpoint], timeout=2, retry_for=30)
    try:
        _, rev = await watcher.get_prefix("/w/")
        async with collecting(watcher, "/w/", rev + 1) as got:

            async def publish() -> None:
                for i in range(n):
                    await writer.put(f"/w/{i % 7}", str(i))

            async def restart() -> None:
                await wait_for(lambda: len(got) >= 50, 10, "first events")
                await asyncio.to_thread(etcd_server.stop)
                await asyncio.sleep(0.3)  # down for a while: puts queue up in retries
                await asyncio.to_thread(etcd_server.start)

            await asyncio.gather(publish(), restart())
            await wait_for(lambda: str(n - 1).encode() in values(got), 20, f"{n} events")
            await asyncio.sleep(0.2)  # nothing extra (no duplicate) may arrive afterwards
        # A put whose answer was lost in the crash is retried: the writer may have written a
        # value twice (two revisions). The watch must show every value, in order, and never
        # the same revision twice.
        seen = values(got)
        collapsed = [v for i, v in enumerate(seen) if i == 0 or seen[i - 1] != v]
        assert collapsed == [str(i).encode() for i in range(n)]
        assert not any(isinstance(g, Resynced) for g in got)
        revs = [g.revision for g in got if isinstance(g, WatchEvent)]
        assert revs == sorted(set(revs))
        kvs, _ = await writer.get_prefix("/w/")
        assert {kv.value for kv in kvs} == {str(i).encode() for i in range(n - 7, n)}
        assert watcher.reconnects >= 1  # the watch really was broken and resumed
    finally:
        await watcher.close()
        await writer.close()


async def test_compaction_yields_resynced_with_full_prefix(etcd_server: EtcdServer) -> None:
    async with await Etcd.connect([etcd_server.endpoint]) as e:
        first = await e.put("/c/a", "1")
        await e.put("/c/b", "1")
        await e.delete("/c/a")
        last = await e.put("/c/b", "2")
        await e.put("/other", "x")
        await e.compact(last)
        async with collecting(e, "/c/", first) as got:
            await wait_for(lambda: len(got) >= 1, 10, "resync")
            assert isinstance(got[0], Resynced)
            assert [(kv.key, kv.value) for kv in got[0].kvs] == [(b"/c/b", b"2")]
            assert got[0].revision == last + 1
            # ...and it keeps watching from there.
            rev = await e.put("/c/z", "after")
            await wait_for(lambda: len(got) >= 2, 10, "event after resync")
            assert isinstance(got[1], WatchEvent)
            assert (got[1].kv.key, got[1].revision) == (b"/c/z", rev)


async def test_watch_on_paused_member_moves_on_within_bound(etcd_cluster: EtcdCluster) -> None:
    eps = etcd_cluster.endpoints
    watcher = await Etcd.connect(eps, timeout=2)  # talks to member 0 first
    writer = await Etcd.connect([eps[1], eps[2]], timeout=2, retry_for=20)
    try:
        assert watcher.endpoint == eps[0]
        _, rev = await watcher.get_prefix("/p/")
        async with collecting(watcher, "/p/", rev + 1) as got:
            await writer.put("/p/k", "before")
            await wait_for(lambda: len(got) == 1, 10, "event before pause")
            etcd_cluster.members[0].pause()
            try:
                await writer.put("/p/k", "during")
                took = await wait_for(lambda: len(got) == 2, 25, "event while member 0 hangs")
                assert values(got) == [b"before", b"during"]
                assert watcher.endpoint != eps[0]
            finally:
                etcd_cluster.members[0].resume()
        # keepalive pings every 6 s, 3 s to answer: ~9 s plus an election when 0 led.
        assert took < 20
    finally:
        await watcher.close()
        await writer.close()


async def test_watch_moves_to_another_member_when_its_member_dies(
    etcd_cluster: EtcdCluster,
) -> None:
    eps = etcd_cluster.endpoints
    watcher = await Etcd.connect(eps, timeout=2)
    writer = await Etcd.connect([eps[1], eps[2]], timeout=2, retry_for=20)
    try:
        assert watcher.endpoint == eps[0]
        _, rev = await watcher.get_prefix("/m/")
        async with collecting(watcher, "/m/", rev + 1) as got:

            async def publish() -> None:
                for i in range(200):
                    await writer.put(f"/m/{i % 5}", str(i))

            async def kill() -> None:
                await wait_for(lambda: len(got) >= 30, 10, "first events")
                await asyncio.to_thread(etcd_cluster.kill, 0)

            await asyncio.gather(publish(), kill())
            await wait_for(lambda: b"199" in values(got), 15, "all events")
        seen = values(got)
        assert [v for i, v in enumerate(seen) if i == 0 or seen[i - 1] != v] == [
            str(i).encode() for i in range(200)
        ]
        assert watcher.endpoint != eps[0]
    finally:
        await watcher.close()
        await writer.close()


async def test_leader_kill_writes_resume(etcd_cluster: EtcdCluster) -> None:
    async with await Etcd.connect(etcd_cluster.endpoints, timeout=2, retry_for=15) as e:
        leader = etcd_cluster.leader()
        count = 0
        stop = asyncio.Event()

        async def write() -> None:
            nonlocal count
            while not stop.is_set():
                await e.put("/l/counter", str(count))
                count += 1

        task = asyncio.create_task(write())
        await wait_for(lambda: count >= 20, 10, "writes before the kill")
        await asyncio.to_thread(etcd_cluster.kill, leader)
        at_kill = count
        took = await wait_for(lambda: count >= at_kill + 20, 15, "writes after the kill")
        stop.set()
        await task
        assert etcd_cluster.leader() != leader
        kv = await e.get("/l/counter")
        assert kv is not None and int(kv.value) == count - 1
        assert took < 10


async def _lease_survives(e: Etcd, check: Etcd, key: str) -> None:
    lease = await e.lease(3)
    assert lease.ttl >= 3
    await e.put(key, "alive", lease=lease)
    await asyncio.sleep(3 * lease.ttl + 0.5)  # the subject: outliving 3xTTL
    assert lease.alive
    kv = await check.get(key)
    assert kv is not None and kv.lease == lease.id
    await lease.revoke()
    assert not lease.alive
    assert await check.get(key) is None


async def test_lease_keepalive_direct_and_through_grpc_proxy(etcd_server: EtcdServer) -> None:
    with etcd_proxy([etcd_server.endpoint]) as proxy:
        direct = await Etcd.connect([etcd_server.endpoint])
        proxied = await Etcd.connect([proxy.endpoint])
        try:
            await asyncio.gather(
                _lease_survives(direct, direct, "/lease/direct"),
                _lease_survives(proxied, direct, "/lease/proxied"),
            )
            assert proxied.keepalives >= 6  # every TTL/3, over the proxy's stream
            # One stream carries all keepalives: streams opened stay tiny.
            assert proxied.request_count <= 8
        finally:
            await direct.close()
            await proxied.close()


async def test_lease_expires_when_client_stops_and_is_reported_lost(
    etcd_server: EtcdServer,
) -> None:
    async with await Etcd.connect([etcd_server.endpoint], timeout=1) as check:
        e = await Etcd.connect([etcd_server.endpoint], timeout=1)
        lease = await e.lease(2)
        await e.put("/lease/gone", "x", lease=lease)
        await e.close()  # keepalives stop; etcd forgets the lease after its TTL
        await wait_for(lambda: not lease.alive, 5, "local lease deadline")
        # Ask etcd rather than trust the clock: the key really goes away.
        deadline = time.monotonic() + 6
        while await check.get("/lease/gone") is not None:
            assert time.monotonic() < deadline, "leased key outlived its lease"
            await asyncio.sleep(0.1)


async def test_lease_outage_longer_than_ttl(etcd_server: EtcdServer) -> None:
    """Unreachable for longer than the TTL: ``alive`` turns False at once (unsure), and the
    lease is reported lost only when etcd, reachable again, says it expired."""
    with etcd_proxy([etcd_server.endpoint]) as proxy:
        e = await Etcd.connect([proxy.endpoint], timeout=1, retry_for=1)
        try:
            lease = await e.lease(2)
            await e.put("/lease/outage", "x", lease=lease)
            await asyncio.to_thread(proxy.stop)  # etcd is fine; we just cannot reach it
            await wait_for(lambda: not lease.alive, 4, "local deadline")
            async with await Etcd.connect([etcd_server.endpoint]) as direct:
                deadline = time.monotonic() + 6
                while await direct.get("/lease/outage") is not None:  # etcd expires it
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.1)
            await asyncio.to_thread(proxy.start)  # same port: the client reconnects itself
            await asyncio.wait_for(lease.wait_lost(), 10)
            fresh = await e.lease(2)  # the client itself is fine
            assert fresh.alive and fresh.id != lease.id
        finally:
            await e.close()


async def test_lease_survives_a_restart_shorter_than_its_ttl(etcd_server: EtcdServer) -> None:
    async with await Etcd.connect([etcd_server.endpoint], timeout=1, retry_for=10) as e:
        lease = await e.lease(5)
        await e.put("/lease/kept", "x", lease=lease)
        await asyncio.to_thread(etcd_server.stop)
        await asyncio.to_thread(etcd_server.start)
        kv = await e.get("/lease/kept")
        assert kv is not None and kv.lease == lease.id
        await wait_for(lambda: lease.keepalive_ok > 0 and lease.alive, 5, "a keepalive after")
        assert not lease.lost


async def test_through_grpc_proxy_leader_kill_loses_no_event_and_keeps_lease(
    etcd_cluster: EtcdCluster,
) -> None:
    """The worker setup: every call through ``etcd grpc-proxy`` in front of 3 members."""
    with etcd_proxy(etcd_cluster.endpoints) as proxy:
        e = await Etcd.connect([proxy.endpoint], timeout=2, retry_for=15)
        try:
            lease = await e.lease(3)
            await e.put("/g/alive", "x", lease=lease)
            _, rev = await e.get_prefix("/g/n/")
            async with collecting(e, "/g/n/", rev + 1) as got:
                for i in range(20):
                    await e.put(f"/g/n/{i}", str(i))
                await asyncio.to_thread(etcd_cluster.kill, etcd_cluster.leader())
                for i in range(20, 60):
                    await e.put(f"/g/n/{i}", str(i))
                await wait_for(lambda: b"59" in values(got), 15, "all events via the proxy")
            seen = values(got)
            assert [v for i, v in enumerate(seen) if i == 0 or seen[i - 1] != v] == [
                str(i).encode() for i in range(60)
            ]
            await wait_for(lambda: lease.alive, 5, "keepalives after the election")
            kv = await e.get("/g/alive")
            assert kv is not None and kv.lease == lease.id
        finally:
            await e.close()


async def test_dropping_the_shared_channel_does_not_end_a_watch(etcd_server: EtcdServer) -> None:
    """A unary failure in one task closes the client's channel; grpc then cancels every call
    on it, a watch included. That must be a resume for the watch, not its end."""
    e = await Etcd.connect([etcd_server.endpoint])
    try:
        async with collecting(e, "/d/", (await e.get_prefix("/d/"))[1] + 1) as got:
            await e.put("/d/a", "1")
            await wait_for(lambda: len(got) == 1, 5, "first event")
            await e.drop(await e.conn(), rotate=False)
            await e.put("/d/a", "2")
            await wait_for(lambda: len(got) == 2, 5, "event after the drop")
            assert values(got) == [b"1", b"2"]
    finally:
        await e.close()


async def test_idle_watch_is_refreshed_without_loss(etcd_server: EtcdServer) -> None:
    """A stream idle for watch_refresh is re-created from the last revision + 1: events
    written in between bursts (while no stream may be open) all arrive, once, in order."""
    async with await Etcd.connect([etcd_server.endpoint]) as e:
        e.watch_refresh = 0.3
        _, rev = await e.get_prefix("/r/")
        async with collecting(e, "/r/", rev + 1) as got:
            for burst in range(4):
                for i in range(25):
                    await e.put(f"/r/{i % 3}", f"{burst}-{i}")
                await asyncio.sleep(0.8)  # idle: the stream is re-created at least twice
            await wait_for(lambda: len(got) >= 100, 10, "all events")
            await asyncio.sleep(0.7)
        assert values(got) == [f"{b}-{i}".encode() for b in range(4) for i in range(25)]
        assert e.watch_refreshes >= 4
        assert e.reconnects == 0  # a refresh is not a failure: the connection stays


async def test_an_outage_logs_one_warning_and_one_recovery(etcd_server: EtcdServer) -> None:
    """Watch and lease retry with backoff while etcd is down, but each says so once."""
    with capture_logs() as logs:
        async with await Etcd.connect([etcd_server.endpoint], timeout=1, retry_for=15) as e:
            lease = await e.lease(6)
            _, rev = await e.get_prefix("/outage/")
            async with collecting(e, "/outage/", rev + 1) as got:
                await e.put("/outage/a", "1")
                await wait_for(lambda: len(values(got)) == 1, 5, "the first event")
                await asyncio.to_thread(etcd_server.stop)
                await asyncio.sleep(2.5)  # dozens of retries at the 0.05 s base
                await asyncio.to_thread(etcd_server.start)
                await e.put("/outage/b", "2")
                await wait_for(lambda: values(got) == [b"1", b"2"], 10, "the event after")
                await wait_for(
                    lambda: any(x["event"] == "etcd.keepalive.recovered" for x in logs),
                    10,
                    "the keepalive to recover",
                )
                assert lease.alive
    events = [x["event"] for x in logs]
    assert events.count("etcd.watch.broken") == 1, events
    assert events.count("etcd.watch.resumed") == 1, events
    assert events.count("etcd.keepalive.broken") == 1, events
    assert events.count("etcd.keepalive.recovered") == 1, events
    resumed = next(x for x in logs if x["event"] == "etcd.watch.resumed")
    assert resumed["retries"] > 1  # it retried several times but warned once
