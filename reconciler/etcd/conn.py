"""One gRPC connection to one etcd endpoint, how its failures are classified, and the retry.

The low half of our etcd wrapper (``reconciler.etcd.client`` is the API): opens an insecure or TLS
channel with keepalive pings (aetcd opens only insecure channels, and without pings a watch
on a hung server never notices), authenticates when a user is given, and holds aetcd's
generated stubs. ``classify`` turns a gRPC error into what the caller should do about it,
and ``call_with_failover`` does it for every unary call: next endpoint, re-authentication
or give up, with bounded backoff.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import grpc  # type: ignore[import-untyped]
import grpc.aio  # type: ignore[import-untyped]
from aetcd import rpc

from reconciler.backoff import Backoff
from reconciler.errors import EtcdError, EtcdUnavailable, LeaseNotFound

T = TypeVar("T")

# Pings on an open stream every 6 s, dead after 3 s without an answer: a watch on a paused
# server fails in ~9 s (measured). etcd refuses pings more often than every 5 s
# (--grpc-keepalive-min-time) and pings without an open call, hence these exact values.
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_time_ms", 6000),
    ("grpc.keepalive_timeout_ms", 3000),
    ("grpc.http2.ping_timeout_ms", 3000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    # Fail fast on a dead endpoint so we rotate instead of waiting in grpc's backoff.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.min_reconnect_backoff_ms", 100),
)


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """Client TLS: CA bundle to verify the server, and an optional client certificate."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        def read(p: Path | None) -> bytes | None:
            return p.read_bytes() if p is not None else None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca),
            private_key=read(self.key),
            certificate_chain=read(self.cert),
        )


class Fault(enum.Enum):
    """What to do after a failed RPC."""

    RETRY = "retry"  # transport/leader trouble: drop the connection, next endpoint, back off
    REAUTH = "reauth"  # token expired: reconnect (re-authenticates) and retry once
    FATAL = "fatal"  # the request itself is wrong or forbidden: do not retry


_RETRY_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,  # our own channel close during rotation, proxy "context canceled"
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


class ChannelClosed(Exception):
    """Our call died because another task dropped (closed) the shared channel."""


async def guard(aw: Awaitable[T]) -> T:
    """Await an RPC, telling grpc's cancellation apart from our task's.

    Closing a channel (``Etcd.drop`` after a failure seen by ANY task) makes grpc.aio raise
    ``asyncio.CancelledError`` in every call still running on it, e.g. a watch that was
    fine. That is a transport failure for those callers, not a request to stop: it becomes
    ``ChannelClosed`` (retried). A real cancellation of the calling task still propagates.
    """
    try:
        return await aw
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise
        raise ChannelClosed("the channel was closed under this call") from None


# Everything an RPC on a Conn can raise that ``classify`` understands.
RPC_ERRORS: tuple[type[BaseException], ...] = (
    grpc.RpcError,
    grpc.aio.UsageError,
    TimeoutError,
    ConnectionError,
    asyncio.InvalidStateError,  # write() on a stream the transport already finished
    ChannelClosed,
)


def describe(e: BaseException | None) -> str:
    """A failure as one line for an error message: the gRPC status and its details."""
    if isinstance(e, grpc.aio.AioRpcError):
        return f"{e.code().name}: {e.details()}"
    return repr(e)


def classify(exc: BaseException) -> Fault:
    if isinstance(exc, grpc.aio.AioRpcError):
        code = exc.code()
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return Fault.REAUTH
        details = exc.details() or ""
        if code == grpc.StatusCode.FAILED_PRECONDITION and "token" in details:
            return Fault.REAUTH
        if "auth store is old" in details:  # roles changed since we authenticated
            return Fault.REAUTH
        if code in _RETRY_CODES:
            return Fault.RETRY
        return Fault.FATAL
    if isinstance(
        exc,
        grpc.aio.UsageError
        | TimeoutError
        | ConnectionError
        | asyncio.InvalidStateError
        | ChannelClosed,
    ):
        return Fault.RETRY  # channel already closed by a concurrent rotation, or a timeout
    return Fault.FATAL


