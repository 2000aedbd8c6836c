"""D-Bus plumbing for the systemd actuator: where to connect, how, and turning failures into errors.

Three quirks live here so ``systemd.py`` can speak plain method calls:

* address resolution for the ``system`` and ``user`` scopes (pure but for ``stat``, tested as
  such). As root, the system scope prefers systemd's private socket the way ``systemctl``
  does: it needs no bus daemon, so a hung or not yet started ``dbus-daemon`` (early boot, a
  dbus restart; always on the nspawn nodes of the tests) does not hang every call for 25 s;
* systemd 252's private socket stalls when the first D-Bus message arrives in the same read as
  the SASL ``BEGIN`` line, and dbus-fast sends them back to back. ``SystemdBus`` waits until the
  kernel says the peer has consumed everything we sent (``TIOCOUTQ`` == 0) before the first
  message, which cures the hang;
* on the private socket there is no bus daemon: ``Hello()`` gets an error reply and signals come
  without ``AddMatch``; on a real bus, ``AddMatch`` is needed for every signal we want.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import stat
import struct
import termios
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from reconciler.errors import SystemdError

SYSTEM_BUS_SOCKET = "/run/dbus/system_bus_socket"
SYSTEM_PRIVATE_SOCKET = "/run/systemd/private"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")

# Bounds on the post-auth wait: the peer normally drains the BEGIN line within a millisecond.
_DRAIN_POLL = 0.0005
_DRAIN_TIMEOUT = 5.0
CONNECT_TIMEOUT = 10.0


class Scope(StrEnum):
    SYSTEM = "system"
    USER = "user"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where one scope's manager is reached, and where its unit files live."""

    address: str
    peer_to_peer: bool  # the manager's private socket: no bus daemon in between
    unit_dir: Path


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(path.stat().st_mode)
    except OSError:
        return False


def _socket_path(address: str) -> str:
    for part in address.split(";", 1)[0].split(":", 1)[-1].split(","):
        key, _, value = part.partition("=")
        if key == "path":
            return value
    return ""


def candidate_endpoints(
    scope: Scope,
    *,
    address: str | None = None,
    unit_dir: Path | None = None,
    runtime_dir: str | None = None,
    home: str | None = None,
    environ: Mapping[str, str] | None = None,
    uid: int | None = None,
    private_socket: str = SYSTEM_PRIVATE_SOCKET,
) -> tuple[Endpoint, ...]:
    """The D-Bus addresses to try for ``scope``, in order, and its unit directory.

    An explicit ``address`` is the only candidate. The system scope, for root (``uid``, the
    effective uid by default), tries systemd's private socket first when it is a socket,
    then the system bus; for anybody else only the bus (the private socket is root's).
    For the user scope, ``$XDG_RUNTIME_DIR/bus`` (a dbus-daemon) is used when it is a socket,
    else the manager's private socket. An explicit ``home`` also decides the unit dir: the
    caller's ``XDG_CONFIG_HOME`` belongs to another home and is ignored then.
    """
    env = os.environ if environ is None else environ
    if scope is Scope.SYSTEM:
        unit_dir = unit_dir or SYSTEM_UNIT_DIR
        if address is not None:
            return (_endpoint(address, unit_dir),)
        bus = _endpoint(f"unix:path={SYSTEM_BUS_SOCKET}", unit_dir)
        euid = os.geteuid() if uid is None else uid
        if euid == 0 and _is_socket(Path(private_socket)):
            return (Endpoint(f"unix:path={private_socket}", True, unit_dir), bus)
        return (bus,)
    if unit_dir is None:
        if home is not None:
            unit_dir = Path(home) / ".config/systemd/user"
        elif env.get("XDG_CONFIG_HOME"):
            unit_dir = Path(env["XDG_CONFIG_HOME"]) / "systemd/user"
        elif env.get("HOME"):
            unit_dir = Path(env["HOME"]) / ".config/systemd/user"
        else:
            raise SystemdError("user scope: cannot find the unit dir (no HOME, no XDG_CONFIG_HOME)")
    if address is None:
        rt = (
            runtime_dir
            or env.get("XDG_RUNTIME_DIR")
            or f"/run/user/{os.getuid() if uid is None else uid}"
        )
        bus_path = Path(rt) / "bus"
        address = (
            f"unix:path={bus_path}" if _is_socket(bus_path) else f"unix:path={rt}/systemd/private"
        )
    return (_endpoint(address, unit_dir),)


def _endpoint(address: str, unit_dir: Path) -> Endpoint:
    return Endpoint(address, _socket_path(address).endswith("/systemd/private"), unit_dir)


def _send_queue_len(fd: int) -> int:
    buf = fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0")
    return int(struct.unpack("i", buf)[0])


