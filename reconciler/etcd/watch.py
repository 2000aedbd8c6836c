"""Prefix watches that survive disconnects, elections, restarts and compaction.

aetcd's watch raises ``ConnectionFailedError`` when etcd dies and never resumes, and hangs
on a paused server. This one speaks the ``Watch`` stream directly (aetcd's stubs) and:
- remembers the revision after the last delivered event and, after ANY failure, re-creates
  the watch from there on whatever endpoint answers: no event is lost or repeated;
- asks the member to require a leader, so a member cut off from the quorum cancels the
  stream rather than leaving it silently stale;
- bounds the wait for the ``created`` answer by the client timeout, and relies on the
  channel's keepalive pings (``conn.CHANNEL_OPTIONS``) to break a stream whose server
  stopped answering: a paused server costs ~9 s, never a hang;
- re-creates a stream that delivered nothing for ``Etcd.watch_refresh`` (default 5 min),
  in case it is alive but no longer fed;
- on ``compact_revision`` (the revision it needs is gone) re-reads the prefix and yields
  ``Resynced`` with the full state, then watches on from that read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

import grpc.aio  # type: ignore[import-untyped]
from aetcd import rpc
from aetcd.utils import prefix_range_end

from reconciler import log
from reconciler.backoff import Backoff
from reconciler.errors import EtcdUnavailable
from reconciler.etcd.conn import RPC_ERRORS, Conn, Fault, classify, guard


class Client(Protocol):
    """What watches need of ``client.Etcd``: a protocol, so this module does not import it."""

    timeout: float
    watch_refresh: float
    request_count: int
    watch_refreshes: int

    @property
    def closed(self) -> bool: ...
    async def conn(self) -> Conn: ...
    async def drop(self, conn: Conn, *, rotate: bool) -> None: ...
    async def get_prefix(self, prefix: str) -> tuple[list[KV], int]: ...


@dataclass(frozen=True, slots=True)
class KV:
    key: bytes
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int

    @classmethod
    def from_pb(cls, kv: rpc.KeyValue) -> KV:
        return cls(kv.key, kv.value, kv.mod_revision, kv.create_revision, kv.lease)


@dataclass(frozen=True, slots=True)
class WatchEvent:
    kind: Literal["put", "delete"]
    kv: KV  # for a delete: key, and the revision of the delete in mod_revision
    revision: int


@dataclass(frozen=True, slots=True)
class Resynced:
    """The watch lost history (compaction): the whole prefix as of ``revision``."""

    kvs: tuple[KV, ...]
    revision: int


def fold(state: dict[bytes, KV], item: WatchEvent | Resynced) -> dict[bytes, KV]:
    """A prefix's keys after one watch item: a put or delete changes one key, a resync
    replaces them all. ``state`` is changed in place and returned."""
    if isinstance(item, Resynced):
        state.clear()
        state.update((kv.key, kv) for kv in item.kvs)
    elif item.kind == "put":
        state[item.kv.key] = item.kv
    else:
        state.pop(item.kv.key, None)
    return state


class _Refresh(Exception):
    """The stream was idle for ``watch_refresh``: re-create it (no drop, no backoff)."""


class _StreamBroken(Exception):
    """The server ended or canceled our watch for a reason other than compaction."""


_RETRIED: tuple[type[BaseException], ...] = (*RPC_ERRORS, _StreamBroken, EtcdUnavailable)


async def watch_prefix(
    etcd: Client, prefix: str, start_revision: int | None
) -> AsyncIterator[WatchEvent | Resynced]:
    logger = log.get("etcd.watch").bind(prefix=prefix)
    key = prefix.encode()
    range_end = prefix_range_end(key)
    next_rev = start_revision  # None: "from now", fixed by the first created response
    backoff = Backoff(base=0.05, cap=1.0)
    while True:
        conn: Conn | None = None
        call = None
        try:
            conn = await guard(etcd.conn())
            call = conn.watch.Watch(metadata=conn.leader_metadata)
            etcd.request_count += 1
            create = rpc.WatchCreateRequest(
                key=key, range_end=range_end, start_revision=next_rev or 0
            )
            async with asyncio.timeout(etcd.timeout):  # not wait_for: it can swallow cancels
                await guard(call.write(rpc.WatchRequest(create_request=create)))
            first = True
            while True:
                if first:
                    async with asyncio.timeout(etcd.timeout):
                        resp = await guard(call.read())
                else:
                    # Pings catch a dead link; a stream that is alive but silently no longer
                    # fed (a proxy's or member's bug) is caught by re-creating it when idle
                    # for watch_refresh: lossless (from next_rev), one request per period.
                    try:
                        async with asyncio.timeout(etcd.watch_refresh):
                            resp = await guard(call.read())
                    except TimeoutError:
                        raise _Refresh from None
                if resp is grpc.aio.EOF:
                    raise _StreamBroken("watch stream closed by the server")
                if resp.compact_revision:
                    logger.info(
                        "etcd.watch.compacted", wanted=next_rev, compacted=resp.compact_revision
                    )
                    kvs, rev = await etcd.get_prefix(prefix)
                    next_rev = rev + 1
                    yield Resynced(tuple(kvs), rev)
                    break  # re-create the watch from the read's revision + 1
                if resp.created:
                    first = False
                    if next_rev is None:
                        next_rev = resp.header.revision + 1
                    failures = backoff.reset()
                    if failures:
                        logger.info(
                            "etcd.watch.resumed",
                            endpoint=conn.endpoint,
                            from_revision=next_rev,
                            retries=failures,
                        )
                if resp.canceled:
                    raise _StreamBroken(f"watch canceled: {resp.cancel_reason}")
                for ev in resp.events:
                    kv = KV.from_pb(ev.kv)
                    if ev.type == rpc.Event.DELETE:
                        yield WatchEvent("delete", kv, kv.mod_revision)
                    else:
                        yield WatchEvent("put", kv, kv.mod_revision)
                if resp.events:
                    # Only after the whole response: one revision (a txn) may span events.
                    next_rev = resp.events[-1].kv.mod_revision + 1
        except _Refresh:
            etcd.watch_refreshes += 1
            continue
        except _RETRIED as e:
            if etcd.closed:
                raise EtcdUnavailable("etcd client closed while watching") from e
            delay = backoff.next_delay()
            if backoff.first_failure:  # one line an outage; "resumed" ends it
                logger.warning(
                    "etcd.watch.broken", error=str(e) or type(e).__name__, resume_from=next_rev
                )
            if conn is not None and not isinstance(e, EtcdUnavailable):
                await etcd.drop(conn, rotate=classify(e) is not Fault.REAUTH)
            await asyncio.sleep(delay)
        finally:
            if call is not None:
                call.cancel()
