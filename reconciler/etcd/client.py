"""Our etcd client: a thin wrapper over aetcd's gRPC stubs that fills aetcd 1.0's gaps.

What it adds (see docs/etcd-keys.md for why each matters):
- several endpoints: a failed call drops the connection and moves to the next endpoint;
- TLS channels and keepalive pings (``reconciler.etcd.conn``);
- re-authentication when the auth token expires (one reconnect + retry);
- bounded retries with backoff for idempotent calls during leader elections; when nothing
  answers within the retry window, ``EtcdUnavailable`` (``conn.call_with_failover``);
- leases kept alive over ONE long-lived ``LeaseKeepAlive`` stream per client (aetcd's
  ``refresh()`` fails through ``etcd grpc-proxy``);
- prefix watches that resume from the last seen revision + 1 after any disconnect, and
  re-read the prefix (``Resynced``) when the revision they need was compacted.

Transactions whose outcome is unknown (the transport broke after sending) are retried and
then disambiguated by reading what the key holds, so ``create_if_absent`` never reports a
lost race for a write that was in fact ours (``reconciler.etcd.writes``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

from aetcd import rpc
from aetcd.utils import prefix_range_end

from reconciler import log
from reconciler.errors import EtcdError, EtcdUnavailable, LeaseNotFound
from reconciler.etcd import ops, writes
from reconciler.etcd.conn import Conn, TLSConfig, call_with_failover
from reconciler.etcd.lease import Lease, LeaseKeeper
from reconciler.etcd.watch import KV, Resynced, WatchEvent

__all__ = [
    "KV",
    "Etcd",
    "EtcdError",
    "Lease",
    "LeaseNotFound",
    "Resynced",
    "TLSConfig",
    "WatchEvent",
]

T = TypeVar("T")


class Etcd:
    """A client over one or more endpoints. Create with ``await Etcd.connect(...)``."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        tls: TLSConfig | None,
        user: str | None,
        password: str | None,
        timeout: float,
        retry_for: float,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is required")
        self.endpoints = tuple(endpoints)
        self.tls = tls
        self.user = user
        self.password = password
        self.timeout = timeout
        self.retry_for = retry_for
        self.request_count = 0  # unary RPCs + streams opened (benchmarks)
        self.reconnects = 0  # connections dropped after a failure
        self.watch_refresh = 300.0  # re-create a watch stream idle this long (seconds)
        self.watch_refreshes = 0
        self._index = 0
        self._generation = 0
        self._conn: Conn | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        self._keeper = LeaseKeeper(self)
        self._log = log.get("etcd")

    @classmethod
    async def connect(
        cls,
        endpoints: Sequence[str],
        *,
        tls: TLSConfig | None = None,
        user: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - per-RPC deadline, kept for the whole client
        retry_for: float | None = None,
    ) -> Etcd:
        """Connect to the first endpoint that answers; ``EtcdUnavailable`` if none does."""
        self = cls(
            endpoints,
            tls=tls,
            user=user,
            password=password,
            timeout=timeout,
            retry_for=retry_for if retry_for is not None else 2 * timeout,
        )
        await self._call(lambda c: asyncio.sleep(0), "connect")
        return self

    # -- connection management -------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def keepalives(self) -> int:
        """Lease keepalive messages answered so far (not in ``request_count``)."""
        return self._keeper.keepalives

    @property
    def endpoint(self) -> str:
        """The endpoint currently in use."""
        return self.endpoints[self._index]

    async def conn(self) -> Conn:
        """The live connection, opening one to the current endpoint if needed."""
        async with self._lock:
            if self._closed:
                raise EtcdUnavailable("etcd client is closed")
            if self._conn is None:
                conn = Conn(self.endpoints[self._index], self.tls, self._generation + 1)
                self._generation += 1
                try:
                    self.request_count += 1
                    await conn.open(self.user, self.password, self.timeout)
                except BaseException:
                    await conn.close()
                    self._index = (self._index + 1) % len(self.endpoints)
                    raise
                self._conn = conn
            return self._conn

    async def drop(self, conn: Conn, *, rotate: bool) -> None:
        """Forget a failed connection (once, however many tasks saw it fail)."""
        async with self._lock:
            if self._conn is not conn:
                return
            self._conn = None
            self.reconnects += 1
            if rotate:
                self._index = (self._index + 1) % len(self.endpoints)
        self._log.debug("etcd.drop", endpoint=conn.endpoint, rotate=rotate)
        await conn.close()

    async def _call(self, fn: Callable[[Conn], Awaitable[T]], what: str) -> T:
        """Run one RPC with failover, re-auth and bounded backoff (every unary call)."""
        return await call_with_failover(self, fn, what)

    # -- key/value -------------------------------------------------------------------

    async def get(self, key: str) -> KV | None:
        req = rpc.RangeRequest(key=ops.b(key))
        resp = await self._call(
            lambda c: c.kv.Range(req, timeout=self.timeout, metadata=c.metadata), "get"
        )
        return KV.from_pb(resp.kvs[0]) if resp.kvs else None

    async def get_prefix(
        self, prefix: str, *, keys_only: bool = False, serializable: bool = False
    ) -> tuple[list[KV], int]:
        """All keys under ``prefix`` (sorted by key) and the revision they were read at;
        with ``keys_only`` the values come back empty (listing big values costs nothing);
        ``serializable`` may answer from a member's (or a grpc-proxy's cached) state."""
        k = ops.b(prefix)
        req = rpc.RangeRequest(
            key=k, range_end=prefix_range_end(k), keys_only=keys_only, serializable=serializable
        )
        resp = await self._call(
            lambda c: c.kv.Range(req, timeout=self.timeout, metadata=c.metadata), "get_prefix"
        )
        return [KV.from_pb(kv) for kv in resp.kvs], resp.header.revision

    async def put(self, key: str, value: bytes | str, *, lease: Lease | None = None) -> int:
        """Set a key; returns the revision of the write."""
        req = rpc.PutRequest(key=ops.b(key), value=ops.b(value), lease=lease.id if lease else 0)
        resp = await self._leased(
            lease,
            self._call(lambda c: c.kv.Put(req, timeout=self.timeout, metadata=c.metadata), "put"),
        )
        return int(resp.header.revision)

    async def _leased(self, lease: Lease | None, aw: Awaitable[T]) -> T:
        try:
            return await aw
        except LeaseNotFound:
            if lease is not None:
                lease.mark_lost()
                self._keeper.remove(lease)
            raise

    async def delete(self, key: str) -> bool:
        req = rpc.DeleteRangeRequest(key=ops.b(key))
        resp = await self._call(
            lambda c: c.kv.DeleteRange(req, timeout=self.timeout, metadata=c.metadata), "delete"
        )
        return bool(resp.deleted)

    async def delete_prefix(self, prefix: str) -> int:
        k = ops.b(prefix)
        req = rpc.DeleteRangeRequest(key=k, range_end=prefix_range_end(k))
        resp = await self._call(
            lambda c: c.kv.DeleteRange(req, timeout=self.timeout, metadata=c.metadata),
            "delete_prefix",
        )
        return int(resp.deleted)

    async def snapshot(
        self, *, keys: Sequence[str] = (), prefixes: Sequence[str] = ()
    ) -> tuple[dict[bytes, KV], int]:
        """Several keys and prefixes read at one revision in one request (a compare-less
        transaction): what one ``get_prefix`` of a common parent would give, without
        shipping and decoding everything else under it."""
        req = ops.snapshot_request(keys, prefixes)
        resp = await self._call(
            lambda c: c.kv.Txn(req, timeout=self.timeout, metadata=c.metadata), "snapshot"
        )
        out = {kv.key: KV.from_pb(kv) for r in resp.responses for kv in r.response_range.kvs}
        return out, resp.header.revision

    async def txn(
        self,
        success: Sequence[rpc.RequestOp],
        compare: Sequence[rpc.Compare] = (),
        what: str = "txn",
    ) -> rpc.TxnResponse:
        """A transaction of idempotent operations (retried like any call)."""
        req = rpc.TxnRequest(compare=list(compare), success=list(success))
        return await self._call(
            lambda c: c.kv.Txn(req, timeout=self.timeout, metadata=c.metadata), what
        )

    async def counted_txn(
        self, req: rpc.TxnRequest, lease: Lease | None, what: str
    ) -> tuple[rpc.TxnResponse, int]:
        """Send a conditional write; its response and how many attempts it took (more
        than one: an earlier attempt may have committed before its answer was lost)."""
        attempts = 0

        async def send(c: Conn) -> rpc.TxnResponse:
            nonlocal attempts
            attempts += 1
            return await c.kv.Txn(req, timeout=self.timeout, metadata=c.metadata)

        resp = await self._leased(lease, self._call(send, what))
        return resp, attempts

    # -- conditional writes (``writes``: a retried one checks whether it was ours) ----

    async def create_if_absent(
        self,
        key: str,
        value: bytes | str,
        *,
        lease: Lease | None = None,
        also: Mapping[str, bytes | str] | None = None,
    ) -> bool:
        """Create ``key`` only if it does not exist; True if we created it. ``also``: more
        keys written (without a lease) in the same transaction, only if it was created."""
        return await writes.create_if_absent(self, key, value, lease, also)

    async def create_first_absent(
        self,
        candidates: Sequence[str],
        value: bytes | str,
        *,
        lease: Lease | None = None,
        also: Mapping[str, bytes | str] | None = None,
        guards: Sequence[rpc.Compare] = (),
    ) -> str | None:
        """Create the first of ``candidates`` that does not exist, in ONE request (nested
        transactions: try the first, else the second, ...); the key created, or None if all
        exist or a ``guards`` compare failed. ``also`` is written with it, as in
        ``create_if_absent``."""
        return await writes.create_first_absent(self, candidates, value, lease, also, guards)

    async def compare_and_put(
        self,
        key: str,
        value: bytes | str,
        *,
        mod_revision: int,
        lease: Lease | None = None,
        also: Mapping[str, bytes | str] | None = None,
    ) -> bool:
        """Write ``key`` only if it is still at ``mod_revision`` (0: does not exist); ``also``:
        more keys written (without a lease) in the same transaction, only if it was."""
        return await writes.compare_and_put(self, key, value, mod_revision, lease, also)

    async def put_and_release(
        self, key: str, value: bytes | str, *, release: str, holding: bytes
    ) -> bool:
        """Put ``key`` and, in the same transaction, delete ``release`` if it still holds
        exactly ``holding`` (a key someone else took since is left alone). True if deleted."""
        return await writes.put_and_release(self, key, value, release, holding)

    # -- maintenance -----------------------------------------------------------------

    async def compact(self, revision: int) -> None:
        """Compact history up to ``revision`` (tests and maintenance)."""
        req = rpc.CompactionRequest(revision=revision, physical=True)
        await self._call(
            lambda c: c.kv.Compact(req, timeout=self.timeout, metadata=c.metadata), "compact"
        )

    # -- leases ----------------------------------------------------------------------

    async def lease(self, ttl: int, *, keep_alive: bool = True) -> Lease:
        """Grant a lease and keep it alive (every TTL/3) until revoked or the client closes;
        with ``keep_alive=False`` it simply expires after ``ttl`` seconds."""
        req = rpc.LeaseGrantRequest(TTL=ttl, ID=0)
        resp = await self._call(
            lambda c: c.lease.LeaseGrant(req, timeout=self.timeout, metadata=c.metadata), "lease"
        )
        if resp.error:
            raise EtcdError(f"etcd lease: {resp.error}")
        lease = Lease(self, int(resp.ID), int(resp.TTL))
        if keep_alive:
            self._keeper.add(lease)
        return lease

    async def lease_time_to_live(self, lease_id: int) -> tuple[int, int] | None:
        """(seconds left, granted TTL) of any lease by id; None if it expired. The granted
        TTL minus the seconds left is how long ago its last keepalive landed."""
        req = rpc.LeaseTimeToLiveRequest(ID=lease_id, keys=False)
        resp = await self._call(
            lambda c: c.lease.LeaseTimeToLive(req, timeout=self.timeout, metadata=c.metadata),
            "lease_time_to_live",
        )
        if resp.TTL < 0:
            return None
        return int(resp.TTL), int(resp.grantedTTL)

    async def revoke_lease(self, lease: Lease) -> None:
        self._keeper.remove(lease)
        req = rpc.LeaseRevokeRequest(ID=lease.id)
        try:
            await self._call(
                lambda c: c.lease.LeaseRevoke(req, timeout=self.timeout, metadata=c.metadata),
                "revoke",
            )
        except EtcdError as e:
            if "not found" not in str(e):
                raise

    # -- watch -----------------------------------------------------------------------

    def watch_prefix(
        self, prefix: str, *, start_revision: int | None = None
    ) -> AsyncIterator[WatchEvent | Resynced]:
        """Every change under ``prefix`` from ``start_revision`` (default: from now), forever.

        Pass the revision of a ``get_prefix`` + 1 to see everything after that read. Any
        disconnect is resumed on some endpoint from the last seen revision + 1; if that
        revision was compacted the prefix is re-read and yielded as ``Resynced``.
        """
        from reconciler.etcd.watch import watch_prefix

        return watch_prefix(self, prefix, start_revision)

    async def close(self) -> None:
        await self._keeper.stop()
        async with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def __aenter__(self) -> Etcd:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