class _SendSocket:
    """The socket as dbus-fast's writer sees it: a full send buffer means "try again later".

    dbus-fast 5.2 treats ``EAGAIN`` from ``send`` as a fatal error and drops the connection
    (seen with ~300 pipelined property reads). Reporting 0 bytes sent makes its writer wait
    for the socket to become writable instead. We never pass file descriptors, so
    ``sendmsg`` is only wrapped for completeness.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def send(self, data: Any) -> int:
        try:
            return self._sock.send(data)
        except BlockingIOError:
            return 0

    def sendmsg(self, buffers: Any, ancdata: Any) -> int:
        try:
            return self._sock.sendmsg(buffers, ancdata)
        except BlockingIOError:
            return 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _consume(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()


class SystemdBus(MessageBus):
    """dbus-fast's MessageBus with three fixes: the private-socket stall, ``EAGAIN`` on send,
    and send futures nobody reads.

    For a unix socket, ``TIOCOUTQ`` counts bytes the receiver has not read yet, so 0 means the
    server consumed the whole auth exchange and will see ``Hello`` in a read of its own.
    """

    def send(self, msg: Message) -> asyncio.Future[None]:  # type: ignore[override]
        # MessageBus.call() drops the future send() returns; when the connection breaks it
        # holds an exception nobody retrieves, and asyncio logs it from a finalizer during
        # garbage collection. On CPython 3.11.7 that logging (traceback -> ast.parse) inside
        # another ast.parse crashed pytest with "AST constructor recursion depth mismatch".
        fut: asyncio.Future[None] = super().send(msg)
        fut.add_done_callback(_consume)
        return fut

    async def _authenticate(self) -> None:
        writer = self._writer
        if writer is not None and self._sock is not None:
            writer.sock = _SendSocket(self._sock)  # type: ignore[assignment]
        await super()._authenticate()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _DRAIN_TIMEOUT
        sock = self._sock
        assert sock is not None  # set by connect() before it authenticates
        while _send_queue_len(sock.fileno()) > 0:
            if loop.time() > deadline:
                raise SystemdError("D-Bus peer did not read the end of authentication")
            await asyncio.sleep(_DRAIN_POLL)


async def open_bus(endpoint: Endpoint, timeout: float = CONNECT_TIMEOUT) -> MessageBus:  # noqa: ASYNC109
    """Connect and authenticate; raise SystemdError (never a raw dbus/OS error)."""
    if not hasattr(MessageBus, "_authenticate"):  # a dbus-fast upgrade moved the hook
        raise SystemdError("dbus-fast has no MessageBus._authenticate hook; pin dbus-fast<6")
    bus = SystemdBus(bus_address=endpoint.address)
    try:
        async with asyncio.timeout(timeout):
            await bus.connect()
    except SystemdError:
        raise
    except TimeoutError:
        # connect() closed the socket itself when the timeout cancelled it
        raise SystemdError(
            f"connecting to {endpoint.address} timed out after {timeout:g}s"
        ) from None
    except Exception as e:  # dbus-fast raises OSError, AuthError, DBusError, ...
        raise SystemdError(f"cannot connect to {endpoint.address}: {e}") from None
    return bus


class CallFailed(SystemdError):
    """A method call got a D-Bus error reply (``name`` is the D-Bus error name)."""

    def __init__(self, member: str, name: str, text: str) -> None:
        self.member = member
        self.name = name
        self.text = text
        super().__init__(f"{member}: {text} ({name})")


async def call(
    bus: MessageBus,
    *,
    path: str,
    interface: str,
    member: str,
    signature: str = "",
    body: list[Any] | None = None,
    destination: str = "org.freedesktop.systemd1",
) -> list[Any]:
    """One method call; error replies raise CallFailed, a lost connection SystemdError."""
    if not bus.connected:
        raise SystemdError(f"{member}: D-Bus connection closed")
    msg = Message(
        destination=destination,
        path=path,
        interface=interface,
        member=member,
        signature=signature,
        body=body or [],
    )
    try:
        reply = await bus.call(msg)
    except Exception as e:  # EOFError/OSError/... when the connection went away
        raise SystemdError(f"{member}: D-Bus connection lost ({type(e).__name__}: {e})") from None
    if reply is None:
        raise SystemdError(f"{member}: no reply")
    if reply.message_type is MessageType.ERROR:
        text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
        raise CallFailed(member, reply.error_name or "", text)
    return list(reply.body)


async def add_match(bus: MessageBus, rule: str) -> None:
    await call(
        bus,
        destination="org.freedesktop.DBus",
        path="/org/freedesktop/DBus",
        interface="org.freedesktop.DBus",
        member="AddMatch",
        signature="s",
        body=[rule],
    )