def split_endpoint(endpoint: str) -> tuple[str, bool]:
    """``http://h:p`` / ``https://h:p`` / ``h:p`` -> (``h:p``, wants TLS)."""
    if endpoint.startswith("https://"):
        return endpoint[len("https://") :].rstrip("/"), True
    if endpoint.startswith("http://"):
        return endpoint[len("http://") :].rstrip("/"), False
    return endpoint.rstrip("/"), False


class Conn:
    """A channel to one endpoint plus the stubs and auth metadata to use on it."""

    def __init__(self, endpoint: str, tls: TLSConfig | None, generation: int) -> None:
        target, wants_tls = split_endpoint(endpoint)
        if tls is None and wants_tls:
            tls = TLSConfig()
        self.endpoint = endpoint
        self.generation = generation
        if tls is not None:
            self.channel = grpc.aio.secure_channel(target, tls.credentials(), CHANNEL_OPTIONS)
        else:
            self.channel = grpc.aio.insecure_channel(target, CHANNEL_OPTIONS)
        self.kv = rpc.KVStub(self.channel)
        self.lease = rpc.LeaseStub(self.channel)
        self.watch = rpc.WatchStub(self.channel)
        self.maintenance = rpc.MaintenanceStub(self.channel)
        self.auth = rpc.AuthStub(self.channel)
        self.metadata: tuple[tuple[str, str], ...] = ()

    @property
    def leader_metadata(self) -> tuple[tuple[str, str], ...]:
        # Like clientv3.WithRequireLeader: a member cut off from the quorum cancels our
        # stream instead of leaving it silently stale, so we move to another endpoint.
        return (*self.metadata, ("hasleader", "true"))

    async def open(
        self,
        user: str | None,
        password: str | None,
        timeout: float,  # noqa: ASYNC109
    ) -> None:
        """Authenticate (when a user is given) or just prove the endpoint answers."""
        if user is not None:
            resp = await self.auth.Authenticate(
                rpc.AuthenticateRequest(name=user, password=password or ""), timeout=timeout
            )
            self.metadata = (("token", resp.token),)
        else:
            await self.maintenance.Status(rpc.StatusRequest(), timeout=timeout)

    async def close(self) -> None:
        await self.channel.close()


class Client(Protocol):
    """What the retry needs of ``client.Etcd``: a protocol, so this module does not import it."""

    request_count: int

    @property
    def endpoints(self) -> tuple[str, ...]: ...
    @property
    def retry_for(self) -> float: ...
    @property
    def closed(self) -> bool: ...
    async def conn(self) -> Conn: ...
    async def drop(self, conn: Conn, *, rotate: bool) -> None: ...


async def call_with_failover(client: Client, fn: Callable[[Conn], Awaitable[T]], what: str) -> T:
    """Run one RPC with failover, re-auth and bounded backoff."""
    deadline = time.monotonic() + client.retry_for
    backoff = Backoff(base=0.05, cap=1.0)
    reauthed = False
    attempts = 0
    last: BaseException | None = None
    while True:
        conn: Conn | None = None
        attempts += 1
        try:
            conn = await guard(client.conn())
            client.request_count += 1
            return await guard(fn(conn))
        except RPC_ERRORS as e:
            last = e
            fault = classify(e)
            if fault is Fault.FATAL:
                if "lease not found" in describe(e):
                    raise LeaseNotFound(f"etcd {what}: {describe(e)}") from e
                raise EtcdError(f"etcd {what}: {describe(e)}") from e
            if fault is Fault.REAUTH:
                if reauthed:
                    raise EtcdError(f"etcd {what}: {describe(e)}") from e
                reauthed = True
                if conn is not None:
                    await client.drop(conn, rotate=False)
                continue
            if conn is not None:
                await client.drop(conn, rotate=True)
        if client.closed:
            raise EtcdUnavailable("etcd client is closed")
        # Every endpoint gets one try even if slow ones (paused: a full timeout each)
        # used up the window.
        delay = backoff.next_delay()
        if time.monotonic() + delay > deadline and attempts >= len(client.endpoints):
            raise EtcdUnavailable(
                f"etcd {what}: no endpoint of {','.join(client.endpoints)} answered "
                f"within {client.retry_for:.0f}s: {describe(last)}"
            ) from last
        await asyncio.sleep(delay)
