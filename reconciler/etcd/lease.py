"""Leases kept alive over one long-lived ``LeaseKeepAlive`` stream per client.

aetcd's ``Lease.refresh()`` opens a stream per refresh and fails every time through
``etcd grpc-proxy`` ("context canceled"), which is what workers talk to. Here one task owns
one stream and sends a keepalive for each lease every TTL/3, reading the answer before the
next (ping-pong keeps answers matched to requests and bounds every wait by the timeout).
When the stream breaks, the task reconnects (possibly to another endpoint) and carries on.

Two notions of "alive": ``Lease.alive`` is False as soon as the last confirmed TTL ran out
(we can no longer be sure we hold it: a lock holder must act as if it did not), but only
etcd's own answer makes a lease *lost* (``wait_lost()`` returns, keepalives stop): etcd
renews every lease when a new leader takes over, so a lease outliving a 1-3 s election or a
restart is common and its keys are still there. When etcd answers TTL 0 the owner grants a
new lease and re-puts its keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol

import grpc.aio  # type: ignore[import-untyped]
from aetcd import rpc

from reconciler import log
from reconciler.backoff import Backoff
from reconciler.errors import EtcdUnavailable
from reconciler.etcd.conn import RPC_ERRORS, Conn, Fault, classify, guard


class Client(Protocol):
    """What leases need of ``client.Etcd``: a protocol, so this module does not import it."""

    timeout: float
    request_count: int

    async def conn(self) -> Conn: ...
    async def drop(self, conn: Conn, *, rotate: bool) -> None: ...
    async def revoke_lease(self, lease: Lease) -> None: ...


_RETRIED: tuple[type[BaseException], ...] = (*RPC_ERRORS, EtcdUnavailable)


class Lease:
    """A granted lease. Kept alive by its client until ``revoke()`` or the client closes."""

    def __init__(self, etcd: Client, lease_id: int, ttl: int) -> None:
        self.id = lease_id
        self.ttl = ttl
        self._etcd = etcd
        now = time.monotonic()
        self.deadline = now + ttl  # when etcd forgets it unless a keepalive lands first
        self.next_due = now + ttl / 3
        self._lost = asyncio.Event()
        self.keepalive_ok = 0  # keepalives etcd answered with TTL > 0

    @property
    def lost(self) -> bool:
        """etcd said it expired, or it was revoked."""
        return self._lost.is_set()

    @property
    def alive(self) -> bool:
        return not self._lost.is_set() and time.monotonic() < self.deadline

    def mark_lost(self) -> None:
        self._lost.set()

    async def wait_lost(self) -> None:
        """Return once the lease expired or was revoked."""
        await self._lost.wait()

    async def revoke(self) -> None:
        """Revoke now: every key bound to it is deleted by etcd at once."""
        self.mark_lost()
        await self._etcd.revoke_lease(self)

    def __repr__(self) -> str:
        return f"Lease(id={self.id:#x}, ttl={self.ttl}, alive={self.alive})"


class LeaseKeeper:
    """The one keepalive task of an ``Etcd`` client."""

    def __init__(self, etcd: Client) -> None:
        self._etcd = etcd
        self._leases: dict[int, Lease] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self.keepalives = 0  # keepalive messages answered (benchmarks)

    def add(self, lease: Lease) -> None:
        self._leases[lease.id] = lease
        self._wake.set()
        if not self._stopped and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._run(), name="etcd-lease-keepalive")

    def remove(self, lease: Lease) -> None:
        self._leases.pop(lease.id, None)
        self._wake.set()

    async def stop(self) -> None:
        self._stopped = True  # the loop also checks it: a swallowed cancel cannot hang us
        task, self._task = self._task, None
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.get("etcd").error("etcd.keepalive.crashed", error=repr(task.exception()))

    async def _run(self) -> None:
        backoff = Backoff(base=0.05, cap=1.0)
        logger = log.get("etcd")
        while self._leases and not self._stopped:
            conn: Conn | None = None
            call = None
            try:
                conn = await guard(self._etcd.conn())
                call = conn.lease.LeaseKeepAlive(metadata=conn.metadata)
                self._etcd.request_count += 1
                while self._leases and not self._stopped:
                    await self._send_due(call)
                    failures = backoff.reset()
                    if failures:
                        logger.info("etcd.keepalive.recovered", retries=failures)
                    self._wake.clear()
                    if not self._leases:
                        break
                    pause = min(lease.next_due for lease in self._leases.values())
                    # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(max(0.0, pause - time.monotonic())):
                            await self._wake.wait()
            except _RETRIED as e:
                if conn is not None:
                    await self._etcd.drop(conn, rotate=classify(e) is not Fault.REAUTH)
                delay = backoff.next_delay()
                if backoff.first_failure:  # one line an outage; "recovered" ends it
                    logger.warning("etcd.keepalive.broken", error=str(e) or type(e).__name__)
                await asyncio.sleep(delay)
            finally:
                if call is not None:
                    call.cancel()

    async def _send_due(self, call: grpc.aio.StreamStreamCall) -> None:
        timeout = self._etcd.timeout
        now = time.monotonic()
        for lease in [x for x in self._leases.values() if x.next_due <= now]:
            sent = time.monotonic()
            async with asyncio.timeout(timeout):
                await guard(call.write(rpc.LeaseKeepAliveRequest(ID=lease.id)))
                resp = await guard(call.read())
            if resp is grpc.aio.EOF:
                raise ConnectionError("lease keepalive stream closed by the server")
            self.keepalives += 1
            answered = self._leases.get(resp.ID)
            if answered is None:
                continue
            if resp.TTL <= 0:  # etcd no longer knows it: expired while we were away (lost)
                answered.mark_lost()
                self._leases.pop(resp.ID, None)
            else:
                answered.deadline = sent + resp.TTL
                answered.keepalive_ok += 1
                answered.next_due = sent + max(resp.TTL / 3, 0.2)
